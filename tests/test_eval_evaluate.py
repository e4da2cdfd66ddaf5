"""evaluate(config, split) on a real dataset dir and a real checkpoint, against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bigkg.checkpoint import CheckpointStore, PartitionState
from bigkg.config import config_from_dict
from bigkg.evaluation import evaluate
from bigkg.evaluation.source import EvaluationError
from bigkg.format import load_manifest
from bigkg.model import build_model
from eval_datasets import write_dataset

TYPES = {"user": 12, "item": 20}
RELS = [("likes", "user", "item"), ("similar", "item", "item"), ("follows", "user", "user")]


def _triples(rng, n):
    rel = rng.integers(0, 3, n)
    counts = [(TYPES[RELS[r][1]], TYPES[RELS[r][2]]) for r in rel]
    return np.array([[rng.integers(0, a), r, rng.integers(0, b)] for r, (a, b) in zip(rel, counts)])


def _setup(tmp_path, overrides=(), splits=None, operator="diagonal"):
    rng = np.random.default_rng(5)
    if splits is None:
        splits = {"train": _triples(rng, 150), "valid": _triples(rng, 20), "test": _triples(rng, 40)}
    data, run = tmp_path / "data", tmp_path / "run"
    gid = write_dataset(data, TYPES, RELS, splits, num_partitions=2, seed=2)
    manifest = load_manifest(data)
    config = config_from_dict(
        {"dataset": str(data), "run_dir": str(run), "model": {"dim": 6, "operator": operator},
         "eval": {"query_batch": 8, "candidate_chunk": 5}},
        list(overrides),
    )
    model = build_model(config, manifest)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    vectors = {t: torch.randn(n, 6, generator=g) for t, n in TYPES.items()}  # in global-id order
    changed, keys = {}, []
    for et in manifest.entity_types:
        start = 0
        for part, count in enumerate(et.partition_counts):
            keys.append((et.name, part))
            emb = vectors[et.name][start : start + count].clone()
            changed[(et.name, part)] = PartitionState(emb, torch.zeros(count))
            start += count
    CheckpointStore(run).write({"epoch": 3}, {"model": model.state_dict()}, changed, keys, base=None, keep_versions=1)
    # Vectors by entity index (the names' numbering), independent of partitions.
    by_index = {t: vectors[t][torch.from_numpy(gid[t])] for t in TYPES}
    return config, model, splits, by_index


def _brute_force(model, splits, by_index, split="test"):
    known = {tuple(t) for s in splits.values() for t in s.tolist()}
    ranks = {"rhs": [], "lhs": []}
    with torch.no_grad():
        for h, r, t in splits[split].tolist():
            _, ht, tt = RELS[r]
            rel = torch.tensor([r])
            s_t = model.score_candidates("rhs", by_index[ht][[h]], rel, by_index[tt])[0].double().numpy()
            s_h = model.score_candidates("lhs", by_index[tt][[t]], rel, by_index[ht])[0].double().numpy()
            for side, scores, answer, other in (("rhs", s_t, t, lambda x: (h, r, x)), ("lhs", s_h, h, lambda x: (x, r, t))):
                true = scores[answer]
                comp = [scores[x] for x in range(len(scores)) if x != answer and other(x) not in known]
                comp = np.array(comp)
                ranks[side].append(1 + (comp > true).sum() + (comp == true).sum() / 2)
    return {k: np.array(v) for k, v in ranks.items()}


@pytest.mark.parametrize("operator", ["diagonal", "translation"])
def test_evaluate_matches_brute_force(tmp_path, operator):
    config, model, splits, by_index = _setup(tmp_path, operator=operator)
    result = evaluate(config, "test")
    ref = _brute_force(model, splits, by_index)
    all_ranks = np.concatenate([ref["rhs"], ref["lhs"]])
    assert result["count"] == 2 * len(splits["test"]) == 2 * result["triples"]
    assert result["mrr"] == pytest.approx(np.mean(1 / all_ranks), rel=1e-5)
    assert result["mr"] == pytest.approx(np.mean(all_ranks), rel=1e-5)
    assert result["hits@10"] == pytest.approx(np.mean(all_ranks <= 10))
    assert result["tails"]["mrr"] == pytest.approx(np.mean(1 / ref["rhs"]), rel=1e-5)
    assert result["heads"]["mrr"] == pytest.approx(np.mean(1 / ref["lhs"]), rel=1e-5)
    assert result["epoch"] == 3 and result["checkpoint"] == "v000000"


def test_unseen_entities_are_kept_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    train = _triples(rng, 150)
    # Keep user 11 and item 19 out of training; two test triples use them.
    train = train[~(((train[:, 1] != 1) & (train[:, 0] == 11)) | ((train[:, 1] == 2) & (train[:, 2] == 11)))]
    train = train[~(((train[:, 1] != 2) & (train[:, 2] == 19)) | ((train[:, 1] == 1) & (train[:, 0] == 19)))]
    test = np.array([[11, 0, 3], [2, 1, 19], [1, 0, 2]])
    config, model, splits, by_index = _setup(tmp_path, splits={"train": train, "test": test})
    result = evaluate(config, "test")
    assert result["triples"] == 3 and result["count"] == 6
    assert result["unseen_entity_triples"] == 2
    ref = _brute_force(model, splits, by_index)
    assert result["mrr"] == pytest.approx(np.mean(1 / np.concatenate([ref["rhs"], ref["lhs"]])), rel=1e-5)


def test_sampled_mode_reports_its_sampling(tmp_path):
    config, *_ = _setup(tmp_path, overrides=["eval.mode=sampled", "eval.num_sampled=4"])
    full_config, *_ = _setup(tmp_path / "b")
    sampled, full = evaluate(config, "test"), evaluate(full_config, "test")
    assert "uniform" in sampled["sampling"] and sampled["mode"] == "sampled"
    assert sampled["mr"] < full["mr"]


def test_recommendation_metrics_match_brute_force(tmp_path):
    config, model, splits, by_index = _setup(tmp_path, overrides=["eval.rec_relation=likes", "eval.rec_k=[3,5]"])
    result = evaluate(config, "test")
    test, excluded = splits["test"], np.concatenate([splits["train"], splits["valid"]])
    recalls, ndcgs = [], []
    with torch.no_grad():
        for u in sorted(set(test[test[:, 1] == 0, 0].tolist())):
            relevant = set(test[(test[:, 1] == 0) & (test[:, 0] == u), 2].tolist())
            seen = set(excluded[(excluded[:, 1] == 0) & (excluded[:, 0] == u), 2].tolist())
            scores = model.score_candidates("rhs", by_index["user"][[u]], torch.tensor([0]), by_index["item"])[0]
            order = [i for i in torch.argsort(scores, descending=True).tolist() if i not in seen][:5]
            hits = [1.0 if i in relevant else 0.0 for i in order]
            recalls.append(sum(hits) / len(relevant))
            dcg = sum(h / math.log2(k + 2) for k, h in enumerate(hits))
            ndcgs.append(dcg / sum(1 / math.log2(k + 2) for k in range(min(5, len(relevant)))))
    assert result["rec_users"] == len(recalls)
    assert result["recall@5"] == pytest.approx(np.mean(recalls))
    assert result["ndcg@5"] == pytest.approx(np.mean(ndcgs))
    assert "recall@3" in result and result["rec_relation"] == "likes"


def test_errors_without_checkpoint_or_with_bad_split(tmp_path):
    config, *_ = _setup(tmp_path)
    with pytest.raises(EvaluationError, match="split"):
        evaluate(config, "dev")
    empty = config_from_dict({"dataset": config.dataset, "run_dir": str(tmp_path / "nothing")})
    with pytest.raises(EvaluationError, match="no complete checkpoint"):
        evaluate(empty, "test")
    bad = config_from_dict({"dataset": config.dataset, "run_dir": config.run_dir, "model": {"dim": 6, "operator": "diagonal"},
                            "eval": {"rec_relation": "nope"}})
    with pytest.raises(EvaluationError, match="nope"):
        evaluate(bad, "test")
