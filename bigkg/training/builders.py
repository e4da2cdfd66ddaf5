"""The ``build_*`` functions that make a trainer's swappable parts from its config: the loss,
per-relation weights and sides, the bucket scheduler, the validator, the random generators."""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import torch

from bigkg.checkpoint import CheckpointStore
from bigkg.config import Config, ConfigError
from bigkg.evaluation import evaluate
from bigkg.format import DatasetError, Manifest
from bigkg.losses import LOSSES, self_adversarial_loss
from bigkg.schedule import BucketScheduler, LocalScheduler
from bigkg.training.step import LossFn

Validator = Callable[[CheckpointStore], dict[str, Any]]


def build_loss(config: Config) -> LossFn:
    loss = LOSSES[config.training.loss]
    if loss is self_adversarial_loss:
        return functools.partial(loss, temperature=config.training.adversarial_temperature)
    return loss


def _per_relation(config: Config, manifest: Manifest, key: str, named: dict[str, Any], default: Any) -> list[Any]:
    """One value per relation id: ``named``'s (option ``key``, relation name -> value), else ``default``."""
    values = [default] * len(manifest.relations)
    for name, value in named.items():
        try:
            values[manifest.relation_index(name)] = value
        except DatasetError as exc:
            raise ConfigError(f"{key}: {exc} in dataset {config.dataset}") from exc
    return values


def build_relation_weights(config: Config, manifest: Manifest) -> np.ndarray | None:
    """``training.relation_weights`` per relation id (float32, 1 where not named); None when none is set."""
    named = config.training.relation_weights
    if not named:
        return None
    return np.array(_per_relation(config, manifest, "training.relation_weights", named, 1.0), dtype=np.float32)


# The (tail-prediction, head-prediction) loss weights of each ``training.negative_sides`` value.
_SIDE_WEIGHTS = {"both": (1.0, 1.0), "tails": (1.0, 0.0), "heads": (0.0, 1.0)}


def build_side_weights(config: Config, manifest: Manifest, device: torch.device) -> torch.Tensor | None:
    """[relations, 2]: per relation id, the weights of its tail- and head-prediction losses
    (``training.negative_sides``, ``training.relation_negative_sides``); None when every
    relation corrupts both sides."""
    t = config.training
    sides = _per_relation(config, manifest, "training.relation_negative_sides", t.relation_negative_sides, t.negative_sides)
    if all(side == "both" for side in sides):
        return None
    return torch.tensor([_SIDE_WEIGHTS[side] for side in sides], device=device)


def build_all_rows_relations(config: Config, manifest: Manifest, device: torch.device) -> torch.Tensor | None:
    """[relations] bool: per relation id, whether its edges are scored against every row of
    the partition (``training.relation_negatives``, else ``training.negatives``); None when
    every relation takes ``training.negatives``."""
    t = config.training
    modes = _per_relation(config, manifest, "training.relation_negatives", t.relation_negatives, t.negatives)
    if all(mode == t.negatives for mode in modes):
        return None
    return torch.tensor([mode == "all" for mode in modes], device=device)


def build_scheduler(config: Config, manifest: Manifest) -> BucketScheduler:
    return LocalScheduler(manifest.num_partitions, config.training.bucket_order, config.seed)


def build_validator(config: Config, manifest: Manifest, **split_over_workers: Any) -> Validator | None:
    """Valid-split evaluation at epoch end, when asked for and the dataset has a valid split;
    ``split_over_workers``: ``evaluate``'s ``shard`` and ``sum_over_workers``."""
    if config.eval.valid_every == 0 or manifest.split_count("valid") == 0:
        return None
    return lambda store: evaluate(config, split="valid", store=store, **split_over_workers)


def build_generator(config: Config, device: torch.device, offset: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(config.seed * 7919 + offset)
