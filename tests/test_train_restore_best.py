"""Early stopping keeps the best-validated weights: the final checkpoint is the best version's.

The best-not-last case is made on purpose: two sane epochs on CoDEx-S, then a
resume of the same run with a destructive learning rate, which ruins valid MRR.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bigkg.checkpoint import CheckpointStore, CheckpointVersion
from launcher.cli import main as cli_main

DESTROY = ["--set", "training.lr=50"]  # finite losses, valid MRR falls to near random


def write_config(dataset: Path, run_dir: Path) -> Path:
    config = {
        "dataset": str(dataset), "run_dir": str(run_dir),
        "model": {"dim": 16, "operator": "complex_diagonal", "reciprocal": True},
        "training": {"epochs": 2, "batch_size": 500, "threads": 1, "lr": 0.1},
        "eval": {"valid_every": 1},
    }
    path = run_dir.parent / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def run(command: str, config: Path, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{command}.json"
    assert cli_main([command, str(config), "--json", str(out), *args]) == 0
    return json.loads(out.read_text())


def partition_files(version: CheckpointVersion) -> list[Path]:
    return [version.partition_path("entity", p) for p in range(2)]


def trained_then_ruined(codex2: Path, tmp_path: Path, *args: str) -> tuple[Path, dict, dict]:
    """(config, the sane run's summary, the ruined resume's summary)."""
    config = write_config(codex2, tmp_path / "run")
    sane = run("train", config, tmp_path)
    ruined = run("train", config, tmp_path, *DESTROY, *args)
    mrrs = [v["mrr"] for v in ruined["valid"]]
    assert max(mrrs[2:]) < ruined["best_valid_mrr"] == max(mrrs[:2]), mrrs  # the best is not the last
    return config, sane, ruined


@pytest.mark.parametrize("how", ["all epochs", "early stop"])
def test_final_checkpoint_holds_the_best_validated_weights(codex2, tmp_path, how):
    args = ["--set", "training.epochs=3"] if how == "all epochs" else \
        ["--set", "training.epochs=10", "--set", "eval.early_stopping_patience=1"]
    config, sane, ruined = trained_then_ruined(codex2, tmp_path, *args)
    assert sane["restored_from"] is None  # its last validation was its best
    assert ruined["epochs_completed"] == 3 and ruined["stopped_early"] == (how == "early stop")
    best = max(ruined["valid"], key=lambda v: v["mrr"])
    restored = ruined["restored_from"]
    assert restored == {"version": best["checkpoint"], "epoch": best["epoch"], "valid_mrr": best["mrr"]}

    store = CheckpointStore(config.parent / "run")
    latest, best_version = store.latest(), CheckpointVersion(store.root / best["checkpoint"])
    assert ruined["checkpoint"] == str(latest.path) and latest.name != best_version.name
    for mine, theirs in zip(partition_files(latest), partition_files(best_version)):
        assert os.stat(mine).st_ino == os.stat(theirs).st_ino
    for name, tensor in best_version.shared_state()["model"].items():
        assert torch.equal(latest.shared_state()["model"][name], tensor), name
    progress = latest.meta["progress"]
    assert progress["epoch"] == 3 and progress["restored_from"] == restored

    # the final checkpoint scores exactly the best validation
    assert run("eval", config, tmp_path, "--split", "valid")["mrr"] == best["mrr"]
    # a resume sees a finished run: nothing trained, nothing restored again
    again = run("train", config, tmp_path, *DESTROY, *args)
    assert again["edges_trained_this_run"] == 0 and store.latest().name == latest.name
    assert again["restored_from"] == restored
    # nor does it keep the restored weights as the last epoch's snapshot
    run("train", config, tmp_path, *DESTROY, *args, "--set", "checkpoint.snapshot_every=1")
    assert not (config.parent / "run" / "snapshots").exists()


def test_restore_best_off_keeps_the_last_weights(codex2, tmp_path):
    config, _, ruined = trained_then_ruined(codex2, tmp_path, "--set", "training.epochs=3", "--set", "eval.restore_best=false")
    assert ruined["restored_from"] is None
    store = CheckpointStore(config.parent / "run")
    best = max(ruined["valid"], key=lambda v: v["mrr"])
    assert not (store.root / best["checkpoint"]).exists()  # not pinned: pruned like any old version
    assert run("eval", config, tmp_path, "--split", "valid")["mrr"] == ruined["valid"][-1]["mrr"] != best["mrr"]
    # turned on for the finished run, whose best version was pruned: the last weights stay
    latest = store.latest().name
    again = run("train", config, tmp_path, "--set", "training.epochs=3")
    assert again["restored_from"] is None and store.latest().name == latest


def test_checkpoint_without_the_best_fields_resumes(codex2, tmp_path):
    """A checkpoint written before the progress knew its best version still loads and trains on."""
    config = write_config(codex2, tmp_path / "run")
    run("train", config, tmp_path, "--set", "training.epochs=1")
    latest = CheckpointStore(tmp_path / "run").latest()
    meta = json.loads((latest.path / "meta.json").read_text())
    for key in ("best_version", "best_epoch", "restored_from"):
        del meta["progress"][key]
    (latest.path / "meta.json").write_text(json.dumps(meta))
    summary = run("train", config, tmp_path, *DESTROY)
    assert summary["epochs_completed"] == 2 and len(summary["valid"]) == 2
    # the old best was recorded without its version: the new run records only what it validated
    assert summary["restored_from"] is None
