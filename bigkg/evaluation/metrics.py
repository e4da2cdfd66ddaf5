"""Metrics from ranks (link prediction) and from top-K lists (recommendation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np


@dataclass(frozen=True)
class QueryRanks:
    """Per query: its filtered rank and how many entities it was ranked among (``candidates``:
    its answer and the unfiltered others), which the chance-adjusted metrics need."""

    ranks: np.ndarray  # float64, ties counted half
    candidates: np.ndarray  # int64

    def __getitem__(self, select: np.ndarray | slice) -> QueryRanks:
        return QueryRanks(self.ranks[select], self.candidates[select])

    @staticmethod
    def concatenate(parts: Iterable[QueryRanks]) -> QueryRanks:
        parts = list(parts)
        return QueryRanks(np.concatenate([p.ranks for p in parts]), np.concatenate([p.candidates for p in parts]))

    def summed(self, sum_over_workers: Callable[[np.ndarray], np.ndarray]) -> QueryRanks:
        """The sum of every worker's share (0 where another worker ranked), in one collective:
        float64 holds the counts exactly."""
        total = sum_over_workers(np.stack([self.ranks, self.candidates.astype(np.float64)]))
        return QueryRanks(total[0], total[1].astype(np.int64))


# Below this H(n) is summed; above it the asymptotic series is exact to double precision.
_SUMMED_HARMONIC = 1024
_HARMONIC_TABLE = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, _SUMMED_HARMONIC + 1))])


def harmonic_numbers(n: np.ndarray) -> np.ndarray:
    """H(n) = 1 + 1/2 + ... + 1/n of non-negative integers (H(0) = 0).

    Beyond 1024, ln n + gamma + 1/(2n) - 1/(12n^2) + 1/(120n^4): the first term left out,
    1/(252n^6), is below 1e-20 there. A table up to the largest n would take 8 bytes per entity.
    """
    n = np.asarray(n, dtype=np.int64)
    out = _HARMONIC_TABLE[np.minimum(n, _SUMMED_HARMONIC)]
    large = n > _SUMMED_HARMONIC
    x = n[large].astype(np.float64)
    out[large] = np.log(x) + np.euler_gamma + 1 / (2 * x) - 1 / (12 * x**2) + 1 / (120 * x**4)
    return out


def ranking_metrics(ranks: np.ndarray, candidates: np.ndarray, hits: Iterable[int] = (1, 3, 10)) -> dict[str, float]:
    """MRR, MR and Hits@k of (possibly fractional, tie-averaged) ranks, and their adjustments
    for chance, AMR, AMRI and AMRRI; ``candidates[i]`` is how many entities query i was ranked
    among, its answer included.

    A rank of 1.5 (tied with one other candidate) counts for Hits@2 but not Hits@1.

    A model that scores at random ranks a query with n candidates uniformly in 1..n:
    E[rank] = (n + 1) / 2 and E[1/rank] = H(n) / n, averaged over the queries into E[MR] and
    E[MRR]. ``amr`` = MR / E[MR] (1 at random, lower is better) and ``amri`` =
    1 - (MR - 1) / (E[MR] - 1) (Berrendorf et al., 2020); ``amrri`` = (MRR - E[MRR]) /
    (1 - E[MRR]) (Hoyt et al., 2022). Both indices are 1 for perfect ranks, 0 in expectation
    at random, and negative below random; NaN when every query has a single candidate.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.shape != ranks.shape:
        raise ValueError(f"{candidates.shape} candidate counts for {ranks.shape} ranks")
    out: dict[str, float] = {"count": int(ranks.size)}
    nan = float("nan")
    if ranks.size == 0:
        out.update({"mrr": nan, "mr": nan})
        out.update({f"hits@{k}": nan for k in hits})
        out.update({"amr": nan, "amri": nan, "amrri": nan})
        return out
    out["mrr"] = mrr = float(np.mean(1.0 / ranks))
    out["mr"] = mr = float(np.mean(ranks))
    for k in hits:
        out[f"hits@{k}"] = float(np.mean(ranks <= k))
    expected_mr = float(np.mean((candidates + 1.0) / 2.0))
    expected_mrr = float(np.mean(harmonic_numbers(candidates) / candidates))
    out["amr"] = mr / expected_mr
    out["amri"] = 1.0 - (mr - 1.0) / (expected_mr - 1.0) if expected_mr > 1.0 else nan
    out["amrri"] = (mrr - expected_mrr) / (1.0 - expected_mrr) if expected_mrr < 1.0 else nan
    return out


def both_directions(tails: QueryRanks, heads: QueryRanks, hits: Iterable[int]) -> dict[str, Any]:
    """The metrics of both directions together, and of each under ``tails`` and ``heads``."""
    hits = list(hits)
    both = QueryRanks.concatenate([tails, heads])
    return {**ranking_metrics(both.ranks, both.candidates, hits),
            "tails": ranking_metrics(tails.ranks, tails.candidates, hits),
            "heads": ranking_metrics(heads.ranks, heads.candidates, hits)}


def recall_ndcg_per_user(
    top_items: np.ndarray, relevant_query: np.ndarray, relevant_item: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user (row of ``top_items``): Recall@K, NDCG@K, and whether it has relevant items
    (the metrics of a user without any are 0).

    ``top_items`` [U, >=K]: each user's recommended item ids, best first (-1 = no item).
    ``relevant_query``/``relevant_item``: the held-out (user row, item id) pairs, duplicates
    ignored. Recall@K = hits in the top K / number of relevant items; NDCG@K = sum over hits
    at 0-based position i of 1/log2(i + 2), divided by the same sum for an ideal list
    (min(K, #relevant) hits at the top).
    """
    top = np.asarray(top_items)[:, :k]
    num_users = top.shape[0]
    # (user, item) pairs as int64 keys; a pair listed twice counts once.
    stride = int(max(top.max(initial=0), np.max(relevant_item, initial=0))) + 1
    keys_rel = np.unique(np.asarray(relevant_query, dtype=np.int64) * stride + np.asarray(relevant_item, dtype=np.int64))
    n_relevant = np.bincount(keys_rel // stride, minlength=num_users)
    rows = np.repeat(np.arange(num_users, dtype=np.int64), top.shape[1])
    keys_top = rows * stride + top.reshape(-1).astype(np.int64)
    is_hit = np.isin(keys_top, keys_rel).reshape(top.shape) & (top >= 0)
    discount = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0)
    dcg = (is_hit * discount).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    idcg = ideal_cum[np.minimum(n_relevant, k)]
    has_relevant = n_relevant > 0
    recall = np.divide(is_hit.sum(axis=1), n_relevant, out=np.zeros(num_users), where=has_relevant)
    ndcg = np.divide(dcg, idcg, out=np.zeros(num_users), where=has_relevant)
    return recall, ndcg, has_relevant


def mean_recall_ndcg(recall: np.ndarray, ndcg: np.ndarray, has_relevant: np.ndarray, k: int) -> dict[str, float]:
    """``recall@K``, ``ndcg@K`` averaged over the users with relevant items, and ``rec_users``."""
    if not has_relevant.any():
        return {f"recall@{k}": float("nan"), f"ndcg@{k}": float("nan"), "rec_users": 0}
    return {f"recall@{k}": float(recall[has_relevant].mean()), f"ndcg@{k}": float(ndcg[has_relevant].mean()),
            "rec_users": int(has_relevant.sum())}

