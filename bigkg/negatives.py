"""Batched negative sampling (PBG): which candidates each positive is scored against.

A batch of positives is cut into chunks of C. In ``batched`` mode the
candidates of a chunk, on each side, are the chunk's own C positives followed
by U entities drawn uniformly once per chunk from the partition of the right
entity type (the training step gathers them in that layout); positive k of the chunk is candidate k, so each positive is
scored against C−1 + U negatives with one (C×d)·(d×(C+U)) product. In ``all``
mode the candidates are every entity of the partition and the positive is
its own local id. With ``anchor_negatives`` a batched chunk's candidates end
with one more per positive: its own anchor (the head as a tail candidate, the
tail as a head candidate), which uniform draws almost never hit but
evaluation ranks, and which models of symmetric relations otherwise learn to
rank first. With P > 1 ``foreign_negatives`` adds, per bucket and side, rows
drawn (``foreign_rows``) from the partitions that are not in memory, read from
the last checkpoint; their gradients wait for their partition to be loaded
(``bigkg.training.foreign``): in-partition negatives never contrast a query
with entities of other partitions, which evaluation ranks too.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class ChunkPlan(NamedTuple):
    """How a batch of ``size`` positives splits into ``num_chunks`` chunks of ``chunk_size``.

    The last ``size - num_chunks * chunk_size`` positives form one smaller chunk.
    """

    size: int
    chunk_size: int

    @property
    def num_chunks(self) -> int:
        return self.size // self.chunk_size

    @property
    def total_chunks(self) -> int:
        return self.num_chunks + (self.size > self.full)

    @property
    def full(self) -> int:
        return self.num_chunks * self.chunk_size

    def blocks(self) -> list[tuple[int, int, int]]:
        """(start, number of chunks, chunk size) of the full chunks and the remainder."""
        out = []
        if self.num_chunks:
            out.append((0, self.num_chunks, self.chunk_size))
        if self.size > self.full:
            out.append((self.full, 1, self.size - self.full))
        return out


def uniform_negatives(num_chunks: int, count: int, num_entities: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """[num_chunks, count] local ids drawn uniformly (with replacement) from a partition."""
    return torch.randint(0, num_entities, (num_chunks, count), generator=generator, device=device)


def positive_mask(scores: Tensor, positive_index: Tensor) -> Tensor:
    """Boolean mask [..., N, K] that is True where a row's candidate is its own positive."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(-1, positive_index.unsqueeze(-1).expand(*scores.shape[:-1], 1), True)


def chunk_positive_index(num_chunks: int, chunk_size: int, device: torch.device) -> Tensor:
    """Positive k of each chunk is candidate k: [num_chunks, chunk_size]."""
    return torch.arange(chunk_size, device=device).expand(num_chunks, chunk_size)


def foreign_rows(offsets: np.ndarray, exclude: int, count: int, rng: np.random.Generator) -> dict[int, Tensor]:
    """``count`` rows drawn uniformly (with replacement) from every partition but ``exclude``.

    ``offsets``: the P + 1 cumulative partition sizes of one entity type. Returns
    partition -> sorted local row ids (only partitions drawn from).
    """
    sizes = np.diff(offsets)
    others = int(sizes.sum() - sizes[exclude])
    if others == 0 or count == 0:
        return {}
    flat = rng.integers(0, others, count)
    # Skip the excluded partition's range: positions at or past its start move up by its size.
    flat = flat + (flat >= offsets[exclude]) * sizes[exclude]
    parts = np.searchsorted(offsets, flat, side="right") - 1
    return {int(p): torch.from_numpy(np.sort(flat[parts == p] - offsets[p])) for p in np.unique(parts)}
