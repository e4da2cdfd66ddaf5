"""benchmarks/neighbourhood.py end to end, small: this tree against itself on CoDEx-S and a
generated graph, a row per graph and fan-out whose columns agree with each other."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_neighbourhood_benchmark_times_both_trees_per_graph_and_fanout(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "neighbourhood.py"), "--against", str(REPO),
         "--data", str(REPO / "data" / "codex-s"), "--nodes", "2000", "--edges", "5000", "--seeds", "50",
         "--repeats", "1", "--rounds", "2"],
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and "---" not in line]
    header, *body = rows
    assert header[:4] == ["graph", "fan-outs", "baseline ms", "this tree ms"]
    assert [(r[0], r[1]) for r in body] == [("codex-s", "all"), ("codex-s", "10, 10"),
                                            ("generated, 2,000 nodes, 5,000 edges", "all"),
                                            ("generated, 2,000 nodes, 5,000 edges", "10, 10")]
    for row in body:
        base, here, speedup = float(row[2]), float(row[3]), float(row[4].rstrip("×"))
        # the cells are rounded: to 0.01 ms, and the speed-up to 0.01
        assert abs(base / here - speedup) <= speedup * (0.005 / base + 0.005 / here) + 0.006

    refused = subprocess.run([sys.executable, str(REPO / "benchmarks" / "neighbourhood.py"), "--against", str(tmp_path)],
                             cwd=REPO, capture_output=True, text=True)
    assert refused.returncode != 0 and f"--against {tmp_path}: not a bigkg checkout" in refused.stderr
