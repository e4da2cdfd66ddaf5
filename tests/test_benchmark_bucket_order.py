"""benchmarks/bucket_order.py end to end on the bundled CoDEx-S: each order is really used, and
the torchrun run trains every bucket once."""

from pathlib import Path

from benchmark_helpers import run_benchmark

REPO = Path(__file__).resolve().parents[1]


def test_orders_and_workers_are_run_and_reported(tmp_path):
    result = run_benchmark("bucket_order.py", "--data", str(REPO / "data" / "codex-s"), "--orders", "affinity", "random",
                           "--seeds", "0", "--workers", "2", "--repeats", "1", "--set", "training.epochs=1", tmp_path=tmp_path)
    rows = {row["run"]: row for row in result}
    assert list(rows) == ["single process, affinity, seed 0", "single process, random, seed 0", "2 workers (torchrun), run 1"]
    assert all(row["buckets"] == 16 and 0 < row["mrr"] < 1 for row in rows.values())  # P=4, one epoch
    # affinity chains buckets through a common partition wherever it can; a random order does not
    assert rows["single process, affinity, seed 0"]["shared"] > rows["single process, random, seed 0"]["shared"]
    assert (tmp_path / "work" / "workers2_0" / "checkpoints").is_dir()
