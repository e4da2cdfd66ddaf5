"""benchmarks/edge_chunks.py end to end, small: one row per limit, whose chunk count and
largest load follow the limit and whose runs trained every edge in that many passes."""

import json
from collections import Counter

from benchmark_helpers import run_benchmark
from bigkg.format import load_manifest


def test_edge_chunks_benchmark_reports_each_limit(tmp_path):
    result = run_benchmark("edge_chunks.py", "--edges", "20000", "--entities", "1000", "--dim", "8",
                           "--max-edges", "0", "7000", "--repeats", "1", tmp_path=tmp_path)
    work, rows = tmp_path / "work", result["rows"]
    trained = load_manifest(work / "p1_20000_1000").split_count("train")
    assert [(r["max_edges_per_chunk"], r["chunks"]) for r in rows] == [(0, 1), (7000, 3)]
    for r in rows:
        assert r["peak_rss_mib"] > result["baseline_mib"] > 0 and r["edges_per_s"] > 0
        lines = (work / f"run_{r['max_edges_per_chunk']}_0" / "metrics.jsonl").read_text().splitlines()
        buckets = [x for x in map(json.loads, lines) if x["type"] == "bucket"]
        assert Counter(x["chunk"] for x in buckets) == Counter(range(r["chunks"]))  # P=1: one bucket a pass
        assert max(x["edges"] for x in buckets) == r["edges_per_load"]
        assert sum(x["edges"] for x in buckets) == trained
    assert rows[1]["edges_per_load"] * 3 >= rows[0]["edges_per_load"] > rows[1]["edges_per_load"] * 2
