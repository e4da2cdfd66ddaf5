"""Known true triples, in global ids, for filtered ranking.

Entity ids inside a dataset are (partition, local id) per entity type. The
evaluator works with *global* ids: within one entity type, partition p's rows
come after those of partitions 0..p-1, so ``gid = offsets[p] + local``.

The filter index holds triples of train+valid+test twice: keyed by
(relation, head) with the known tails, and keyed by (relation, tail) with the
known heads. Each direction is a sorted int64 key array plus CSR
(``indptr``/``values``), built with numpy sorts: about 24 bytes per triple and
direction, with no Python object per key, and lookups are vectorised
``searchsorted`` calls. Evaluation needs the known answers of its own queries
only: ``QueryKeys`` picks, bucket by bucket, the triples that answer one of them,
so memory holds those rather than every edge of the graph. Ranking scores the
candidates one partition at a time, so its index keys each set by the partition
of its answers too: a query batch looks up each known answer once, not once per
partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from bigkg.format import SPLITS, Manifest, read_bucket


def entity_offsets(manifest: Manifest) -> dict[str, np.ndarray]:
    """Per entity type, ``P + 1`` cumulative row offsets of its partitions."""
    return {et.name: et.offsets for et in manifest.entity_types}


class Triples(NamedTuple):
    """Triples in global ids (int64); heads/tails index their relation's entity types."""

    heads: np.ndarray
    rels: np.ndarray
    tails: np.ndarray

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.heads.shape[0])

    def select(self, mask: np.ndarray) -> "Triples":
        return Triples(self.heads[mask], self.rels[mask], self.tails[mask])


def iter_split(root: str | Path, manifest: Manifest, split: str,
               buckets: Callable[[int, int], bool] | None = None) -> Iterator[Triples]:
    """The edges of ``split``, one bucket at a time, in global ids; only the buckets (i, j) for
    which ``buckets(i, j)`` holds, when given."""
    offsets = entity_offsets(manifest)
    lhs_types = [r.lhs_type for r in manifest.relations]
    rhs_types = [r.rhs_type for r in manifest.relations]
    for key in sorted(manifest.bucket_counts.get(split, {})):
        i, j = (int(x) for x in key.split("_"))
        if buckets is not None and not buckets(i, j):
            continue
        edges = read_bucket(Path(root), split, i, j, expected=manifest.bucket_counts[split][key])
        rel = edges.rel.astype(np.int64)
        # Partition i of each edge's head type, partition j of its tail type.
        lhs_base = np.array([offsets[t][i] for t in lhs_types], dtype=np.int64)
        rhs_base = np.array([offsets[t][j] for t in rhs_types], dtype=np.int64)
        yield Triples(lhs_base[rel] + edges.lhs.astype(np.int64), rel, rhs_base[rel] + edges.rhs.astype(np.int64))


def by_entity_type(manifest: Manifest, triples: Triples) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Per entity type: (name, mask of triples whose head has it, mask of those whose tail has it)."""
    names = [et.name for et in manifest.entity_types]
    lhs_code = np.array([names.index(r.lhs_type) for r in manifest.relations], dtype=np.int64)[triples.rels]
    rhs_code = np.array([names.index(r.rhs_type) for r in manifest.relations], dtype=np.int64)[triples.rels]
    for code, name in enumerate(names):
        yield name, lhs_code == code, rhs_code == code


def answer_partitions(manifest: Manifest, triples: Triples) -> tuple[np.ndarray, np.ndarray]:
    """The partition of each triple's head and of its tail, within their entity types."""
    head_parts = np.zeros(len(triples), dtype=np.int64)
    tail_parts = np.zeros(len(triples), dtype=np.int64)
    for name, heads, tails in by_entity_type(manifest, triples):
        offsets = manifest.entity_type(name).offsets
        head_parts[heads] = np.searchsorted(offsets, triples.heads[heads], side="right") - 1
        tail_parts[tails] = np.searchsorted(offsets, triples.tails[tails], side="right") - 1
    return head_parts, tail_parts


def concatenate(parts: list[Triples]) -> Triples:
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return Triples(empty, empty, empty)
    return Triples(*(np.concatenate([getattr(p, f) for p in parts]) for f in Triples._fields))


def read_split(root: str | Path, manifest: Manifest, split: str) -> Triples:
    """All edges of ``split`` from the dataset's buckets, in global ids."""
    return concatenate(list(iter_split(root, manifest, split)))


@dataclass
class KeyedSets:
    """A map int64 key -> sorted set of int64 values, as sorted keys + CSR."""

    keys: np.ndarray  # sorted, unique
    indptr: np.ndarray  # len(keys) + 1
    values: np.ndarray  # values of key k: values[indptr[k]:indptr[k+1]], sorted, unique

    @classmethod
    def build(cls, keys: np.ndarray, values: np.ndarray) -> "KeyedSets":
        keys = np.asarray(keys, dtype=np.int64)
        values = np.asarray(values, dtype=np.int64)
        order = np.lexsort((values, keys))
        keys, values = keys[order], values[order]
        if keys.size:
            # Drop duplicate (key, value) pairs: a triple listed in two splits.
            keep = np.ones(keys.size, dtype=bool)
            keep[1:] = (keys[1:] != keys[:-1]) | (values[1:] != values[:-1])
            keys, values = keys[keep], values[keep]
        unique, starts = np.unique(keys, return_index=True)
        indptr = np.append(starts, keys.size).astype(np.int64)
        return cls(unique, indptr, values)

    def __len__(self) -> int:
        return int(self.values.size)

    def lookup(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (query position, value) pairs for the given keys, as two flat arrays."""
        queries = np.asarray(queries, dtype=np.int64)
        if self.keys.size == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        pos = np.minimum(np.searchsorted(self.keys, queries), self.keys.size - 1)
        found = self.keys[pos] == queries
        starts = np.where(found, self.indptr[pos], 0)
        lengths = np.where(found, self.indptr[pos + 1] - self.indptr[pos], 0)
        total = int(lengths.sum())
        query_index = np.repeat(np.arange(queries.size, dtype=np.int64), lengths)
        # Position inside each query's run, added to that run's start.
        run_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        value_index = np.repeat(starts, lengths) + (np.arange(total, dtype=np.int64) - run_start)
        return query_index, self.values[value_index]


def filter_stride(manifest: Manifest) -> int:
    """Keys are rel * stride + entity (times P plus the answers' partition in a partitioned
    index); the stride covers the largest entity type."""
    stride = max(max((et.count for et in manifest.entity_types), default=1), 1)
    if len(manifest.relations) * stride * manifest.num_partitions >= 2**63:
        raise OverflowError(f"{len(manifest.relations)} relations x {stride} entities x {manifest.num_partitions} "
                            "partitions overflow int64 filter keys")
    return stride


def filter_key(rels: np.ndarray, entities: np.ndarray, stride: int) -> np.ndarray:
    return np.asarray(rels, dtype=np.int64) * stride + np.asarray(entities, dtype=np.int64)


class FilterIndex:
    """Known tails per (relation, head) and known heads per (relation, tail); with a
    ``manifest``, each set split by the partition its answers lie in."""

    def __init__(self, triples: Triples, stride: int, manifest: Manifest | None = None):
        self.stride = stride
        self.num_parts = 1 if manifest is None else manifest.num_partitions
        head_parts, tail_parts = (0, 0) if manifest is None else answer_partitions(manifest, triples)
        self.tails = KeyedSets.build(self._key(triples.rels, triples.heads, tail_parts), triples.tails)
        self.heads = KeyedSets.build(self._key(triples.rels, triples.tails, head_parts), triples.heads)

    def _key(self, rels: np.ndarray, anchors: np.ndarray, parts: np.ndarray | int) -> np.ndarray:
        """``filter_key`` times the partition count, plus the answers' partition(s)."""
        return filter_key(rels, anchors, self.stride) * self.num_parts + parts

    def known_answers(self, side: str, anchors: np.ndarray, rels: np.ndarray,
                      part: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(query position, answer gid) pairs: known tails (side "rhs") or heads ("lhs").

        With ``part``, those in that partition of the answers' entity type; an index not
        split by partition gives them all, and the caller keeps the ones it ranks.
        """
        sets = self.tails if side == "rhs" else self.heads
        if part is not None and self.num_parts > 1:
            return sets.lookup(self._key(rels, anchors, part))
        found = [sets.lookup(self._key(rels, anchors, p)) for p in range(self.num_parts)]
        return np.concatenate([q for q, _ in found]), np.concatenate([a for _, a in found])

    @classmethod
    def from_dataset(cls, root: str | Path, manifest: Manifest, splits: tuple[str, ...] = SPLITS) -> "FilterIndex":
        """Every triple of ``splits``, split by partition."""
        return cls(concatenate([read_split(root, manifest, s) for s in splits]), filter_stride(manifest), manifest)

    @classmethod
    def for_queries(cls, root: str | Path, manifest: Manifest, keys: "QueryKeys") -> "FilterIndex":
        """The known answers of the queries behind ``keys`` in train+valid+test, read bucket by bucket."""
        return cls(concatenate([keys.answering(part) for s in SPLITS for part in iter_split(root, manifest, s)]), keys.stride)


class QueryKeys:
    """The (relation, head) keys of tail queries and the (relation, tail) keys of head queries."""

    def __init__(self, stride: int, rel_heads: np.ndarray | None = None, rel_tails: np.ndarray | None = None):
        self.stride = stride
        self.rel_heads = np.unique(rel_heads) if rel_heads is not None else np.empty(0, np.int64)
        self.rel_tails = np.unique(rel_tails) if rel_tails is not None else np.empty(0, np.int64)

    @classmethod
    def of_triples(cls, triples: Triples, stride: int) -> "QueryKeys":
        """Both directions of every triple: its tail given its head, its head given its tail."""
        return cls(stride, filter_key(triples.rels, triples.heads, stride), filter_key(triples.rels, triples.tails, stride))

    @classmethod
    def of_anchors(cls, side: str, anchors: np.ndarray, rels: np.ndarray, stride: int) -> "QueryKeys":
        """Tails of (anchor, rel) for side "rhs", heads of (rel, anchor) for "lhs"."""
        keys = filter_key(rels, anchors, stride)
        return cls(stride, rel_heads=keys) if side == "rhs" else cls(stride, rel_tails=keys)

    def answering(self, triples: Triples) -> Triples:
        """The triples that answer some query: the same (relation, head) or (relation, tail).
        A ``FilterIndex`` of them answers those queries exactly as one of every triple does."""
        mask = _member(filter_key(triples.rels, triples.heads, self.stride), self.rel_heads)
        mask |= _member(filter_key(triples.rels, triples.tails, self.stride), self.rel_tails)
        return triples.select(mask)


def _member(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    if sorted_unique.size == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_unique, values), sorted_unique.size - 1)
    return sorted_unique[pos] == values
