"""benchmarks/split_validation.py on the bundled CoDEx-S: one and two gloo workers validate the
same checkpoint and agree on the MRR bit for bit."""

from pathlib import Path

from benchmark_helpers import run_benchmark

REPO = Path(__file__).resolve().parents[1]


def test_one_and_two_workers_give_the_same_mrr(tmp_path):
    rows = run_benchmark("split_validation.py", "--data", str(REPO / "data" / "codex-s"), "--partitions", "2",
                         "--dim", "16", "--workers", "1", "2", "--repeats", "1", tmp_path=tmp_path, timeout=300)
    assert [r["workers"] for r in rows] == [1, 2]
    assert rows[0]["count"] == rows[1]["count"] == 2 * 1827  # CoDEx-S's valid split, both directions
    assert rows[0]["mrr"] == rows[1]["mrr"] and 0 < rows[0]["mrr"] < 1
