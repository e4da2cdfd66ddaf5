"""Storage for training: which partitions a bucket needs, loading them and the bucket's
edges (one edge chunk of them), and loading the next bucket in a background thread while
the current one trains.

Partitions are read from a complete checkpoint version (a fresh run first writes
version 0 with the initial embeddings), so every load has one source and the
trainer only ever holds the partitions of the current bucket.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bigkg.checkpoint import CheckpointVersion, PartitionKey, PartitionState
from bigkg.edge_chunks import EdgeChunk
from bigkg.format import Manifest, read_bucket
from bigkg.schedule import Bucket


@dataclass(frozen=True)
class RelationGroup:
    """Relations sharing head and tail entity types: their edges are batched together,
    so a chunk's uniform negatives come from one partition of one type per side."""

    lhs_type: str
    rhs_type: str
    relations: tuple[int, ...]


def relation_groups(manifest: Manifest) -> list[RelationGroup]:
    by_types: dict[tuple[str, str], list[int]] = {}
    for k, rel in enumerate(manifest.relations):
        by_types.setdefault((rel.lhs_type, rel.rhs_type), []).append(k)
    return [RelationGroup(lt, rt, tuple(ids)) for (lt, rt), ids in by_types.items()]


def type_partition(manifest: Manifest, entity_type: str, part: int) -> int:
    """The partition of ``entity_type`` used in bucket row/column ``part``
    (an unpartitioned type has a single partition 0)."""
    return part if len(manifest.entity_type(entity_type).partition_counts) > 1 else 0


def all_partition_keys(manifest: Manifest) -> list[PartitionKey]:
    return [(et.name, p) for et in manifest.entity_types for p in range(len(et.partition_counts))]


def group_keys(manifest: Manifest, group: RelationGroup, bucket: Bucket) -> tuple[PartitionKey, PartitionKey]:
    return (
        (group.lhs_type, type_partition(manifest, group.lhs_type, bucket.lhs)),
        (group.rhs_type, type_partition(manifest, group.rhs_type, bucket.rhs)),
    )


def bucket_partition_keys(manifest: Manifest, bucket: Bucket) -> set[PartitionKey]:
    return {key for g in relation_groups(manifest) for key in group_keys(manifest, g, bucket)}


@dataclass
class GroupEdges:
    """The edges of one relation group in one bucket (local ids)."""

    group: RelationGroup
    lhs: Tensor
    rhs: Tensor
    rel: Tensor
    weight: Tensor | None

    def __len__(self) -> int:
        return int(self.lhs.shape[0])

    def to(self, device: torch.device) -> "GroupEdges":
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return GroupEdges(self.group, move(self.lhs), move(self.rhs), move(self.rel), move(self.weight))  # type: ignore[arg-type]


@dataclass
class LoadedBucket:
    bucket: Bucket
    edges: list[GroupEdges]
    partitions: dict[PartitionKey, PartitionState]

    @property
    def num_edges(self) -> int:
        return sum(len(e) for e in self.edges)


class BucketLoader:
    """Reads a bucket's edges (one chunk) and missing partitions; one background load at a time."""

    def __init__(self, root: str | Path, manifest: Manifest, *, pin_memory: bool, background: bool,
                 relation_weights: np.ndarray | None = None):
        self.root = Path(root)
        self.manifest = manifest
        self.relation_weights = relation_weights  # per relation id, multiplied into the edges' weights
        self.groups = relation_groups(manifest)
        self.pin_memory = pin_memory
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1) if background else None
        self._pending: tuple[Bucket, EdgeChunk, concurrent.futures.Future[LoadedBucket]] | None = None

    def load(self, bucket: Bucket, chunk: EdgeChunk, version: CheckpointVersion,
             skip: frozenset[PartitionKey]) -> LoadedBucket:
        """The edges of ``bucket`` in ``chunk`` and its partitions not in ``skip`` (already held), on the CPU."""
        edges = read_bucket(self.root, "train", bucket.lhs, bucket.rhs,
                            expected=self.manifest.bucket_count("train", bucket.lhs, bucket.rhs), chunk=chunk)
        rel = torch.from_numpy(edges.rel.astype(np.int64))
        lhs = torch.from_numpy(edges.lhs.astype(np.int64))
        rhs = torch.from_numpy(edges.rhs.astype(np.int64))
        weight = None if edges.weight is None else torch.from_numpy(edges.weight)
        if self.relation_weights is not None:
            by_relation = torch.from_numpy(self.relation_weights[edges.rel])
            weight = by_relation if weight is None else weight * by_relation
        groups = []
        for group in self.groups:
            if len(self.groups) == 1:
                parts = (lhs, rhs, rel, weight)
            else:
                mask = torch.from_numpy(np.isin(edges.rel, group.relations))
                parts = (lhs[mask], rhs[mask], rel[mask], None if weight is None else weight[mask])
            if len(parts[0]):
                groups.append(GroupEdges(group, *(self._pin(t) for t in parts)))
        partitions = {}
        for key in sorted(bucket_partition_keys(self.manifest, bucket) - skip):
            # To be pinned: mapped, so the one copy is the one into pinned memory.
            emb, ada = version.load_partition(*key, mmap=self.pin_memory)
            partitions[key] = PartitionState(self._pin(emb), self._pin(ada))
        return LoadedBucket(bucket, groups, partitions)

    def _pin(self, t: Tensor | None) -> Tensor | None:  # type: ignore[override]
        return t.pin_memory() if (t is not None and self.pin_memory) else t

    def prefetch(self, bucket: Bucket, chunk: EdgeChunk, version: CheckpointVersion,
                 skip: frozenset[PartitionKey]) -> None:
        """Start loading ``bucket``'s ``chunk`` in the background (no-op without a background thread)."""
        if self._pool is None:
            return
        self._pending = (bucket, chunk, self._pool.submit(self.load, bucket, chunk, version, skip))

    def get(self, bucket: Bucket, chunk: EdgeChunk, version: CheckpointVersion,
            skip: frozenset[PartitionKey]) -> LoadedBucket:
        """The prefetched load of ``bucket``'s ``chunk`` when it matches, else a load now."""
        pending, self._pending = self._pending, None
        if pending is not None:
            p_bucket, p_chunk, future = pending
            loaded = future.result()
            # Prefetched partitions were not in training meanwhile (the skip set
            # at prefetch time was the bucket then training), so they are current.
            if (p_bucket, p_chunk) == (bucket, chunk):
                loaded.partitions = {k: v for k, v in loaded.partitions.items() if k not in skip}
                if bucket_partition_keys(self.manifest, bucket) - skip <= set(loaded.partitions):
                    return loaded
        return self.load(bucket, chunk, version, skip)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
