"""benchmarks/split_validation.py on the bundled CoDEx-S: one and two gloo workers validate the
same checkpoint and agree on the MRR bit for bit."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_one_and_two_workers_give_the_same_mrr(tmp_path):
    out = tmp_path / "rows.json"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "split_validation.py"), "--data", str(REPO / "data" / "codex-s"),
         "--partitions", "2", "--dim", "16", "--workers", "1", "2", "--repeats", "1",
         "--work", str(tmp_path / "work"), "--json", str(out)],
        check=True, cwd=REPO, capture_output=True, timeout=300,
    )
    rows = json.loads(out.read_text())
    assert [r["workers"] for r in rows] == [1, 2]
    assert rows[0]["count"] == rows[1]["count"] == 2 * 1827  # CoDEx-S's valid split, both directions
    assert rows[0]["mrr"] == rows[1]["mrr"] and 0 < rows[0]["mrr"] < 1
