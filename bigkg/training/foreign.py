"""Foreign negatives: rows of partitions that are not in memory, used as negatives of a bucket.

With P > 1 a bucket's in-partition negatives never contrast a query with
entities of the other partitions, and those entities are never pushed down for
it, yet evaluation ranks them all. A ``ForeignSample`` is a few rows drawn from
the other partitions (read from the last checkpoint), scored by every batch of
the bucket like any negative. Their gradients are summed over the bucket and
kept in ``DeferredUpdates`` until their partition is next loaded, where the
row-wise Adagrad applies them: each entity still gets its push-down, one
bucket or more late, and no partition outside the bucket is ever written.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from bigkg.checkpoint import PartitionKey


class ForeignSample:
    """A pool of rows [F, d] of one entity type drawn from several partitions, and their summed gradient.

    ``per_batch``: rows each batch draws from the pool (with replacement); 0
    scores the whole pool in every batch.
    """

    def __init__(self, entity_type: str, origin: dict[int, Tensor], rows: Tensor, per_batch: int = 0):
        self.entity_type = entity_type
        self.origin = origin  # partition -> local ids, in the order of ``rows``
        self.rows = rows
        self.per_batch = per_batch
        self.grad = torch.zeros_like(rows)
        self._lock = threading.Lock()  # Hogwild workers add concurrently

    def __reduce__(self):
        """Sent to a worker process: the same pool, with a gradient of its own (starting at zero)."""
        return ForeignSample, (self.entity_type, self.origin, self.rows, self.per_batch)

    def draw(self, generator: torch.Generator) -> tuple[Tensor | None, Tensor]:
        """One batch's candidates: (their positions in the pool, None for all of it; a leaf of their rows)."""
        if not self.per_batch:
            return None, self.rows.detach().requires_grad_()
        picks = torch.randint(0, self.rows.shape[0], (self.per_batch,), generator=generator, device=self.rows.device)
        return picks, self.rows.index_select(0, picks).requires_grad_()

    def add_gradient(self, picks: Tensor | None, grad: Tensor | None) -> None:
        """Add a batch's gradient of the candidates ``draw`` gave it."""
        if grad is None:
            return
        with self._lock:
            if picks is None:
                self.grad += grad
            else:
                self.grad.index_add_(0, picks, grad)


class DeferredUpdates:
    """Gradients of foreign rows waiting for their partition to be in memory.

    Checkpoints carry them (``snapshot``, ``restore``), so a resumed run still
    applies the gradients of buckets finished before the interruption.
    """

    def __init__(self) -> None:
        self._pending: dict[PartitionKey, list[tuple[Tensor, Tensor]]] = {}

    def add(self, sample: ForeignSample) -> None:
        start = 0
        for part, ids in sample.origin.items():
            end = start + ids.shape[0]
            self._pending.setdefault((sample.entity_type, part), []).append((ids, sample.grad[start:end].cpu()))
            start = end

    def pop(self, key: PartitionKey, device: torch.device) -> tuple[list[Tensor], list[Tensor]]:
        """(ids, gradients) pieces for the partition ``key``, removed from the waiting list."""
        pieces = self._pending.pop(key, [])
        return [ids.to(device) for ids, _ in pieces], [grad.to(device) for _, grad in pieces]

    def snapshot(self) -> list[tuple[str, int, Tensor, Tensor]]:
        """(entity type, partition, distinct row ids, their summed gradients) per waiting partition.

        Each partition's pieces are merged in place first: the same update once
        applied, and the memory held stays within the partition's rows.
        """
        for key, pieces in self._pending.items():
            if len(pieces) > 1:
                self._pending[key] = [_merged(pieces)]
        return [(entity_type, part, *pieces[0]) for (entity_type, part), pieces in self._pending.items()]

    def restore(self, entries: list[tuple[str, int, Tensor, Tensor]]) -> None:
        """Replace the waiting gradients by a ``snapshot``."""
        self._pending = {(entity_type, int(part)): [(ids, grads)] for entity_type, part, ids, grads in entries}


def _merged(pieces: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    ids = torch.cat([ids for ids, _ in pieces])
    grads = torch.cat([grad for _, grad in pieces])
    rows, inverse = torch.unique(ids, return_inverse=True)
    return rows, torch.zeros(rows.shape[0], grads.shape[1], dtype=grads.dtype).index_add_(0, inverse, grads)
