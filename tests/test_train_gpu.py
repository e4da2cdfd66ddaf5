"""The training step and loop on CUDA (skipped without a GPU)."""

from __future__ import annotations

import json
import warnings
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


def _train_steps(config, manifest, table, state, batches, seed):
    """Train ``batches`` one after another on CUDA from ``table``, ``state``; the losses, the
    rows, their state, the relation parameters and the step (for its graph counts)."""
    torch.manual_seed(seed)
    model = build_model(config, manifest).to("cuda")
    part = PartitionState(table.clone().cuda(), state.clone().cuda())
    step = BatchStep(model, LOSSES["softmax"], config.training, RowAdagrad(0.1),
                     build_shared_optimizer(model, config.training), torch.Generator(device="cuda").manual_seed(seed))
    losses = [step(batch, (("e", 0), part), (("e", 0), part)).item() for batch in batches]
    return losses, part.embeddings.cpu(), part.adagrad.cpu(), [p.detach().cpu() for p in model.parameters()], step


@pytest.mark.parametrize("operators", ["one operator", "operator per relation"])
def test_cuda_graph_steps_equal_eager_steps(operators):
    """The closed-form step replayed from a CUDA graph trains what the eager step trains:
    the same negatives, row updates, relation parameters (through the operator's autograd
    and the shared optimizer, outside the graph) and losses, batch after batch; batches of
    another size (the epoch's last) get their own graph. A model whose step cannot be
    captured (an operator per relation selects its relations by a mask, which waits for
    the device) warns and trains eagerly, each batch once."""
    n, d = 300, 16
    model_options = {"dim": d, "operator": "complex_diagonal", "reciprocal": True, "regularizer": "n3",
                     "regularization_weight": 0.01}
    if operators == "operator per relation":
        model_options = {"dim": d, "operator": "complex_diagonal", "relation_operators": {"s": "translation"},
                         "regularizer": "l2", "regularization_weight": 0.01}
    manifest = Manifest(1, [EntityType("e", [n])], [Relation("r", "e", "e"), Relation("s", "e", "e")], {})
    g = torch.Generator().manual_seed(0)
    table, state = torch.randn(n, d, generator=g) * 0.1, torch.zeros(n)
    sizes = [60] * 5 + [35] * 4 + [60] * 2  # full batches, then four short ones (their own graph), then full again
    batches = [Batch(*(torch.randint(0, hi, (b,), generator=g).cuda() for hi in (n, n, 2)), None) for b in sizes]
    runs = {}
    for graphs in (False, True):
        config = config_from_dict({"model": model_options, "training": {
            "chunk_size": 10, "num_uniform_negatives": 25, "cuda_graphs": graphs}})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs[graphs] = _train_steps(config, manifest, table, state, batches, seed=3)
        failed = [w for w in caught if "capturing the step failed" in str(w.message)]
        assert len(failed) == (1 if graphs and operators == "operator per relation" else 0), [str(w.message) for w in caught]
    step = runs[True][-1]
    if operators == "one operator":
        assert step.graphs.failure is None
        assert step.graphs.captures == 2  # one per batch size
        assert step.graphs.replays == len(sizes) - 2 * 2  # all but each size's two warm-up steps
    else:
        assert step.graphs.failure is not None and step.graphs.replays == 0
    eager, graphed = runs[False][:-1], runs[True][:-1]
    torch.testing.assert_close(torch.tensor(graphed[0]), torch.tensor(eager[0]), rtol=1e-4, atol=1e-5)
    for graphed_value, eager_value in zip(graphed[1:3] + tuple(graphed[3]), eager[1:3] + tuple(eager[3])):
        torch.testing.assert_close(graphed_value, eager_value, rtol=1e-4, atol=1e-5)
    assert not torch.equal(runs[True][1], table)  # the rows were trained
