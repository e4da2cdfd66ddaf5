"""Link-prediction metrics per relation and per relation category (1-1, 1-N, N-1, N-N).

A single MRR hides where a model fails: on FB15k-237 the tails of N-1 relations are easy and
their heads hard. LibKGE and PyKEEN break results down the same way. The categories follow
Bordes et al. (2013, TransE): from the training edges of relation r, tph = edges / distinct
heads and hpt = edges / distinct tails; "1" on a side when the average is below 1.5, "N"
otherwise: 1-N means one head with many tails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bigkg.evaluation.filters import Triples, filter_key, filter_stride, iter_split
from bigkg.evaluation.metrics import QueryRanks, both_directions
from bigkg.format import Manifest

CATEGORIES = ("1-1", "1-N", "N-1", "N-N")
MANY_THRESHOLD = 1.5


def relation_categories(root: str | Path, manifest: Manifest) -> list[str | None]:
    """Each relation's category from its training edges; None for a relation without any.

    Distinct heads are counted over the buckets of one head partition at a time (a head of
    partition i occurs only in buckets (i, *)), and tails likewise per tail partition, so memory
    holds one partition's row (or column) of buckets, not every training edge.
    """
    num_rels = len(manifest.relations)
    stride = filter_stride(manifest)
    edges = np.zeros(num_rels, dtype=np.int64)
    heads = np.zeros(num_rels, dtype=np.int64)
    tails = np.zeros(num_rels, dtype=np.int64)
    for part in range(manifest.num_partitions):
        keys = []
        for t in iter_split(root, manifest, "train", buckets=lambda i, j: i == part):
            edges += np.bincount(t.rels, minlength=num_rels)
            keys.append(filter_key(t.rels, t.heads, stride))
        heads += _distinct_per_relation(keys, stride, num_rels)
        keys = [filter_key(t.rels, t.tails, stride) for t in iter_split(root, manifest, "train", buckets=lambda i, j: j == part)]
        tails += _distinct_per_relation(keys, stride, num_rels)
    categories: list[str | None] = []
    for e, h, t in zip(edges, heads, tails):
        if e == 0:
            categories.append(None)
            continue
        many_tails, many_heads = e / h >= MANY_THRESHOLD, e / t >= MANY_THRESHOLD
        categories.append(f"{'N' if many_heads else '1'}-{'N' if many_tails else '1'}")
    return categories


def _distinct_per_relation(keys: list[np.ndarray], stride: int, num_rels: int) -> np.ndarray:
    """How many distinct (relation, entity) keys each relation has."""
    unique = np.unique(np.concatenate([np.empty(0, np.int64), *keys]))
    return np.bincount(unique // stride, minlength=num_rels)


def breakdown(triples: Triples, ranks: dict[str, QueryRanks], relation_names: list[str],
              categories: list[str | None], hits: Iterable[int]) -> dict[str, Any]:
    """``relations``: name -> category and metrics of its triples (both directions, tails, heads);
    ``categories``: the same over the relations of each category, with how many of its relations
    the split has. A relation without training edges has no category."""
    hits = list(hits)

    def metrics(mask: np.ndarray) -> dict[str, Any]:
        return both_directions(ranks["rhs"][mask], ranks["lhs"][mask], hits)

    relations = {}
    for r in np.unique(triples.rels).tolist():
        relations[relation_names[r]] = {"category": categories[r], **metrics(triples.rels == r)}
    by_category = {}
    for category in CATEGORIES:
        members = [r for r, c in enumerate(categories) if c == category]
        mask = np.isin(triples.rels, members)
        if mask.any():
            by_category[category] = {"relations": int(np.unique(triples.rels[mask]).size), **metrics(mask)}
    return {"relations": relations, "categories": by_category}
