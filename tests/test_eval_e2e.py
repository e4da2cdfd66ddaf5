"""End to end on a real KG (Kinships): partition, train, evaluate, export, query, plot.

The filtered MRR must be far above the expected MRR of a model that ranks at
random, computed here from the filter index: a query with n unfiltered
candidates gets a uniform rank in 1..n, so E[1/rank] = H(n)/n.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from bigkg.checkpoint import CheckpointStore
from bigkg.evaluation.filters import FilterIndex, read_split
from bigkg.format import load_manifest, read_entity_names
from launcher.cli import main


def random_baseline_mrr(root, manifest, split="test") -> float:
    filters = FilterIndex.from_dataset(root, manifest)
    t = read_split(root, manifest, split)
    n_entities = manifest.entity_types[0].count
    expected = []
    for side, anchors in (("rhs", t.heads), ("lhs", t.tails)):
        qidx, _ = filters.known_answers(side, anchors, t.rels)
        n = n_entities - (np.bincount(qidx, minlength=len(t)) - 1)  # other true answers are filtered
        harmonic = np.cumsum(1.0 / np.arange(1, n_entities + 1))
        expected.append(harmonic[n - 1] / n)
    return float(np.mean(np.concatenate(expected)))


@pytest.mark.slow
def test_kinships_end_to_end(shared_dataset, tmp_path, capsys):
    src = shared_dataset("kinships")
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["partition", str(src / "train.txt"), "--valid", str(src / "valid.txt"), "--test", str(src / "test.txt"),
                 "--out", str(data), "--partitions", "2", "--seed", "0"]) == 0
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": str(data), "run_dir": str(run), "seed": 0,
        "model": {"dim": 32, "operator": "complex_diagonal"},
        "training": {"epochs": 4, "batch_size": 500, "lr": 0.1},
        "eval": {"valid_every": 2},
    }))
    assert main(["train", str(config)]) == 0
    capsys.readouterr()

    # Evaluate: well above random ranking.
    metrics_path = tmp_path / "metrics.json"
    assert main(["eval", str(config), "--json", str(metrics_path)]) == 0
    metrics = json.loads(metrics_path.read_text())
    manifest = load_manifest(data)
    baseline = random_baseline_mrr(data, manifest)
    assert metrics["count"] == 2 * 1074 and metrics["unseen_entity_triples"] == 0
    assert metrics["mrr"] > baseline + 0.2, (metrics["mrr"], baseline)
    # The adjusted MRR index rests on the same expectation: E[MRR] = (MRR - AMRRI) / (1 - AMRRI).
    assert (metrics["mrr"] - metrics["amrri"]) / (1 - metrics["amrri"]) == pytest.approx(baseline, rel=1e-9)
    assert metrics["hits@10"] >= metrics["hits@3"] >= metrics["hits@1"]

    # Export: names match the dataset's entity tables, vectors the checkpoint.
    out = tmp_path / "emb.parquet"
    assert main(["export", str(config), "--format", "parquet", "--out", str(out)]) == 0
    table = pq.read_table(out)
    latest = CheckpointStore(run).latest()
    et = manifest.entity_types[0]
    names = [n for p in range(len(et.partition_counts)) for n in read_entity_names(data, et.name, p).to_pylist()]
    assert table.column("name").to_pylist() == names
    vectors = torch.cat([latest.load_partition(et.name, p)[0] for p in range(len(et.partition_counts))])
    exported = torch.tensor(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)))
    assert torch.equal(exported, vectors)

    # Query: the top tails of a training triple's (head, relation) are entities, the true tail ranks well.
    head, relation, tail = (src / "train.txt").read_text().splitlines()[0].split("\t")
    answers_path = tmp_path / "answers.json"
    assert main(["query", str(config), "--head", head, "--relation", relation, "-k", "10", "--json", str(answers_path)]) == 0
    answers = json.loads(answers_path.read_text())["answers"]
    assert len(answers) == 10 and set(a["name"] for a in answers) <= set(names)
    assert any(a["known"] for a in answers)

    # Plot.
    assert main(["plot", str(config)]) == 0
    assert (run / "training.png").read_bytes()[:4] == b"\x89PNG"
