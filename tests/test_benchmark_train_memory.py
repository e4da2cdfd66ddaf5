"""benchmarks/train_memory.py end to end, small: a row per run, whose partition sizes are the
datasets' and whose peak RSS is measured above the imports-only child's."""

import json
import subprocess
import sys
from pathlib import Path

from bigkg.format import load_manifest

REPO = Path(__file__).resolve().parents[1]


def test_train_memory_benchmark_reports_each_p_with_and_without_prefetch(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_memory.py"), "--edges", "3000", "--entities", "800",
         "--dim", "8", "--partitions", "1", "4", "--no-prefetch", "4", "--work", str(tmp_path),
         "--json", str(tmp_path / "m.json")],
        check=True, cwd=REPO, capture_output=True, text=True,
    ).stdout
    result = json.loads((tmp_path / "m.json").read_text())
    rows = result["rows"]
    assert [(r["partitions"], r["prefetch"], r["held_at_most"]) for r in rows] == [(1, True, 1), (4, True, 4), (4, False, 2)]
    for r in rows:
        counts = load_manifest(tmp_path / f"p{r['partitions']}").entity_types[0].partition_counts
        assert r["entities"] == sum(counts)
        assert r["partition_mib"] * 2**20 == max(counts) * 9 * 4  # d + 1 floats a row
        assert r["peak_rss_mib"] > result["baseline_mib"] > 0
        assert (tmp_path / f"run_p{r['partitions']}_{'prefetch' if r['prefetch'] else 'no_prefetch'}" / "checkpoints").is_dir()
    table = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + len(rows)
