"""Edge chunks: a bucket's edges split into parts trained in separate passes (PBG's num_edge_chunks).

An epoch of C chunks is C passes over the buckets; pass c trains chunk c of every
bucket. Only one chunk of a bucket's edges is ever in memory, which bounds the memory
that edges take however large a bucket grows (``training.max_edges_per_chunk``), and
partitions meet C times per epoch rather than once.

A chunk is not one stretch of the bucket file. The file is cut into C × S stripes and
chunk c is stripes c, c + C, c + 2C, ...: each chunk samples the whole bucket, so an
input sorted by relation or by head still gives every chunk its share of each, while
every read stays a contiguous range of the file. S grows with the bucket so that a
stripe holds about ``STRIPE_EDGES`` edges; chunk sizes differ by at most one edge.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import numpy as np

STRIPE_EDGES = 1 << 16


class EdgeChunk(NamedTuple):
    """Chunk ``index`` of a bucket split into ``count`` chunks."""

    index: int
    count: int

    def ranges(self, num_edges: int) -> list[tuple[int, int]]:
        """The [start, stop) row ranges of this chunk in a bucket of ``num_edges`` edges, ascending."""
        if self.count == 1:
            return [(0, num_edges)] if num_edges else []
        chunk_sizes = np.diff(np.arange(self.count + 1, dtype=np.int64) * num_edges // self.count)
        stripes = max(1, num_edges // (self.count * STRIPE_EDGES))
        s = np.arange(stripes + 1, dtype=np.int64)[:, None]
        # lengths[s, c]: stripe s of chunk c; the file holds them in row-major order.
        lengths = np.diff(s * chunk_sizes[None, :] // stripes, axis=0)
        starts = (np.cumsum(lengths.ravel()) - lengths.ravel()).reshape(lengths.shape)
        return [(int(a), int(a + n)) for a, n in zip(starts[:, self.index], lengths[:, self.index]) if n]

    def size(self, num_edges: int) -> int:
        """How many of a bucket's ``num_edges`` edges this chunk holds."""
        return (self.index + 1) * num_edges // self.count - self.index * num_edges // self.count


WHOLE_BUCKET = EdgeChunk(0, 1)


def edge_chunk_count(bucket_sizes: Iterable[int], num_edge_chunks: int, max_edges_per_chunk: int) -> int:
    """Chunks per bucket: ``num_edge_chunks`` when set, else the fewest that keep every
    bucket's chunks within ``max_edges_per_chunk`` edges (0: no limit, one chunk)."""
    if num_edge_chunks:
        return num_edge_chunks
    if not max_edges_per_chunk:
        return 1
    return max(1, math.ceil(max(bucket_sizes, default=0) / max_edges_per_chunk))
