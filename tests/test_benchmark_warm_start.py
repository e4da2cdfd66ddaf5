"""benchmarks/warm_start.py end to end on the bundled CoDEx-S at a small size: the old run's
entities and relations are all carried over, and starting from its directory is ahead of a
cold start after one epoch."""

from benchmark_helpers import run_benchmark


def test_three_starts_are_trained_and_the_run_directory_start_is_ahead(tmp_path):
    result = run_benchmark("warm_start.py", "--fraction", "0.5", "--set", "training.epochs=2", "--set", "model.dim=16",
                           "--set", "eval.valid_every=1", "--set", "training.foreign_negatives=0", tmp_path=tmp_path)
    old_lines = (tmp_path / "work" / "old_train.txt").read_text().splitlines()
    old_entities = {name for line in old_lines for name in line.split("\t")[::2]}
    old_relations = {line.split("\t")[1] for line in old_lines}
    carried = result["initialised_from"]
    assert carried["source"] == "checkpoint"
    assert carried["matched"] == {"entity": len(old_entities)} and carried["relations_matched"] == len(old_relations)
    starts = ("cold", "from the export", "from the run directory")
    assert all([epoch for epoch, _, _ in result[name]["valid"]] == [1, 2] for name in starts)
    first = {name: result[name]["valid"][0][1] for name in starts}
    assert first["from the run directory"] > first["cold"], first
