"""Bucket scheduling: in which order the P×P buckets of a pass are trained.

A pass trains every bucket once; an epoch is one pass, or one per edge chunk when
buckets are split (``training.num_edge_chunks``: pass c trains chunk c of each).

One protocol, ``BucketScheduler``, serves both the single-process trainer
(``LocalScheduler``, a fixed order per pass) and distributed workers (the lock
server client in ``bigkg.distributed``), so the training loop is the same code
in both modes. The ordering rules live here once:

* inside-out (PBG's default): buckets are grouped by growing partition index,
  so each new bucket touches at most one partition not seen before;
* random; affinity (each next bucket shares a partition with the previous one
  when possible, saving a load);
* PBG's first-epoch rule: in the first pass a bucket is trained only if one of
  its partitions was already trained (the very first bucket excepted), which
  keeps every partition in one embedding space.
"""

from __future__ import annotations

import random
from typing import Iterable, NamedTuple, Protocol


class Bucket(NamedTuple):
    lhs: int
    rhs: int

    def partitions(self) -> set[int]:
        return {self.lhs, self.rhs}


ORDERS = ("inside_out", "outside_in", "random", "affinity")


class BucketScheduler(Protocol):
    """What the training loop asks for buckets; local and distributed alike."""

    def start_pass(self, pass_index: int, finished: Iterable[Bucket] = ()) -> None:
        """Begin pass ``pass_index`` (counted over the whole run); ``finished`` are its buckets
        already trained (on resume)."""

    def acquire(self) -> Bucket | None:
        """The next bucket to train, or None when the pass has nothing left."""

    def release(self, bucket: Bucket, *, done: bool) -> None:
        """Give ``bucket`` back; ``done`` marks it trained for this pass."""


def all_buckets(num_partitions: int) -> list[Bucket]:
    return [Bucket(i, j) for i in range(num_partitions) for j in range(num_partitions)]


def inside_out(num_partitions: int) -> list[Bucket]:
    """(0,0); (1,0),(0,1),(1,1); (2,0),(0,2),(2,1),(1,2),(2,2); ..."""
    order: list[Bucket] = []
    for p in range(num_partitions):
        for q in range(p):
            order += [Bucket(p, q), Bucket(q, p)]
        order.append(Bucket(p, p))
    return order


def is_eligible(bucket: Bucket, trained_partitions: set[int], first_pass: bool) -> bool:
    """PBG's first-epoch rule: a bucket needs one already-trained partition."""
    if not first_pass or not trained_partitions:
        return True
    return bool(bucket.partitions() & trained_partitions)


def affinity_choice(candidates: list[Bucket], held: set[int], rng: random.Random) -> Bucket:
    """Prefer the candidate sharing the most partitions with ``held``; ties at random."""
    best = max(len(b.partitions() & held) for b in candidates)
    return rng.choice([b for b in candidates if len(b.partitions() & held) == best])


def pass_order(num_partitions: int, order: str, *, pass_index: int, seed: int, first_pass: bool) -> list[Bucket]:
    """The full bucket order of one pass.

    Partition labels are permuted per pass (seeded) so that no partition is
    always trained first; the result honours the first-epoch rule when asked.
    """
    if order not in ORDERS:
        raise ValueError(f"bucket order {order!r} is not one of {ORDERS}")
    rng = random.Random(seed * 1_000_003 + pass_index)
    perm = list(range(num_partitions))
    rng.shuffle(perm)
    if order in ("inside_out", "outside_in"):
        base = inside_out(num_partitions)
        if order == "outside_in":
            base.reverse()
        candidates = [Bucket(perm[b.lhs], perm[b.rhs]) for b in base]
    else:
        candidates = all_buckets(num_partitions)
        rng.shuffle(candidates)

    result: list[Bucket] = []
    trained: set[int] = set()
    held: set[int] = set()
    remaining = list(candidates)
    while remaining:
        eligible = [b for b in remaining if is_eligible(b, trained, first_pass)]
        if order == "affinity":
            chosen = affinity_choice(eligible, held, rng)
        else:
            chosen = eligible[0]  # keep the base order wherever the rule allows
        remaining.remove(chosen)
        result.append(chosen)
        trained |= chosen.partitions()
        held = chosen.partitions()
    return result


class LocalScheduler:
    """Single-process scheduler: walks ``pass_order``, skipping finished buckets."""

    def __init__(self, num_partitions: int, order: str = "inside_out", seed: int = 0):
        self.num_partitions = num_partitions
        self.order = order
        self.seed = seed
        self._queue: list[Bucket] = []

    def start_pass(self, pass_index: int, finished: Iterable[Bucket] = ()) -> None:
        done = set(finished)
        order = pass_order(self.num_partitions, self.order, pass_index=pass_index, seed=self.seed,
                           first_pass=pass_index == 0)
        self._queue = [b for b in order if b not in done]

    def acquire(self) -> Bucket | None:
        return self._queue.pop(0) if self._queue else None

    def release(self, bucket: Bucket, *, done: bool) -> None:
        if not done:
            self._queue.insert(0, bucket)

    def peek(self) -> Bucket | None:
        """The bucket after the current one, for background prefetching."""
        return self._queue[0] if self._queue else None
