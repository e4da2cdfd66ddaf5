"""Assignment of the entities of one type to partitions, and their local ids.

``random``: a seeded random permutation cut into P equal parts (sizes differ by
at most one). ``degree``: entities in decreasing degree (ties in seeded random
order) each go to the partition with the smallest degree sum so far, which
evens out the edge counts of the buckets.

Local ids within a partition follow the entities' global order (order of
first appearance in the input), so they are deterministic.
"""

from __future__ import annotations

import numba
import numpy as np

ASSIGNMENTS = ("random", "degree")


@numba.njit(cache=True)
def _greedy(order: np.ndarray, degree: np.ndarray, num_partitions: int) -> np.ndarray:
    part = np.empty(len(degree), dtype=np.int32)
    load = np.zeros(num_partitions, dtype=np.int64)
    size = np.zeros(num_partitions, dtype=np.int64)
    for e in order:
        best = 0
        for p in range(1, num_partitions):
            # Least loaded first; among equals the smaller partition.
            if load[p] < load[best] or (load[p] == load[best] and size[p] < size[best]):
                best = p
        part[e] = best
        load[best] += degree[e]
        size[best] += 1
    return part


def assign_partitions(
    degree: np.ndarray, num_partitions: int, method: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(partition, local id) of each entity, given its degree."""
    n = len(degree)
    if method == "random":
        part = np.empty(n, dtype=np.int32)
        part[rng.permutation(n)] = (np.arange(n, dtype=np.int64) * num_partitions // max(n, 1)).astype(np.int32)
    elif method == "degree":
        tiebreak = rng.permutation(n)
        order = np.lexsort((tiebreak, -degree.astype(np.int64)))
        part = _greedy(order, degree.astype(np.int64), num_partitions)
    else:
        raise ValueError(f"unknown assignment {method!r}; choose from {ASSIGNMENTS}")
    # Stable sort by partition keeps global order inside each partition.
    order = np.argsort(part, kind="stable")
    counts = np.bincount(part, minlength=num_partitions)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    local = np.empty(n, dtype=np.int64)
    local[order] = np.arange(n, dtype=np.int64) - starts[part[order]]
    return part, local
