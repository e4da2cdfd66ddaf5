"""The training step and loop on CUDA (skipped without a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bigkg.checkpoint import CheckpointStore, PartitionState
from bigkg.config import config_from_dict
from bigkg.format import EntityType, Manifest, Relation
from bigkg.losses import LOSSES
from bigkg.model import build_model
from bigkg.optim import RowAdagrad, build_shared_optimizer
from bigkg.training import train
from bigkg.training.step import Batch, BatchStep
from partition_helpers import partition

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CODEX = Path(__file__).resolve().parents[1] / "data" / "codex-s"


@pytest.mark.parametrize("n", [40, 8], ids=["sorted row update", "whole-table row update"])
@pytest.mark.parametrize("closed_form", [True, False])
def test_cuda_step_equals_cpu_step(closed_form, n):
    """One step on CUDA updates what it updates on the CPU, by autograd and in closed form,
    with the row update over the ids (more rows than the batch names) and over the whole
    table (fewer: the batch's 24 ids, 8 rows)."""
    d = 8
    config = config_from_dict({"model": {"dim": d, "operator": "rotate"},
                               "training": {"chunk_size": 5, "num_uniform_negatives": 0, "closed_form_softmax": closed_form}})
    manifest = Manifest(1, [EntityType("e", [n])], [Relation("r", "e", "e"), Relation("s", "e", "e")], {})
    g = torch.Generator().manual_seed(0)
    table, state = torch.randn(n, d, generator=g), torch.rand(n, generator=g)
    batch = Batch(torch.randint(0, n, (12,), generator=g), torch.randint(0, n, (12,), generator=g),
                  torch.randint(0, 2, (12,), generator=g), None)
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(1)
        model = build_model(config, manifest).to(device)
        part = PartitionState(table.clone().to(device), state.clone().to(device))  # each device from the same rows
        step = BatchStep(model, LOSSES["softmax"], config.training, RowAdagrad(0.1),
                         build_shared_optimizer(model, config.training), torch.Generator(device=device))
        assert step.closed_form == closed_form
        on_device = Batch(batch.lhs.to(device), batch.rhs.to(device), batch.rel.to(device), None)
        loss = step(on_device, (("e", 0), part), (("e", 0), part))
        results.append((loss.cpu(), part.embeddings.cpu(), part.adagrad.cpu()))
    for cpu_value, cuda_value in zip(*results):
        torch.testing.assert_close(cuda_value, cpu_value, atol=1e-5, rtol=1e-4)


def test_training_on_cuda_learns_and_checkpoints(tmp_path):
    data = tmp_path / "codex"
    partition([CODEX / "train.txt"], data, num_partitions=2)
    config = config_from_dict({
        "dataset": str(data), "run_dir": str(tmp_path / "run"), "device": "cuda",
        "model": {"dim": 32, "operator": "complex_diagonal", "reciprocal": True},
        "training": {"epochs": 3}, "eval": {"valid_every": 0},
    })
    summary = train(config)
    assert summary["device"].startswith("cuda")
    epochs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_per_edge"] for r in epochs if r["type"] == "epoch"]
    assert losses[0] > losses[1] > losses[2]
    emb, ada = CheckpointStore(tmp_path / "run").latest().load_partition("entity", 0)
    assert emb.device.type == "cpu" and torch.isfinite(emb).all()
