"""Metrics from ranks (link prediction) and from top-K lists (recommendation)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np


def ranking_metrics(ranks: np.ndarray, hits: Iterable[int] = (1, 3, 10)) -> dict[str, float]:
    """MRR, MR and Hits@k of (possibly fractional, tie-averaged) ranks.

    A rank of 1.5 (tied with one other candidate) counts for Hits@2 but not Hits@1.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {"count": int(ranks.size)}
    if ranks.size == 0:
        out.update({"mrr": float("nan"), "mr": float("nan")})
        out.update({f"hits@{k}": float("nan") for k in hits})
        return out
    out["mrr"] = float(np.mean(1.0 / ranks))
    out["mr"] = float(np.mean(ranks))
    for k in hits:
        out[f"hits@{k}"] = float(np.mean(ranks <= k))
    return out


def both_directions(tail_ranks: np.ndarray, head_ranks: np.ndarray, hits: Iterable[int]) -> dict[str, Any]:
    """The metrics of both directions together, and of each under ``tails`` and ``heads``."""
    hits = list(hits)
    return {**ranking_metrics(np.concatenate([tail_ranks, head_ranks]), hits),
            "tails": ranking_metrics(tail_ranks, hits), "heads": ranking_metrics(head_ranks, hits)}


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

