"""model.max_norm end to end on real data: every stored entity row stays within the bound
(fresh rows, rows of model.init_from, trained rows, foreign rows' late updates), and
the bound is reached, so that a run ignoring the option fails these tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bigkg.checkpoint import CheckpointStore
from bigkg.config import config_from_dict
from bigkg.edge_chunks import WHOLE_BUCKET
from bigkg.schedule import Bucket
from bigkg.training import train
from bigkg.training.trainer import Trainer
from test_train import small_config

MAX_NORM = 0.5
BELOW = MAX_NORM * (1 + 1e-6)  # float32 rounding of a row scaled to the bound
AT = MAX_NORM * (1 - 1e-5)


def stored_norms(run_dir: Path, num_partitions: int = 2) -> torch.Tensor:
    """The L2 norm of every entity row of the run's latest checkpoint."""
    version = CheckpointStore(run_dir).latest()
    return torch.cat([version.load_partition("entity", p)[0].norm(dim=1) for p in range(num_partitions)])


@pytest.mark.parametrize("sections", [
    {"model": {"operator": "none"}},  # the closed-form softmax step
    {"training": {"foreign_negatives": 64, "anchor_negatives": True}},  # autograd, foreign rows updated late
    {"model": {"operator": "none", "comparator": "cos"}, "training": {"workers": 2}},  # Hogwild processes
    {"model": {"operator": "none", "encoder": {"name": "compgcn", "layers": 1}}},  # the bound is on the encoder's input
], ids=["closed_form", "foreign", "hogwild", "encoder"])
def test_trained_rows_stay_within_max_norm_and_reach_it(codex2, tmp_path, sections):
    """Unbounded, this training leaves nearly every row longer than 0.5 (median ~1.5)."""
    model = {**sections.get("model", {}), "max_norm": MAX_NORM}
    train(config_from_dict(small_config(codex2, tmp_path / "run", **{**sections, "model": model})))
    norms = stored_norms(tmp_path / "run")
    assert norms.max() <= BELOW
    assert (norms >= AT).float().mean() > 0.1, norms.quantile(torch.tensor([0.1, 0.5, 0.9]))


def test_fresh_and_init_from_rows_start_within_max_norm(codex2, tmp_path):
    """Rows of a large init_scale and rows taken from an unbounded earlier run are scaled
    down before the first checkpoint; rows already within the bound keep their values."""
    train(config_from_dict(small_config(codex2, tmp_path / "big", model={"init_scale": 1.0}, training={"epochs": 0})))
    assert stored_norms(tmp_path / "big").min() > MAX_NORM  # dim 16: norms about 4
    bounded = small_config(codex2, tmp_path / "fresh", model={"init_scale": 1.0, "max_norm": MAX_NORM}, training={"epochs": 0})
    train(config_from_dict(bounded))
    norms = stored_norms(tmp_path / "fresh")
    assert norms.max() <= BELOW and norms.min() >= AT

    small = small_config(codex2, tmp_path / "small", training={"epochs": 0})  # init_scale 0.001: far within
    train(config_from_dict(small))
    within = small_config(codex2, tmp_path / "within", model={"max_norm": MAX_NORM}, training={"epochs": 0})
    train(config_from_dict(within))
    assert torch.equal(stored_norms(tmp_path / "within"), stored_norms(tmp_path / "small"))

    pretrained = small_config(codex2, tmp_path / "init", model={"init_from": str(tmp_path / "big"), "max_norm": MAX_NORM},
                              training={"epochs": 0})
    train(config_from_dict(pretrained))
    norms = stored_norms(tmp_path / "init")
    assert norms.max() <= BELOW and norms.min() >= AT  # every entity of the source: all at the bound


def test_foreign_rows_late_gradients_keep_max_norm(codex2, tmp_path):
    """Gradients of foreign rows, applied when their partition is loaded, go through the
    same bounded update: pushed outward, the rows stop at the bound."""
    config = config_from_dict(small_config(codex2, tmp_path / "run", model={"max_norm": MAX_NORM},
                                           training={"epochs": 1, "foreign_negatives": 64}))
    train(config)
    with Trainer(config) as trainer:  # resumes the finished run
        trainer._load(Bucket(0, 0), WHOLE_BUCKET)
        sample = trainer.foreign[("entity", 0)]
        sample.grad.copy_(-1e4 * sample.rows)  # descent lengthens every drawn row
        trainer.deferred.add(sample)
        trainer._load(Bucket(1, 1), WHOLE_BUCKET)
        moved = trainer.held[("entity", 1)].embeddings[sample.origin[1]].norm(dim=1)
    assert moved.max() <= BELOW and (moved >= AT).all()


def test_a_run_resumes_under_a_new_max_norm(codex2, tmp_path):
    """max_norm is not structural: a run trained without it resumes with it, and the rows
    the next epoch updates are scaled into the bound."""
    run = tmp_path / "run"
    train(config_from_dict(small_config(codex2, run, training={"epochs": 1})))
    assert (stored_norms(run) > MAX_NORM).float().mean() > 0.9
    summary = train(config_from_dict(small_config(codex2, run, model={"max_norm": MAX_NORM}, training={"epochs": 2})))
    assert summary["epochs_completed"] == 2 and summary["edges_trained_this_run"] > 0
    norms = stored_norms(run)
    assert norms.max() <= BELOW and (norms >= AT).float().mean() > 0.5  # here an epoch updates every row
