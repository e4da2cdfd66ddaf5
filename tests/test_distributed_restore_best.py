"""Two torchrun workers (gloo, CPU) end a run with its best-validated weights as the final checkpoint.

Two sane epochs on CoDEx-S with P=2, then the same run resumed by two workers
with a destructive learning rate: rank 0 validates, keeps the best version on
disk through the epoch's checkpoint writes and commits it again at the end.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

from bigkg.checkpoint import CheckpointStore
from bigkg.config import load_config
from bigkg.evaluation import evaluate
from bigkg.training import train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.torchrun import SINGLE_NODE, run_torchrun  # noqa: E402


def write_config(path: Path, dataset: Path, run_dir: Path, **training) -> Path:
    config = {
        "dataset": str(dataset), "run_dir": str(run_dir),
        "model": {"dim": 16, "operator": "complex_diagonal", "reciprocal": True},
        "training": {"epochs": 2, "batch_size": 500, "threads": 1, "lr": 0.1, **training},
        "eval": {"valid_every": 1},
        "distributed": {"lease_seconds": 10, "heartbeat_seconds": 1, "timeout": 120},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_rank0_commits_the_best_version_at_the_end(codex2, tmp_path):
    run_dir = tmp_path / "run"
    train(load_config(write_config(tmp_path / "sane.yaml", codex2, run_dir), []))
    # lr 50 ruins valid MRR but keeps the losses finite
    ruin = write_config(tmp_path / "ruin.yaml", codex2, run_dir, epochs=3, lr=50.0)
    log, summary_path = tmp_path / "torchrun.log", tmp_path / "summary.json"
    code = run_torchrun(ruin, ["--nproc-per-node", "2", *SINGLE_NODE], log, launcher_args=["--json", str(summary_path)],
                        timeout=300)
    assert code == 0, log.read_text()[-5000:]
    assert "[rank 1]" in log.read_text()  # really two workers

    summary = json.loads(summary_path.read_text())
    mrrs = [v["mrr"] for v in summary["valid"]]
    assert len(mrrs) == 3 and mrrs[2] < max(mrrs[:2]) == summary["best_valid_mrr"], mrrs
    best = max(summary["valid"], key=lambda v: v["mrr"])
    assert summary["restored_from"] == {"version": best["checkpoint"], "epoch": best["epoch"], "valid_mrr": best["mrr"]}
    store = CheckpointStore(run_dir)
    latest = store.latest()
    assert latest.name != best["checkpoint"] and latest.meta["progress"]["epoch"] == 3
    for p in range(2):
        best_file = store.root / best["checkpoint"] / "partitions" / "entity" / f"part_{p}.pt"
        assert os.stat(latest.partition_path("entity", p)).st_ino == os.stat(best_file).st_ino
    assert evaluate(load_config(ruin, []), split="valid")["mrr"] == best["mrr"]
