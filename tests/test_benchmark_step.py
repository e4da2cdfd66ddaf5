"""benchmarks/step.py end to end, small: one table row per dimension, whose closed-form
throughput agrees with its own milliseconds per step (1,000 edges a step)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_step_benchmark_prints_a_row_per_dimension():
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step.py"), "--entities", "3000", "--batches", "2",
         "--rounds", "1", "--dims", "4", "8"],
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    header, *body = rows
    assert [cell.strip() for cell in header][0] == "d"
    assert [row[0].strip() for row in body] == ["4", "8"]
    for row in body:
        closed_ms, edges_per_s = float(row[2]), float(row[4].replace(",", ""))
        assert abs(1000 / (closed_ms / 1e3) - edges_per_s) <= 0.02 * edges_per_s
