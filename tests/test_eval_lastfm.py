"""The Last.FM preparation script on the real kgcn-music data: a per-user seeded 80/20 split."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from launcher.cli import main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "prepare_lastfm.py"


def _prepare(src: Path, out: Path, seed: int = 0) -> None:
    subprocess.run([sys.executable, str(SCRIPT), str(src), "--out", str(out), "--seed", str(seed)],
                   check=True, capture_output=True, text=True)


def _rows(path: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split("\t")) for line in path.read_text().splitlines()]


def test_prepare_lastfm_split(shared_dataset, tmp_path):
    src = shared_dataset("kgcn-music")
    _prepare(src, tmp_path / "a")
    train, valid, test = (_rows(tmp_path / "a" / f"{s}.tsv") for s in ("train", "valid", "test"))
    listens = [r for r in train if r[1] == "listens_to"]
    kg = [r for r in train if r[1] != "listens_to"]
    assert len(kg) == 15518  # every KG triple, all in train
    pairs = [(h, t) for h, _, t in listens + valid + test]
    assert len(pairs) == len(set(pairs)) == 21173  # disjoint splits, the documented pair count
    assert all(r[1] == "listens_to" for r in valid + test)
    per_user = Counter(h for h, _ in pairs)
    test_user = Counter(h for h, _, _ in test)
    for user, n in per_user.items():
        assert test_user[user] == int(0.2 * n + 0.5)
    schema = yaml.safe_load((tmp_path / "a" / "schema.yaml").read_text())
    assert schema["listens_to"] == ["user", "entity"]
    assert all(schema[r] == ["entity", "entity"] for _, r, _ in kg)
    # Seeded: the same seed gives the same files, another seed another split.
    _prepare(src, tmp_path / "b")
    _prepare(src, tmp_path / "c", seed=1)
    assert (tmp_path / "a" / "test.tsv").read_text() == (tmp_path / "b" / "test.tsv").read_text()
    assert (tmp_path / "a" / "test.tsv").read_text() != (tmp_path / "c" / "test.tsv").read_text()


def test_lastfm_recommendation_metrics_end_to_end(shared_dataset, tmp_path):
    src = shared_dataset("kgcn-music")
    prepared, data, run = tmp_path / "tsv", tmp_path / "data", tmp_path / "run"
    _prepare(src, prepared)
    assert main(["partition", str(prepared / "train.tsv"), "--valid", str(prepared / "valid.tsv"),
                 "--test", str(prepared / "test.tsv"), "--schema", str(prepared / "schema.yaml"),
                 "--out", str(data)]) == 0
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": str(data), "run_dir": str(run),
        "model": {"dim": 32, "operator": "diagonal"},
        "training": {"epochs": 2, "lr": 0.1},
        "eval": {"valid_every": 0, "rec_relation": "listens_to", "rec_k": [20]},
    }))
    assert main(["train", str(config)]) == 0
    out = tmp_path / "metrics.json"
    assert main(["eval", str(config), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["rec_items"] == 3846 and metrics["rec_users"] > 1800
    # A random order puts on average 20 / (#items - #training items) of a user's test items in the top 20.
    assert metrics["recall@20"] > 5 * 20 / 3846
    assert 0 < metrics["ndcg@20"] <= 1
