"""benchmarks/hogwild.py end to end, small: both kinds of workers train the same buckets,
and each row's edges/s agrees with its seconds."""

import subprocess
import sys
from pathlib import Path

from bigkg.format import load_manifest

REPO = Path(__file__).resolve().parents[1]


def test_hogwild_benchmark_prints_a_row_per_kind_of_worker(codex2):
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "hogwild.py"), "--dataset", str(codex2), "--epochs", "1"],
        check=True, cwd=REPO, capture_output=True, text=True, timeout=300,
    ).stdout
    assert "4 buckets each" in out  # P=2: every bucket of the epoch, for both
    rows = {row[0].strip(): row for row in (line.strip("|").split("|") for line in out.splitlines()
                                             if line.startswith("| ") and "---" not in line)}
    assert set(rows) == {"workers", "processes", "threads"}
    edges = load_manifest(codex2).split_count("train")
    for kind in ("processes", "threads"):
        seconds, edges_per_s = float(rows[kind][1]), float(rows[kind][2].replace(",", ""))
        assert abs(edges / edges_per_s - seconds) <= 0.005 + 1e-3 * seconds  # the seconds are printed to 0.01
