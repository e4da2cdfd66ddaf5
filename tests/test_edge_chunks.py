"""Edge chunks (PBG's num_edge_chunks): how a bucket is cut, what is read, and how training walks them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tqdm import tqdm

from bigkg.checkpoint import CheckpointStore
from bigkg.config import config_from_dict
from bigkg.edge_chunks import STRIPE_EDGES, EdgeChunk, edge_chunk_count
from bigkg.format import BucketEdges, DatasetError, read_bucket, write_bucket
from bigkg.training import train
from bigkg.training.trainer import Trainer
from test_train import small_config


@pytest.mark.parametrize("num_edges", [0, 1, 5, 1000, 4 * STRIPE_EDGES + 7, 13 * STRIPE_EDGES + 3])
@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_the_chunks_of_a_bucket_tile_it_once_in_near_equal_parts(num_edges, count):
    chunks = [EdgeChunk(c, count) for c in range(count)]
    covered = np.zeros(num_edges, dtype=np.int64)
    for chunk in chunks:
        ranges = chunk.ranges(num_edges)
        assert ranges == sorted(ranges) and all(a < b for a, b in ranges)
        for a, b in ranges:
            covered[a:b] += 1
        assert sum(b - a for a, b in ranges) == chunk.size(num_edges)
    assert (covered == 1).all()
    sizes = [c.size(num_edges) for c in chunks]
    assert sum(sizes) == num_edges and max(sizes) - min(sizes) <= 1


def test_each_chunk_of_a_sorted_bucket_holds_its_share_of_every_relation():
    """Chunks are stripes spread over the file, not stretches of it: an input sorted by
    relation still gives each chunk about a third of every relation's edges."""
    count, relations = 3, 6
    rel = np.repeat(np.arange(relations), 5 * STRIPE_EDGES)  # sorted, 30 stripes' worth
    for c in range(count):
        picked = np.concatenate([rel[a:b] for a, b in EdgeChunk(c, count).ranges(len(rel))])
        per_relation = np.bincount(picked, minlength=relations)
        assert (np.abs(per_relation - 5 * STRIPE_EDGES / count) <= STRIPE_EDGES).all(), per_relation


def test_the_chunk_count_comes_from_the_largest_bucket_unless_given():
    assert edge_chunk_count([10, 250, 99], 0, 0) == 1
    assert edge_chunk_count([10, 250, 99], 0, 100) == 3
    assert edge_chunk_count([10, 250, 99], 0, 250) == 1
    assert edge_chunk_count([10, 250, 99], 4, 100) == 4  # num_edge_chunks wins
    assert edge_chunk_count([], 0, 100) == 1


def test_reading_a_chunk_reads_its_rows_of_the_file_and_checks_the_whole_count(tmp_path):
    n = 2 * 3 * STRIPE_EDGES + 11  # two stripes per chunk
    rng = np.random.default_rng(0)
    edges = BucketEdges(rng.integers(0, 1000, n).astype(np.int32), rng.integers(0, 1000, n).astype(np.int32),
                        rng.integers(0, 9, n).astype(np.int32), rng.random(n).astype(np.float32))
    write_bucket(tmp_path, "train", 0, 1, edges)
    parts = []
    for c in range(3):
        chunk = EdgeChunk(c, 3)
        read = read_bucket(tmp_path, "train", 0, 1, expected=n, chunk=chunk)
        rows = np.concatenate([np.arange(a, b) for a, b in chunk.ranges(n)])
        for got, whole in zip(read, edges):
            np.testing.assert_array_equal(got, whole[rows])
        parts.append(rows)
    assert sorted(np.concatenate(parts)) == list(range(n))
    with pytest.raises(DatasetError, match=r"bucket_0_1.*\[%d\] edges; the manifest counts %d" % (n, n + 1)):
        read_bucket(tmp_path, "train", 0, 1, expected=n + 1, chunk=EdgeChunk(1, 3))


def _bucket_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "bucket"]


def test_max_edges_per_chunk_bounds_every_load_and_each_epoch_trains_every_chunk_once(tiny, tmp_path):
    """tiny's buckets hold 60 edges: at most 25 per load makes 3 chunks of 20."""
    run_dir = tmp_path / "run"
    summary = train(config_from_dict(small_config(tiny, run_dir, training={"max_edges_per_chunk": 25})))
    records = _bucket_records(run_dir)
    assert Counter((r["epoch"], r["chunk"], tuple(r["bucket"])) for r in records) == Counter(
        {(e, c, (i, j)): 1 for e in range(2) for c in range(3) for i in range(2) for j in range(2)})
    assert {r["edges"] for r in records} == {20}
    # a pass trains chunk c of every bucket before any bucket's chunk c + 1
    assert [r["chunk"] for r in records] == sorted([r["chunk"] for r in records[:12]]) * 2
    assert summary["epochs_completed"] == 2
    progress = CheckpointStore(run_dir).latest().meta["progress"]
    assert (progress["epoch"], progress["chunk"], progress["pass_index"], progress["finished"]) == (2, 0, 6, [])


def test_an_epoch_resumed_midway_keeps_its_split_and_the_next_takes_the_new_one(tiny, tmp_path):
    run_dir = tmp_path / "run"
    with Trainer(config_from_dict(small_config(tiny, run_dir, training={"num_edge_chunks": 3}))) as trainer:
        trainer._split_epoch()
        trainer.scheduler.start_pass(0, [])
        trainer._train_bucket(0, trainer.scheduler.acquire(), tqdm(disable=True))  # one bucket, then "killed"
    train(config_from_dict(small_config(tiny, run_dir, training={"num_edge_chunks": 2})))
    per_epoch = Counter((r["epoch"], r["chunk"]) for r in _bucket_records(run_dir))
    assert per_epoch == Counter({(0, 0): 4, (0, 1): 4, (0, 2): 4, (1, 0): 4, (1, 1): 4})
    assert {r["edges"] for r in _bucket_records(run_dir) if r["epoch"] == 1} == {30}
