"""Entity vectors of a trained run, read partition by partition from a checkpoint."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from bigkg.checkpoint import CheckpointError, CheckpointStore, CheckpointVersion
from bigkg.config import Config
from bigkg.errors import BigKGError
from bigkg.evaluation.filters import entity_offsets
from bigkg.format import Manifest, load_manifest
from bigkg.model import EncoderContext, KGModel, build_model
from bigkg.device import build_device


class CheckpointSource:
    """Representations (the model's encoder applied to the stored embeddings) per partition.

    Keeps the ``cache_partitions`` most recently used partitions in memory, so
    a gather followed by a ranking pass does not read a file twice in a row.
    Partitions are encoded, and kept, on ``device``: the model's, where a graph
    encoder's layers are.
    """

    def __init__(self, version: CheckpointVersion, manifest: Manifest, model: KGModel, *, cache_partitions: int = 2,
                 device: str | torch.device = "cpu"):
        self.version = version
        self.manifest = manifest
        self.model = model
        self.device = torch.device(device)
        self.offsets = entity_offsets(manifest)
        self.cache_partitions = max(cache_partitions, 1)
        self._cache: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()

    def partition_offsets(self, entity_type: str) -> np.ndarray:
        return self.offsets[entity_type]

    def load(self, entity_type: str, part: int) -> torch.Tensor:
        key = (entity_type, part)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        embeddings, _ = self.version.load_partition(entity_type, part)
        expected = self.manifest.entity_type(entity_type).partition_counts[part]
        if embeddings.shape[0] != expected:
            raise CheckpointError(
                f"{self.version.partition_path(entity_type, part)} has {embeddings.shape[0]} rows; "
                f"the dataset's partition has {expected} entities"
            )
        embeddings = embeddings.to(self.device)  # read on the CPU; a CUDA model's encoder cannot take it there
        rows = torch.arange(embeddings.shape[0], device=self.device)
        context = EncoderContext(entity_type, part, rows, embeddings)
        with torch.no_grad():
            vectors = self.model.encode(embeddings, context)
        self._cache[key] = vectors
        while len(self._cache) > self.cache_partitions:
            self._cache.popitem(last=False)
        return vectors

    def dimension(self, entity_type: str) -> int:
        counts = self.manifest.entity_type(entity_type).partition_counts
        part = next((p for p, c in enumerate(counts) if c), None)
        return int(self.model.dim) if part is None else int(self.load(entity_type, part).shape[1])


class EvaluationError(BigKGError):
    """Nothing to evaluate: no checkpoint yet, or a query that names nothing known."""


@dataclass
class TrainedRun:
    """The latest checkpoint of a run, with its model and entity vectors."""

    config: Config
    manifest: Manifest
    version: CheckpointVersion
    model: KGModel
    source: CheckpointSource
    device: str


def open_run(config: Config, store: CheckpointStore | None = None) -> TrainedRun:
    """Load the dataset manifest, the latest checkpoint and the model's shared parameters."""
    manifest = load_manifest(config.dataset)
    store = store if store is not None else CheckpointStore(config.run_dir)
    version = store.latest()
    if version is None:
        raise EvaluationError(f"{store.root} holds no complete checkpoint: train first (bigkg train)")
    difference = config.model.first_difference(version.meta["model"])
    if difference is not None:
        key, saved, own = difference
        raise EvaluationError(f"the checkpoint {version.path} was trained with model.{key}={saved!r} but the config "
                              f"says {own!r}; use the run's own config ({config.run_dir}/config.yaml) or set the option")
    device = str(build_device(config))
    model = build_model(config, manifest)
    version.load_shared(model)
    model.eval().to(device)
    return TrainedRun(config, manifest, version, model, CheckpointSource(version, manifest, model, device=device), device)
