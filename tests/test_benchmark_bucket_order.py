"""benchmarks/bucket_order.py end to end on the bundled CoDEx-S: each order is really used, and
the torchrun run trains every bucket once."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_orders_and_workers_are_run_and_reported(tmp_path):
    out = tmp_path / "rows.json"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bucket_order.py"), "--data", str(REPO / "data" / "codex-s"),
         "--orders", "affinity", "random", "--seeds", "0", "--workers", "2", "--repeats", "1",
         "--set", "training.epochs=1", "--work", str(tmp_path / "work"), "--json", str(out)],
        check=True, cwd=REPO, capture_output=True,
    )
    rows = {row["run"]: row for row in json.loads(out.read_text())}
    assert list(rows) == ["single process, affinity, seed 0", "single process, random, seed 0", "2 workers (torchrun), run 1"]
    assert all(row["buckets"] == 16 and 0 < row["mrr"] < 1 for row in rows.values())  # P=4, one epoch
    # affinity chains buckets through a common partition wherever it can; a random order does not
    assert rows["single process, affinity, seed 0"]["shared"] > rows["single process, random, seed 0"]["shared"]
    assert (tmp_path / "work" / "workers2_0" / "checkpoints").is_dir()
