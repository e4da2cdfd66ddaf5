"""numba kernels of the hot per-edge loops: random splits, routing to buckets, grouping."""

from __future__ import annotations

import numba
import numpy as np

SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}


@numba.njit(cache=True)
def random_split(first_edge: int, n: int, seed: int, valid_frac: float, test_frac: float) -> np.ndarray:
    """Split ids for edges ``first_edge .. first_edge+n`` of the input stream.

    Each edge's split is a pure function of (seed, its position in the input),
    so both passes, and every rerun, agree without storing anything.
    """
    out = np.empty(n, dtype=np.int8)
    key = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    for k in range(n):
        z = key + np.uint64(first_edge + k) * np.uint64(0xD1B54A32D192ED03)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        u = (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)
        if u < test_frac:
            out[k] = 2
        elif u < test_frac + valid_frac:
            out[k] = 1
        else:
            out[k] = 0
    return out


SELF_LOOP, RARE = -1, -2  # keys of dropped edges


@numba.njit(cache=True)
def route(head, tail, split, ent_part, ent_local, num_partitions, drop_self_loops, key, lhs, rhs):
    """Bucket key (split * P * P + i * P + j) and local ids of every edge.

    A dropped self-loop gets key SELF_LOOP, an edge with a dropped entity (partition -1)
    key RARE.
    """
    pp = num_partitions * num_partitions
    for k in range(len(head)):
        h = head[k]
        t = tail[k]
        if drop_self_loops and h == t:
            key[k] = SELF_LOOP
            continue
        if ent_part[h] < 0 or ent_part[t] < 0:
            key[k] = RARE
            continue
        key[k] = split[k] * pp + ent_part[h] * num_partitions + ent_part[t]
        lhs[k] = ent_local[h]
        rhs[k] = ent_local[t]


@numba.njit(cache=True)
def group_order(key: np.ndarray, num_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """A stable counting sort by key: (order, counts per key); key -1 rows are left out."""
    counts = np.zeros(num_keys, dtype=np.int64)
    for k in range(len(key)):
        if key[k] >= 0:
            counts[key[k]] += 1
    pos = np.empty(num_keys, dtype=np.int64)
    total = 0
    for b in range(num_keys):
        pos[b] = total
        total += counts[b]
    order = np.empty(total, dtype=np.int64)
    for k in range(len(key)):
        b = key[k]
        if b >= 0:
            order[pos[b]] = k
            pos[b] += 1
    return order, counts


@numba.njit(cache=True)
def add_counts(ids: np.ndarray, counts: np.ndarray) -> None:
    for k in range(len(ids)):
        counts[ids[k]] += 1


def first_occurrences(lhs: np.ndarray, rel: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Mask keeping the first copy of every (lhs, rel, rhs) triple, in input order."""
    n = len(lhs)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    # The row index as the last key puts the earliest copy first among equals.
    order = np.lexsort((np.arange(n), rhs, rel, lhs))
    a, b = order[:-1], order[1:]
    dup = (lhs[a] == lhs[b]) & (rel[a] == rel[b]) & (rhs[a] == rhs[b])
    keep[b[dup]] = False
    return keep
