"""benchmarks/eval_memory.py end to end at a small size: both indexes are built and measured, and
the one of the test split's queries keeps fewer triples."""

from benchmark_helpers import run_benchmark


def test_both_indexes_are_built_and_the_queries_one_is_smaller(tmp_path):
    result = run_benchmark("eval_memory.py", "--edges", "100000", "--entities", "20000", "--test-fraction", "0.01",
                           tmp_path=tmp_path)
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["every edge", "the test split's queries"]
    assert 0 < rows["the test split's queries"]["entries"] < rows["every edge"]["entries"]
    assert all(row["peak_rise_bytes"] >= 0 and row["seconds"] > 0 for row in rows.values())
