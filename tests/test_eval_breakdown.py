"""Metrics per relation and per relation category (``bigkg eval --by-relation``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from bigkg.config import config_to_dict
from bigkg.evaluation import evaluate
from bigkg.evaluation.breakdown import relation_categories
from bigkg.evaluation.filters import iter_split
from bigkg.evaluation.metrics import QueryRanks, ranking_metrics
from bigkg.format import load_manifest
from eval_datasets import RELS, write_dataset, write_trained_run
from launcher.cli import main
from test_eval_evaluate import _brute_force


def _category_graph() -> dict[str, np.ndarray]:
    """Forty entities; one relation of each category, built so that tph and hpt are exact."""
    one_to_many = [(k, 0, 10 + 2 * k + s) for k in range(10) for s in (0, 1)]  # 2 tails per head
    many_to_one = [(t, 1, h) for h, _, t in one_to_many]
    one_to_one = [(k, 2, k + 20) for k in range(10)]
    many_to_many = [(h, 3, t) for h in range(4) for t in range(30, 34)]
    test = [(0, 0, 10), (11, 1, 0), (3, 2, 23), (1, 3, 31), (5, 4, 6)]  # relation 4 has no training edge
    return {"train": np.array(one_to_many + many_to_one + one_to_one + many_to_many), "test": np.array(test)}


def test_categories_count_each_head_once_across_the_buckets_it_occurs_in(tmp_path):
    relations = [(name, "e", "e") for name in ("one_to_many", "many_to_one", "one_to_one", "many_to_many", "untrained")]
    write_dataset(tmp_path, {"e": 40}, relations, _category_graph(), num_partitions=2, seed=7)
    manifest = load_manifest(tmp_path)
    # The premise: some head of one_to_many has its two tails in different buckets, so a count
    # of distinct heads per bucket would see it twice and make the relation look 1-1.
    buckets_of_head: dict[int, set[int]] = {}
    for n, t in enumerate(iter_split(tmp_path, manifest, "train")):
        for h in t.heads[t.rels == 0].tolist():
            buckets_of_head.setdefault(h, set()).add(n)
    assert sum(len(b) > 1 for b in buckets_of_head.values()) > len(buckets_of_head) / 3
    assert relation_categories(tmp_path, manifest) == ["1-N", "N-1", "1-1", "N-N", None]


def test_per_relation_and_per_category_metrics_are_those_of_their_triples(tmp_path):
    config, model, splits, by_index = write_trained_run(tmp_path)
    result = evaluate(config, "test", by_relation=True)
    ref = _brute_force(model, splits, by_index)
    rels = splits["test"][:, 1]
    categories = relation_categories(config.dataset, load_manifest(config.dataset))
    assert set(result["relations"]) == {RELS[r][0] for r in np.unique(rels)}
    for r, (name, _, _) in enumerate(RELS):
        if name not in result["relations"]:
            continue
        got, mask = result["relations"][name], rels == r
        assert got["category"] == categories[r]
        assert got["count"] == 2 * mask.sum()
        assert got["tails"]["mrr"] == pytest.approx(np.mean(1 / ref["rhs"].ranks[mask]), rel=1e-5)
        assert got["heads"]["mrr"] == pytest.approx(np.mean(1 / ref["lhs"].ranks[mask]), rel=1e-5)
        assert got["mrr"] == pytest.approx(np.mean(1 / np.concatenate([ref["rhs"].ranks[mask], ref["lhs"].ranks[mask]])),
                                           rel=1e-5)
        tails = ref["rhs"][mask]
        assert got["tails"]["amri"] == pytest.approx(ranking_metrics(tails.ranks, tails.candidates)["amri"], rel=1e-5)
    for category, got in result["categories"].items():
        members = [r for r, c in enumerate(categories) if c == category and (rels == r).any()]
        mask = np.isin(rels, members)
        tails, heads = got.pop("tails"), got.pop("heads")
        assert got.pop("relations") == len(members)
        both = QueryRanks.concatenate([ref["rhs"][mask], ref["lhs"][mask]])
        assert got == pytest.approx(ranking_metrics(both.ranks, both.candidates))
        assert tails == pytest.approx(ranking_metrics(ref["rhs"].ranks[mask], ref["rhs"].candidates[mask]))
        assert heads == pytest.approx(ranking_metrics(ref["lhs"].ranks[mask], ref["lhs"].candidates[mask]))
    assert sum(m["count"] for m in result["categories"].values()) == result["count"] > 0


def test_eval_command_by_relation_prints_and_writes_the_breakdown(tmp_path, capsys):
    config, *_ = write_trained_run(tmp_path)
    path, out = tmp_path / "config.yaml", tmp_path / "metrics.json"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    assert main(["eval", str(path), "--by-relation", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    for name, m in data["relations"].items():  # MRR and Hits@ the largest k on the relation's line
        assert any(line.startswith(name) and f"{m['mrr']:.4f}" in line and f"{m['hits@10']:.4f}" in line
                   for line in printed.splitlines())
    assert main(["eval", str(path), "--json", str(out)]) == 0
    assert "relations" not in json.loads(out.read_text()) and "category" not in capsys.readouterr().out
