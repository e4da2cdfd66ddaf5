"""Ranking and recommendation metrics against hand-worked examples and brute force."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from bigkg.evaluation.metrics import QueryRanks, harmonic_numbers, mean_recall_ndcg, ranking_metrics, recall_ndcg_per_user


def recall_ndcg_at_k(top, users, items, k):
    """The means evaluation reports, from the per-user metrics."""
    return mean_recall_ndcg(*recall_ndcg_per_user(top, users, items, k), k)


def test_ranking_metrics_hand_worked():
    m = ranking_metrics(np.array([1.0, 2.0, 4.0, 1.5]), np.array([5, 5, 5, 5]), hits=(1, 3, 10))
    assert m["count"] == 4
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 1 / 1.5) / 4)
    assert m["mr"] == pytest.approx(8.5 / 4)
    assert m["hits@1"] == pytest.approx(0.25)  # the tie-averaged 1.5 is not a hit at 1
    assert m["hits@3"] == pytest.approx(0.75)
    assert m["hits@10"] == pytest.approx(1.0)


def test_ranking_metrics_empty_is_nan():
    m = ranking_metrics(np.array([]), np.array([], dtype=np.int64))
    assert m["count"] == 0 and math.isnan(m["mrr"])
    assert math.isnan(m["amr"]) and math.isnan(m["amri"]) and math.isnan(m["amrri"])


def harmonic(n: int) -> Fraction:
    return sum((Fraction(1, k) for k in range(1, n + 1)), Fraction(0))


def test_adjusted_metrics_hand_worked():
    # Ranks 1, 3, 2 among 3, 5, 4 candidates. MR = 2, E[MR] = mean(2, 3, 2.5) = 2.5.
    m = ranking_metrics(np.array([1.0, 3.0, 2.0]), np.array([3, 5, 4]))
    assert m["amr"] == pytest.approx(2 / 2.5)
    assert m["amri"] == pytest.approx(1 - (2 - 1) / (2.5 - 1))  # 1/3
    # MRR = (1 + 1/3 + 1/2) / 3 = 11/18; E[MRR] = mean(H(3)/3, H(5)/5, H(4)/4) = mean(11/18, 137/300, 25/48).
    mrr = Fraction(11, 18)
    expected = (harmonic(3) / 3 + harmonic(5) / 5 + harmonic(4) / 4) / 3
    assert harmonic(5) / 5 == Fraction(137, 300)
    assert m["amrri"] == pytest.approx(float((mrr - expected) / (1 - expected)), rel=1e-12)
    assert m["mrr"] == pytest.approx(float(mrr)) and m["mr"] == pytest.approx(2.0)  # the unadjusted ones unchanged


def test_adjusted_metrics_of_perfect_and_worst_ranks():
    candidates = np.array([2, 10, 1000, 7])
    perfect = ranking_metrics(np.ones(4), candidates)
    assert perfect["amri"] == 1.0 and perfect["amrri"] == 1.0
    assert perfect["amr"] == pytest.approx(1 / np.mean((candidates + 1) / 2))
    worst = ranking_metrics(candidates.astype(np.float64), candidates)  # every answer last: below random
    assert worst["amri"] == pytest.approx(-1.0) and worst["amr"] > 1 and worst["amrri"] < 0


def test_adjusted_indices_are_nan_when_every_query_has_one_candidate():
    m = ranking_metrics(np.ones(3), np.ones(3, dtype=np.int64))
    assert m["amr"] == 1.0 and math.isnan(m["amri"]) and math.isnan(m["amrri"])


def test_candidate_counts_must_match_the_ranks():
    with pytest.raises(ValueError, match="candidate counts"):
        ranking_metrics(np.ones(3), np.ones(2, dtype=np.int64))


def test_harmonic_numbers_summed_and_from_the_series():
    n = np.array([0, 1, 2, 7, 1024, 1025, 4000, 250_000])
    exact = [math.fsum(1.0 / k for k in range(1, int(x) + 1)) for x in n]
    np.testing.assert_allclose(harmonic_numbers(n), exact, rtol=1e-14)
    assert harmonic_numbers(np.array([3]))[0] == pytest.approx(float(harmonic(3)))


def test_query_ranks_select_concatenate_and_sum_over_workers():
    a = QueryRanks(np.array([1.0, 0.0, 2.5]), np.array([4, 0, 9]))
    b = QueryRanks(np.array([0.0, 3.0, 0.0]), np.array([0, 6, 0]))
    sent: list[np.ndarray] = []
    total = a.summed(lambda values: sent.append(values) or values + np.stack([b.ranks, b.candidates.astype(np.float64)]))
    assert len(sent) == 1  # ranks and counts in one collective
    assert total.ranks.tolist() == [1.0, 3.0, 2.5] and total.candidates.tolist() == [4, 6, 9]
    assert total.candidates.dtype == np.int64
    both = QueryRanks.concatenate([total[np.array([True, False, True])], total[1:2]])
    assert both.ranks.tolist() == [1.0, 2.5, 3.0] and both.candidates.tolist() == [4, 9, 6]


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
