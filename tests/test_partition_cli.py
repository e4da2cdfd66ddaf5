"""``bigkg generate`` and ``bigkg partition`` through the command-line entry point."""

from __future__ import annotations

import json

from bigkg.format import load_manifest
from launcher.cli import main


def test_generate_then_partition_with_json_summary(tmp_path, capsys):
    graph = tmp_path / "g.tsv.gz"
    generate = ["generate", "--out", str(graph), "--edges", "3000", "--entities", "400", "--relations", "7",
                "--weights", "--seed", "2"]
    assert main(generate) == 0
    assert main(generate) == 2  # the graph exists: replaced only with --force
    assert "already exists (use --force" in capsys.readouterr().err
    assert main(generate + ["--force"]) == 0
    summary_path = tmp_path / "summary.json"
    argv = ["partition", str(tmp_path / "*.tsv.gz"), "--out", str(tmp_path / "ds"), "-P", "3",
            "--weight-column", "3", "--columns", "0, 1, 2", "--valid-fraction", "0.1", "--assign", "degree",
            "--dedup", "--json", str(summary_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "entities     entity 400" in printed and "edges/s" in printed
    summary = json.loads(summary_path.read_text())
    manifest = load_manifest(tmp_path / "ds")
    assert summary["edges"] == manifest.stats["edges"]
    assert sum(summary["edges"].values()) + sum(summary["duplicates_dropped"].values()) == 3000
    assert manifest.has_weights and manifest.num_partitions == 3
    assert manifest.args["assign"] == "degree" and manifest.args["valid_fraction"] == 0.1
    assert [i["split"] for i in manifest.inputs] == ["random"]
    assert set(summary["timings_s"]) == {"pass1", "pass2", "write", "total"}
    # A second run into the same directory is refused (exit 2, one line), and allowed with --force.
    assert main(argv) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0


def test_bad_columns_option_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "e.tsv"
    src.write_text("a\tr\tb\n")
    assert main(["partition", str(src), "--out", str(tmp_path / "ds"), "--columns", "0,1"]) == 2
    assert "--columns needs three" in capsys.readouterr().err
