"""CPU Hogwild workers as forked processes: every batch trained once, updates and foreign-row
gradients back in the trainer, a failing or dying worker a clear error. Each training runs in
its own subprocess, so the workers are forked from a process that has no other threads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bigkg.checkpoint import CheckpointStore
from bigkg.config import config_from_dict
from bigkg.format import load_manifest
from bigkg.training.hogwild import _SentTensors
from bigkg.training.initial import initial_partition
from partition_helpers import partition

REPO = Path(__file__).resolve().parents[1]

TRAIN = """
import json, os, sys
import bigkg.training.step as step_module
from bigkg.config import config_from_dict
from bigkg.training.trainer import Trainer

config, fault = json.loads(sys.argv[1]), sys.argv[2]
if fault != "none":  # every worker's third batch fails
    original, calls = step_module.BatchStep.__call__, []
    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            if fault == "exit":
                os._exit(3)
            raise RuntimeError("injected failure")
        return original(self, *args, **kwargs)
    step_module.BatchStep.__call__ = failing
trainer = Trainer(config_from_dict(config), fresh=True)
print(type(trainer.workers).__name__, flush=True)
trainer.train()
"""


def run_training(config: dict, fault: str = "none") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRAIN, json.dumps(config), fault], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def config_for(dataset: Path, run_dir: Path, **training) -> dict:
    return {
        "dataset": str(dataset), "run_dir": str(run_dir), "device": "cpu",
        "model": {"dim": 16, "operator": "none", "comparator": "dot"},  # no shared parameters: processes
        "training": {"epochs": 1, "batch_size": 300, "threads": 1, "lr": 0.1, **training},
        "eval": {"valid_every": 0},
    }


def epoch_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "epoch"]


@pytest.fixture(scope="module")
def codex5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CoDEx-S in 5 partitions of unequal sizes: the workers' shared blocks are made, reused
    and released as buckets come and go."""
    out = tmp_path_factory.mktemp("codex") / "codex5"
    partition([REPO / "data" / "codex-s" / "train.txt"], out, num_partitions=5)
    return out


@pytest.mark.parametrize("dataset", ["codex2", "codex5"])
def test_processes_train_every_batch_exactly_once(dataset, request, tmp_path):
    """With lr 0 nothing moves and every entity is a negative, so an epoch's loss is the
    sum of a fixed loss per edge: a batch skipped or trained twice, or a partition a
    worker mistook for another, would change it."""
    data = request.getfixturevalue(dataset)
    losses = {}
    for workers in (1, 2):
        run = tmp_path / f"w{workers}"
        done = run_training(config_for(data, run, lr=0.0, negatives="all", workers=workers))
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[0] == ("ProcessWorkers" if workers == 2 else "ThreadWorkers")
        losses[workers] = epoch_losses(run)[0]
    assert abs(losses[2] - losses[1]) <= 1e-4 * losses[1]


def test_worker_updates_and_foreign_gradients_reach_the_checkpoints(codex2, tmp_path):
    run = tmp_path / "run"
    config = config_for(codex2, run, epochs=2, workers=2, foreign_negatives=16)
    done = run_training(config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "ProcessWorkers"
    first, second = epoch_losses(run)
    assert second < first  # the workers' updates of epoch 1 are what epoch 2 trains on
    config = config_from_dict(config)
    final = CheckpointStore(run).latest()
    for part, size in enumerate(load_manifest(codex2).entity_type("entity").partition_counts):
        initial = initial_partition(config, ("entity", part), size, type_index=0).embeddings
        assert not torch.allclose(final.load_partition("entity", part)[0], initial)  # the workers' updates
    # the last buckets' foreign rows wait for their partition: gradients the workers sent back
    deferred = final.shared_state()["deferred"]
    assert deferred and all(grads.abs().sum() > 0 for _, _, _, grads in deferred)


def test_a_failing_worker_stops_training_with_its_traceback(codex2, tmp_path):
    done = run_training(config_for(codex2, tmp_path / "run", workers=2), fault="raise")
    assert done.returncode != 0
    assert "WorkerError: training worker process" in done.stderr and "injected failure" in done.stderr


def test_a_dying_worker_stops_training(codex2, tmp_path):
    done = run_training(config_for(codex2, tmp_path / "run", workers=2), fault="exit")
    assert done.returncode != 0
    assert "died with exit code 3" in done.stderr


CLOSE = """
import json, multiprocessing, sys
from bigkg.config import config_from_dict
from bigkg.training.trainer import Trainer

config = config_from_dict(json.loads(sys.argv[1]))
with Trainer(config) as trainer:  # built to be inspected, never trained
    print(type(trainer.workers).__name__, len(multiprocessing.active_children()))
print(len(multiprocessing.active_children()))
Trainer(config).close()  # the run dir is free again
"""


def test_a_trainer_closed_without_training_stops_its_workers_and_frees_the_run_dir(codex2, tmp_path):
    config = config_for(codex2, tmp_path / "run", workers=2)
    done = subprocess.run([sys.executable, "-c", CLOSE, json.dumps(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kind, alive, after = done.stdout.split()
    assert (kind, alive, after) == ("ProcessWorkers", "2", "0")


def test_a_shared_tensor_reaches_the_workers_whole_once_then_by_reference():
    sent = _SentTensors()
    block, other = sent.add(torch.arange(12.0).view(3, 4).share_memory_(), torch.ones(5).share_memory_())
    sent.add(block)  # known already: keeps its id
    held: dict = {}
    first = sent.message((block, other[:2]))
    assert len(first[0]) == 2  # sent whole, once
    view, part = _SentTensors.receive(first, held)
    assert torch.equal(view, block) and torch.equal(part, other[:2])
    sent.release(other)
    new, released, payload = sent.message((block[1:], block.T))
    assert not new and len(released) == 1  # by reference; the released one may be dropped
    rows, transposed = _SentTensors.receive((new, released, payload), held)
    assert torch.equal(rows, block[1:]) and torch.equal(transposed, block.T)
    assert len(held) == 1
    block[2, 3] = -1.0  # a reference is the shared memory itself, not a copy
    assert rows[1, 3] == -1.0
