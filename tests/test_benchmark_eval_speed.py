"""benchmarks/eval_speed.py end to end on CoDEx-S at P=1: every method is timed, and full
ranking's MRR is the dense all-entity reference's, the check the benchmark's table makes."""

import json
import subprocess
import sys

import pytest

from benchmark_helpers import REPO
from partition_helpers import partition

CODEX = REPO / "data" / "codex-s"


def test_every_method_is_timed_and_full_ranking_matches_the_dense_reference(tmp_path):
    dataset = tmp_path / "codex1"
    partition([CODEX / "train.txt"], dataset, num_partitions=1, valid=[str(CODEX / "valid.txt")],
              test=[str(CODEX / "test.txt")])
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_speed.py"), str(dataset), "--dim", "16",
                    "--repeats", "1", "--num-sampled", "50", "--json", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=600)
    rows = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["bigkg full", "bigkg sampled 50", "dense reference"]
    assert rows["bigkg full"]["mrr"] == pytest.approx(rows["dense reference"]["mrr"], rel=1e-6)
    assert all(row["seconds"] > 0 and row["queries"] == 2 * 1828 for row in rows.values())
