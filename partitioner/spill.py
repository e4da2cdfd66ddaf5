"""Bounded-memory bucketing: an external counting sort through one spill file.

Mapped edges collect in fixed buffers. When the buffers are full, they are
grouped by bucket key (a stable counting sort, so input order is kept inside a
bucket) and appended to the spill file as one *run*: the lhs, rhs, rel (and
weight) columns one after the other. Only each run's per-key counts stay in
memory. Converting a bucket then reads its segment of every run, in run
order, and appends it to the bucket's HDF5 file, so every bucket file is
written in blocks no larger than one run and no bucket is ever held whole
(except with deduplication, which must see a bucket's edges together).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from bigkg.format import BucketWriter
from partitioner.kernels import first_occurrences, group_order

_ALIGN = 8


class SpillFile:
    def __init__(self, path: Path, num_keys: int, id_dtype: str, has_weight: bool, capacity: int) -> None:
        self.path = Path(path)
        self.num_keys = num_keys
        self.id_dtype = np.dtype(id_dtype)
        self.has_weight = has_weight
        self._fh = open(self.path, "wb+")
        self._key = np.empty(capacity, dtype=np.int32)
        self._lhs = np.empty(capacity, dtype=self.id_dtype)
        self._rhs = np.empty(capacity, dtype=self.id_dtype)
        self._rel = np.empty(capacity, dtype=np.int32)
        self._weight = np.empty(capacity if has_weight else 0, dtype=np.float32)
        self._fill = 0
        # Per run: (file offset, edges in the run, counts per key, first row of each key)
        self._runs: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self.totals = np.zeros(num_keys, dtype=np.int64)

    def add(self, key: np.ndarray, lhs: np.ndarray, rhs: np.ndarray, rel: np.ndarray, weight: np.ndarray | None) -> None:
        start = 0
        while start < len(key):
            take = min(len(key) - start, len(self._key) - self._fill)
            dst = slice(self._fill, self._fill + take)
            src = slice(start, start + take)
            self._key[dst] = key[src]
            self._lhs[dst] = lhs[src]
            self._rhs[dst] = rhs[src]
            self._rel[dst] = rel[src]
            if self.has_weight:
                self._weight[dst] = weight[src]
            self._fill += take
            start += take
            if self._fill == len(self._key):
                self.flush()

    def flush(self) -> None:
        """Write the buffered edges as one run; call before reading segments."""
        if self._fill == 0:
            return
        order, counts = group_order(self._key[: self._fill], self.num_keys)
        offset = self._fh.seek(0, 2)
        columns = [self._lhs, self._rhs, self._rel] + ([self._weight] if self.has_weight else [])
        for col in columns:
            self._fh.write(col[order].tobytes())
            pad = -self._fh.tell() % _ALIGN
            self._fh.write(b"\0" * pad)
        self._runs.append((offset, len(order), counts, np.cumsum(counts) - counts))
        self.totals += counts
        self._fill = 0
        self._fh.flush()

    def segments(self, key: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
        """(lhs, rhs, rel, weight) of ``key``'s edges, one block per run, in input order."""
        dtypes = [self.id_dtype, self.id_dtype, np.dtype(np.int32)] + ([np.dtype(np.float32)] if self.has_weight else [])
        for offset, n, counts, starts in self._runs:
            count = int(counts[key])
            if count == 0:
                continue
            before = int(starts[key])
            cols = []
            col_start = offset
            for dt in dtypes:
                # pread: no shared file position, so buckets can be written from several threads.
                raw = os.pread(self._fh.fileno(), count * dt.itemsize, col_start + before * dt.itemsize)
                cols.append(np.frombuffer(raw, dtype=dt))
                col_start += n * dt.itemsize
                col_start += -col_start % _ALIGN
            yield cols[0], cols[1], cols[2], (cols[3] if self.has_weight else None)

    def write_bucket(self, key: int, path: Path, *, dedup: bool, earlier: tuple[int, ...] = ()) -> tuple[int, int]:
        """Write ``key``'s edges to an HDF5 bucket file; returns (edges written, duplicates dropped).

        ``dedup`` drops an edge repeated within ``key`` and one that is also an edge of a key in
        ``earlier`` (the same bucket of the splits before this one)."""
        if dedup:
            before = [b for k in earlier for b in self.segments(k)]
            blocks = before + list(self.segments(key))
            lhs, rhs, rel = (np.concatenate([b[k] for b in blocks]) for k in range(3))
            # The earlier keys' edges come first, so the first copy of a triple they have is theirs.
            n_before = sum(len(b[0]) for b in before)
            keep = first_occurrences(lhs, rel, rhs)[n_before:]
            lhs, rhs, rel = (a[n_before:] for a in (lhs, rhs, rel))
            weight = np.concatenate([b[3] for b in blocks[len(before):]]) if self.has_weight else None
            blocks = [(lhs[keep], rhs[keep], rel[keep], weight[keep] if weight is not None else None)]
            count = int(keep.sum())
        else:
            blocks = self.segments(key)
            count = int(self.totals[key])
        # The dataset directory is fsynced as a whole when it is complete.
        with BucketWriter(
            path, count, id_dtype=self.id_dtype.name, has_weight=self.has_weight, durable=False
        ) as writer:
            for lhs, rhs, rel, weight in blocks:
                writer.append(lhs, rhs, rel, weight)
        return count, int(self.totals[key]) - count

    def close(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


class EdgeLog:
    """Pass 1's output: every good edge as (head entry, tail entry, relation, split[, weight]).

    Written column by column, in input order, to files next to the dataset
    being built, so that pass 2 reads fixed-size numeric blocks instead of
    parsing and hashing the input a second time.
    """

    COLUMNS = (("head", np.int64), ("tail", np.int64), ("rel", np.int32), ("split", np.int8), ("weight", np.float32))

    def __init__(self, directory: Path, has_weight: bool) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.columns = [(name, np.dtype(dt)) for name, dt in self.COLUMNS if has_weight or name != "weight"]
        self._files = {name: open(self.directory / f"{name}.bin", "wb") for name, _ in self.columns}
        self.count = 0

    def append(self, **values: np.ndarray) -> None:
        for name, dtype in self.columns:
            self._files[name].write(np.ascontiguousarray(values[name], dtype=dtype).tobytes())
        self.count += len(values["head"])

    def blocks(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """The logged edges again, ``size`` at a time, in input order."""
        for fh in self._files.values():
            fh.close()
        readers = {name: open(self.directory / f"{name}.bin", "rb") for name, _ in self.columns}
        try:
            for _start in range(0, self.count, size):
                yield {name: np.fromfile(readers[name], dtype=dtype, count=size) for name, dtype in self.columns}
        finally:
            for fh in readers.values():
                fh.close()

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        for name, _ in self.columns:
            (self.directory / f"{name}.bin").unlink(missing_ok=True)
        if self.directory.exists():
            self.directory.rmdir()
