"""The numba string table against a Python dict: exact keys, first-insertion ids, growth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from bigkg.strtable import StringTable


def test_string_table_matches_a_dict_through_growth():
    rng = np.random.default_rng(0)
    # Short and long names, names sharing 8-byte prefixes, the empty name, and two types.
    pool = [f"n{k}" for k in range(3000)] + [f"prefix__{k}" for k in range(3000)] + ["", "x" * 300]
    table = StringTable(capacity=4)
    reference: dict[tuple[int, str], int] = {}
    for _ in range(5):
        batch = [pool[k] for k in rng.integers(0, len(pool), 4000)]
        kinds = rng.integers(0, 2, len(batch)).astype(np.int32)
        expected = [reference.setdefault((int(t), s), len(reference)) for t, s in zip(kinds, batch)]
        got = table.add(pa.array(batch, type=pa.large_string()).slice(0), kinds)
        assert got.tolist() == expected
    assert len(table) == len(reference)
    keys = list(reference)
    assert table.names(np.arange(len(table))).to_pylist() == [s for _, s in keys]
    assert table.types.tolist() == [t for t, _ in keys]
    probe = ["n1", "missing", "prefix__1x", "x" * 300]
    found = table.find(pa.array(probe), np.zeros(4, np.int32)).tolist()
    assert found == [reference.get((0, s), -1) for s in probe]


def test_sliced_arrays_are_read_at_their_offset():
    table = StringTable()
    arr = pa.array(["a", "b", "c", "d"])
    assert table.add(arr.slice(2), np.zeros(2, np.int32)).tolist() == [0, 1]
    assert table.names(np.array([1, 0])).to_pylist() == ["d", "c"]
