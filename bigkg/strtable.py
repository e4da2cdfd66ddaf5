"""An exact hash table from (entity type, name) to dense ids, in numba.

Python dicts of str cost ~100 bytes per key and a Python call per lookup; this
table keeps names as one byte buffer plus offsets (what the entity tables need
anyway), 64-bit hashes and an open-addressing slot array, so a million names
cost ~40 bytes each plus their text, and a lookup is a few nanoseconds of
compiled code reading Arrow's string buffers directly. Keys are compared byte
by byte on a hash hit, so collisions never merge two names.

Ids are given in order of first insertion, which makes them deterministic for
a given input order.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

_LOW40 = (1 << 40) - 1


@numba.njit(cache=True, inline="always")
def _hash(data: np.ndarray, start: int, end: int, kind: int) -> np.uint64:
    # FNV-1a over the bytes, the type mixed in, then a splitmix64 finalizer
    # so that the low bits (the slot index) depend on every byte.
    h = np.uint64(14695981039346656037)
    prime = np.uint64(1099511628211)
    for k in range(start, end):
        h = (h ^ np.uint64(data[k])) * prime
    h ^= np.uint64(kind) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


@numba.njit(cache=True, inline="always")
def _prefix(data: np.ndarray, start: int, end: int) -> np.uint64:
    p = np.uint64(0)
    for k in range(min(end - start, 8)):
        p |= np.uint64(data[start + k]) << np.uint64(8 * k)
    return p


@numba.njit(cache=True)
def _find_or_insert(offs, data, kinds, start, insert, out, slots, etypes, eoffs, edata, n, dlen, max_fill):
    """Map rows ``start..`` to entry ids; returns (next row, entries, bytes used).

    A slot is 4 words: hash; id + 1 (0 = empty) | type << 40; offset of the
    name's bytes | length << 40; the first 8 bytes. Names of up to 8 bytes are
    thus compared inside the slot, in one cache line.

    Stops early (returning the row it stopped at, nothing changed for it) when
    an insertion needs more room; the caller grows the arrays and calls again.
    Without ``insert`` unknown names map to -1.
    """
    low40 = np.uint64(_LOW40)
    mask = np.uint64(len(slots) - 1)
    rows = len(offs) - 1
    for i in range(start, rows):
        a = offs[i]
        b = offs[i + 1]
        length = b - a
        kind = np.uint64(kinds[i])
        h = _hash(data, a, b, kinds[i])
        pre = _prefix(data, a, b)
        s = h & mask
        while True:
            word = slots[s, 1]
            if word == 0:
                if not insert:
                    out[i] = -1
                    break
                if n >= len(etypes) or dlen + length > len(edata) or n + 1 > max_fill:
                    return i, n, dlen
                edata[dlen : dlen + length] = data[a:b]
                slots[s, 0] = h
                slots[s, 1] = np.uint64(n + 1) | (kind << np.uint64(40))
                slots[s, 2] = np.uint64(dlen) | (np.uint64(length) << np.uint64(40))
                slots[s, 3] = pre
                dlen += length
                eoffs[n + 1] = dlen
                etypes[n] = kinds[i]
                out[i] = n
                n += 1
                break
            if slots[s, 0] == h and slots[s, 3] == pre and (word >> np.uint64(40)) == kind:
                where = slots[s, 2]
                if (where >> np.uint64(40)) == np.uint64(length):
                    same = True
                    ea = np.int64(where & low40)
                    for k in range(8, length):
                        if edata[ea + k] != data[a + k]:
                            same = False
                            break
                    if same:
                        out[i] = np.int64(word & low40) - 1
                        break
            s = (s + np.uint64(1)) & mask
    return rows, n, dlen


@numba.njit(cache=True)
def _rehash(old, new):
    mask = np.uint64(len(new) - 1)
    for s in range(len(old)):
        if old[s, 1] != 0:
            t = old[s, 0] & mask
            while new[t, 1] != 0:
                t = (t + np.uint64(1)) & mask
            new[t, :] = old[s, :]


@numba.njit(cache=True)
def _gather(ids, eoffs, edata, out_offs, out_data):
    pos = 0
    out_offs[0] = 0
    for k in range(len(ids)):
        a = eoffs[ids[k]]
        b = eoffs[ids[k] + 1]
        out_data[pos : pos + (b - a)] = edata[a:b]
        pos += b - a
        out_offs[k + 1] = pos


def string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets as int64, bytes as uint8) of a string array, without copying the bytes.

    Nulls must have been removed or replaced by the caller.
    """
    if pa.types.is_string(array.type):
        off_dtype = np.int32
    elif pa.types.is_large_string(array.type):
        off_dtype = np.int64
    else:
        raise TypeError(f"expected a string array, got {array.type}")
    _validity, off_buf, data_buf = array.buffers()
    offsets = np.frombuffer(off_buf, dtype=off_dtype)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    return offsets.astype(np.int64), data


class StringTable:
    """Dense ids for (type, name) keys; see the module docstring."""

    MAX_LOAD = 0.7

    def __init__(self, capacity: int = 1 << 12) -> None:
        self._slots = np.zeros((_pow2(int(capacity / self.MAX_LOAD) + 1), 4), dtype=np.uint64)
        self._types = np.empty(capacity, dtype=np.int32)
        self._offsets = np.zeros(capacity + 1, dtype=np.int64)
        self._data = np.empty(16 * capacity, dtype=np.uint8)
        self._n = 0
        self._dlen = 0

    def __len__(self) -> int:
        return self._n

    @property
    def types(self) -> np.ndarray:
        """Entity type of every entry, in id order."""
        return self._types[: self._n]

    def add(self, names: pa.Array, kinds: np.ndarray) -> np.ndarray:
        """Ids of ``names`` (typed by ``kinds``), inserting new ones."""
        return self._map(names, kinds, insert=True)

    def find(self, names: pa.Array, kinds: np.ndarray) -> np.ndarray:
        """Ids of ``names``; -1 where a name was never added."""
        return self._map(names, kinds, insert=False)

    def _map(self, names: pa.Array, kinds: np.ndarray, insert: bool) -> np.ndarray:
        offs, data = string_buffers(names)
        if len(names) and int(np.max(offs[1:] - offs[:-1])) >= 1 << 24:
            raise ValueError("names longer than 16 MiB are not supported")
        kinds = np.ascontiguousarray(kinds, dtype=np.int32)
        out = np.empty(len(names), dtype=np.int64)
        row = 0
        while True:
            max_fill = int(len(self._slots) * self.MAX_LOAD)
            row, self._n, self._dlen = _find_or_insert(
                offs, data, kinds, row, insert, out,
                self._slots, self._types, self._offsets, self._data, self._n, self._dlen, max_fill,
            )  # fmt: skip
            if row == len(names):
                return out
            self._grow(int(offs[row + 1] - offs[row]))

    def _grow(self, need_bytes: int) -> None:
        n = self._n
        if n >= len(self._types):
            cap = 2 * len(self._types)
            self._types = _resized(self._types, cap)
            self._offsets = _resized(self._offsets, cap + 1)
        if self._dlen + need_bytes > len(self._data):
            self._data = _resized(self._data, max(2 * len(self._data), self._dlen + need_bytes))
        if n + 1 > int(len(self._slots) * self.MAX_LOAD):
            bigger = np.zeros((2 * len(self._slots), 4), dtype=np.uint64)
            _rehash(self._slots, bigger)
            self._slots = bigger

    def names(self, ids: np.ndarray) -> pa.Array:
        """The names of entries ``ids``, in that order, as an Arrow string array."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        lengths = self._offsets[ids + 1] - self._offsets[ids]
        out_offs = np.empty(len(ids) + 1, dtype=np.int64)
        out_data = np.empty(int(lengths.sum()), dtype=np.uint8)
        _gather(ids, self._offsets, self._data, out_offs, out_data)
        array = pa.Array.from_buffers(
            pa.large_string(), len(ids), [None, pa.py_buffer(out_offs), pa.py_buffer(out_data)]
        )
        return array.cast(pa.string())


def _pow2(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


def _resized(array: np.ndarray, size: int) -> np.ndarray:
    out = np.empty(size, dtype=array.dtype)
    out[: len(array)] = array
    return out
