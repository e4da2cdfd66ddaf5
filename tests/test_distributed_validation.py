"""Validation split over two torchrun workers (gloo, CPU) gives what one process computes from
the same checkpoint: link prediction and recommendation metrics alike."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from bigkg.config import load_config
from bigkg.evaluation import evaluate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.torchrun import SINGLE_NODE, run_torchrun  # noqa: E402


def test_two_workers_validate_as_one_process_does(codex2, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": str(codex2), "run_dir": str(tmp_path / "run"),
        "model": {"dim": 16, "operator": "complex_diagonal", "reciprocal": True},
        "training": {"epochs": 1, "batch_size": 500, "threads": 1, "lr": 0.1},
        # P106 (occupation) as a user->item relation: people get occupations ranked
        "eval": {"valid_every": 1, "query_batch": 64, "rec_relation": "P106", "rec_k": [5, 20]},
        "distributed": {"lease_seconds": 10, "heartbeat_seconds": 1, "timeout": 120},
    }))
    log, summary_path = tmp_path / "torchrun.log", tmp_path / "summary.json"
    code = run_torchrun(config, ["--nproc-per-node", "2", *SINGLE_NODE], log, launcher_args=["--json", str(summary_path)],
                        timeout=300)
    assert code == 0, log.read_text()[-5000:]
    assert "[rank 1]" in log.read_text()  # really two workers
    (validated,) = json.loads(summary_path.read_text())["valid"]
    alone = evaluate(load_config(config, []), split="valid")  # the final checkpoint: the validated weights
    for key in ("mrr", "mr", "hits@10", "count", "amr", "amri", "amrri", "tails", "heads",
                "recall@5", "ndcg@5", "recall@20", "ndcg@20", "rec_users"):
        assert validated[key] == alone[key], key
