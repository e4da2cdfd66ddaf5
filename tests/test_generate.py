"""The synthetic graph generator: seeded, power-law, every entity used, readable by the partitioner."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from partition_helpers import partition
from partitioner.errors import PartitionError
from partitioner.generate import GraphSpec, generate_graph


def test_generator_is_seeded_power_law_and_covers_all_entities(tmp_path):
    spec = GraphSpec(edges=150_000, entities=5_000, relations=30, seed=1)
    a = pq.read_table(generate_graph(spec, tmp_path / "a.parquet"))
    b = pq.read_table(generate_graph(spec, tmp_path / "b.parquet", chunk_edges=1 << 16))
    c = pq.read_table(generate_graph(GraphSpec(150_000, 5_000, 30, seed=2), tmp_path / "c.parquet"))
    assert a.equals(b) and not a.equals(c)
    assert a.num_rows == 150_000 and a.column_names == ["head", "relation", "tail"]
    entities = set(a["head"].to_pylist()) | set(a["tail"].to_pylist())
    assert len(entities) == 5_000
    assert len(set(a["relation"].to_pylist())) <= 30
    degree = Counter(a["head"].to_pylist()) + Counter(a["tail"].to_pylist())
    top = sorted(degree.values(), reverse=True)
    # Heavy tail: the top 1% of entities hold far more than 1% of the endpoints.
    assert sum(top[:50]) > 0.15 * sum(top)


def test_tsv_output_with_weights_partitions(tmp_path):
    spec = GraphSpec(edges=2_000, entities=300, relations=5, seed=4, weights=True)
    path = generate_graph(spec, tmp_path / "g.tsv")
    table = pcsv.read_csv(path, read_options=pcsv.ReadOptions(autogenerate_column_names=True),
                          parse_options=pcsv.ParseOptions(delimiter="\t"))
    assert table.num_rows == 2_000 and table.num_columns == 4
    weights = np.asarray(table.column(3))
    assert (weights > 0).all() and (weights <= 1.001).all()
    summary = partition([path], tmp_path / "o", weight_column="3", num_partitions=2)
    assert summary["edges"]["train"] == 2_000 and summary["entities"]["entity"] == 300


@pytest.mark.parametrize("change, words", [
    (dict(seed=-1), "--seed must be at least 0, got -1"),
    (dict(alpha=float("nan")), "--alpha must be a finite number, got nan"),
])
def test_bad_seed_and_alpha_are_refused_and_leave_nothing(tmp_path, change, words):
    spec = GraphSpec(**{**dict(edges=50, entities=10, relations=3), **change})
    with pytest.raises(PartitionError, match=words):
        generate_graph(spec, tmp_path / "g.tsv")
    assert list(tmp_path.iterdir()) == []
