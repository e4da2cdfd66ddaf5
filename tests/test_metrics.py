"""Ranking and recommendation metrics against hand-worked examples and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bigkg.evaluation.metrics import mean_recall_ndcg, ranking_metrics, recall_ndcg_per_user


def recall_ndcg_at_k(top, users, items, k):
    """The means evaluation reports, from the per-user metrics."""
    return mean_recall_ndcg(*recall_ndcg_per_user(top, users, items, k), k)


def test_ranking_metrics_hand_worked():
    m = ranking_metrics(np.array([1.0, 2.0, 4.0, 1.5]), hits=(1, 3, 10))
    assert m["count"] == 4
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 1 / 1.5) / 4)
    assert m["mr"] == pytest.approx(8.5 / 4)
    assert m["hits@1"] == pytest.approx(0.25)  # the tie-averaged 1.5 is not a hit at 1
    assert m["hits@3"] == pytest.approx(0.75)
    assert m["hits@10"] == pytest.approx(1.0)


def test_ranking_metrics_empty_is_nan():
    m = ranking_metrics(np.array([]))
    assert m["count"] == 0 and math.isnan(m["mrr"])


def test_recall_ndcg_hand_worked():
    # User 0 relevant {7, 3}; recommended [3, 5, 7]: hits at positions 0 and 2.
    # User 1 relevant {9}; recommended [1, 2, 4]: no hit. User 2 has nothing held out: not counted.
    top = np.array([[3, 5, 7], [1, 2, 4], [9, 9, 9]])
    m = recall_ndcg_at_k(top, np.array([0, 0, 1]), np.array([7, 3, 9]), 3)
    dcg0 = 1 / math.log2(2) + 1 / math.log2(4)
    idcg0 = 1 / math.log2(2) + 1 / math.log2(3)
    assert m["rec_users"] == 2
    assert m["recall@3"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["ndcg@3"] == pytest.approx((dcg0 / idcg0 + 0.0) / 2)


def test_recall_ndcg_cut_at_k_and_ideal_capped():
    # Three relevant items, K = 2: ideal DCG has 2 hits; recall divides by all 3 (the usual definition).
    top = np.array([[4, 5, 6, 7]])
    m = recall_ndcg_at_k(top, np.array([0, 0, 0]), np.array([4, 6, 5]), 2)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx(1.0)


def test_recall_ndcg_against_brute_force():
    rng = np.random.default_rng(0)
    users, items, k = 30, 50, 10
    top = np.stack([rng.permutation(items)[:k] for _ in range(users)])
    top[3, 5:] = -1  # a short list
    rel_u = rng.integers(0, users, 200)
    rel_i = rng.integers(0, items, 200)
    m = recall_ndcg_at_k(top, rel_u, rel_i, k)
    recalls, ndcgs = [], []
    for u in range(users):
        relevant = set(rel_i[rel_u == u].tolist())
        if not relevant:
            continue
        hits = [1.0 if x in relevant else 0.0 for x in top[u]]
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
        recalls.append(sum(hits) / len(relevant))
        ndcgs.append(dcg / idcg)
    assert m["recall@10"] == pytest.approx(np.mean(recalls))
    assert m["ndcg@10"] == pytest.approx(np.mean(ndcgs))
