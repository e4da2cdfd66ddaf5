"""Bad input to the partitioner: clear errors naming file and line, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bigkg.atomic import TMP_MARKER
from bigkg.format import DatasetError, load_manifest
from partition_helpers import file_triples, partition, split_triples
from partitioner.errors import PartitionError
from partitioner.generate import GraphSpec, generate_graph

GOOD = ["a\tr1\tb", "b\tr2\tc", "c\tr1\ta"]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def assert_nothing_left(parent: Path) -> None:
    """No dataset and no temporary directory may remain after a failed run."""
    assert sorted(p.name for p in parent.iterdir() if p.name.startswith("out")) == []


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("d\tr1", "wrong number of columns (2 fields where 3 were expected)"),
        ("d\tr1\te\tf", "wrong number of columns (4 fields where 3 were expected)"),
        ("d\t\te", "empty relation field"),
    ],
)
def test_malformed_line_names_file_and_line_and_leaves_nothing(tmp_path, bad_line, problem):
    src = write_lines(tmp_path / "edges.tsv", GOOD + [bad_line] + GOOD)
    with pytest.raises(PartitionError) as err:
        partition([src], tmp_path / "out", num_partitions=2)
    assert f"{src}: line 4: {problem}" in str(err.value)
    assert_nothing_left(tmp_path)


def test_line_numbers_count_header_and_earlier_rejected_lines(tmp_path):
    # With skip mode off, the first bad line is reported, even after other bad ones in the same block.
    src = write_lines(tmp_path / "edges.tsv", ["h\tr\tt"] + GOOD + ["x\t\ty", "z\tr1"])
    with pytest.raises(PartitionError, match=r"line 5: empty relation"):
        partition([src], tmp_path / "out", header=True)
    src2 = write_lines(tmp_path / "edges2.tsv", ["h\tr\tt"] + GOOD + ["z\tr1"] + GOOD + ["", "x\ty\tz"])
    with pytest.raises(PartitionError, match=r"line 5: wrong number of columns"):
        partition([src2], tmp_path / "out", header=True)
    summary = partition([src2], tmp_path / "out", header=True, on_bad_line="skip")
    assert summary["bad_lines_skipped"] == 2  # line 5 and the empty line 9


def test_line_numbers_across_many_small_blocks(tmp_path):
    # Blocks of ~64 bytes: bad lines land in different record batches than the rows before them.
    lines = [f"h{k}\tr\tt{k}" for k in range(200)]
    for bad in (17, 18, 60, 61, 62, 150):
        lines[bad - 1] = f"bad{bad}"
    lines[180 - 1] = "h\t\tt"
    src = write_lines(tmp_path / "edges.tsv", lines)
    summary = partition([src], tmp_path / "skip", on_bad_line="skip", block_bytes=64)
    assert summary["bad_lines_skipped"] == 7
    assert summary["edges"]["train"] == 193
    good = [line for k, line in enumerate(lines, 1) if k not in (17, 18, 60, 61, 62, 150, 180)]
    assert split_triples(tmp_path / "skip", "train") == file_triples(write_lines(tmp_path / "good.tsv", good))
    # In error mode, the empty field of line 180 is found after the rejected lines before it.
    only_empty = [line if not line.startswith("bad") else "x\ty\tz" for line in lines]
    src2 = write_lines(tmp_path / "edges2.tsv", only_empty)
    with pytest.raises(PartitionError, match=r"line 180: empty relation field"):
        partition([src2], tmp_path / "out", block_bytes=64)
    with pytest.raises(PartitionError, match=r"line 17: wrong number of columns"):
        partition([src], tmp_path / "out", block_bytes=64)


def test_bad_line_error_through_the_cli_is_one_line_exit_2(tmp_path):
    src = write_lines(tmp_path / "edges.tsv", GOOD + ["only-one-field"])
    proc = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "partition", str(src), "--out", str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"bigkg partition: error: {src}: line 4: wrong number of columns (1 fields where 3 were expected)"
    assert_nothing_left(tmp_path)


def test_skip_mode_drops_and_counts_bad_lines(tmp_path):
    src = write_lines(tmp_path / "edges.tsv", ["x\ty"] + GOOD + ["\tr1\tb", "d\tr1\te\tf", "a\tr2\tc"])
    summary = partition([src], tmp_path / "out", on_bad_line="skip")
    assert summary["bad_lines_skipped"] == 3
    assert summary["bad_lines_by_file"] == {str(src): 3}
    manifest = load_manifest(tmp_path / "out")
    assert manifest.stats["bad_lines_skipped"] == 3
    good = [line for k, line in enumerate(GOOD + ["a\tr2\tc"])]
    assert split_triples(tmp_path / "out", "train") == file_triples(write_lines(tmp_path / "good.tsv", good))


def test_bad_weight_is_a_bad_line(tmp_path):
    src = write_lines(tmp_path / "edges.tsv", ["a\tr\tb\t0.5", "b\tr\tc\tabc", "c\tr\ta\t1e-3"])
    with pytest.raises(PartitionError, match=r"line 2: missing or non-numeric weight field"):
        partition([src], tmp_path / "out", weight_column="3")
    summary = partition([src], tmp_path / "out", weight_column="3", on_bad_line="skip")
    assert summary["bad_lines_skipped"] == 1


@pytest.mark.parametrize("content", ["", "\n"])
def test_empty_input_is_a_clear_error(tmp_path, content):
    src = tmp_path / "edges.tsv"
    src.write_text(content)
    with pytest.raises(PartitionError, match="empty input|no training edges"):
        partition([src], tmp_path / "out")
    assert_nothing_left(tmp_path)


def test_empty_parquet_and_all_bad_lines(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"h": pa.array([], pa.string()), "r": pa.array([], pa.string()),
                             "t": pa.array([], pa.string())}), empty)
    with pytest.raises(PartitionError, match=f"{empty}: empty input"):
        partition([empty], tmp_path / "out")
    bad = write_lines(tmp_path / "bad.tsv", ["\tr\tb", "a\t\tb"])
    with pytest.raises(PartitionError, match="no training edges"):
        partition([bad], tmp_path / "out", on_bad_line="skip")
    assert_nothing_left(tmp_path)


def test_missing_parquet_column_names_it_and_the_present_ones(tmp_path):
    src = tmp_path / "edges.parquet"
    pq.write_table(pa.table({"subject": ["a"], "predicate": ["r"], "object": ["b"]}), src)
    with pytest.raises(PartitionError) as err:
        partition([src], tmp_path / "out", columns=("subject", "relation", "object"))
    assert "no column 'relation'" in str(err.value)
    assert "['subject', 'predicate', 'object']" in str(err.value)
    assert_nothing_left(tmp_path)


def test_null_in_parquet_names_the_row(tmp_path):
    src = tmp_path / "edges.parquet"
    pq.write_table(pa.table({"h": ["a", None, "c"], "r": ["r", "r", "r"], "t": ["b", "c", "a"]}), src)
    with pytest.raises(PartitionError, match=f"{src}: row 2: empty head field"):
        partition([src], tmp_path / "out")


def test_parquet_column_that_is_not_names_is_named(tmp_path):
    src = tmp_path / "edges.parquet"
    pq.write_table(pa.table({"h": [[1], [2]], "r": ["r", "r"], "t": ["b", "c"]}), src)
    with pytest.raises(PartitionError, match=rf"{src}: column 'h' has type list<.*cannot be read as names"):
        partition([src], tmp_path / "out")
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("block_bytes", [64, 16 << 20])  # the bad line in the first block Arrow reads, or a later one
@pytest.mark.parametrize("on_bad_line", ["error", "skip"])  # bytes that are not text cannot be skipped as a line
def test_invalid_utf8_names_file_and_line(tmp_path, block_bytes, on_bad_line):
    src = tmp_path / "edges.tsv"
    src.write_bytes("".join(f"h{k}\tr\tt{k}\n" for k in range(40)).encode() + b"x\xff\tr\ty\n")
    with pytest.raises(PartitionError, match=f"{src}: line 41: not valid UTF-8 text"):
        partition([src], tmp_path / "out", block_bytes=block_bytes, on_bad_line=on_bad_line)
    assert_nothing_left(tmp_path)


def test_missing_input_file_and_unmatched_glob(tmp_path):
    with pytest.raises(PartitionError, match="does not exist"):
        partition([tmp_path / "nope.tsv"], tmp_path / "out")
    with pytest.raises(PartitionError, match="no input file matches"):
        partition([tmp_path / "*.parquet"], tmp_path / "out")


def test_unseen_valid_and_test_entities_are_kept_and_counted(tmp_path):
    train = write_lines(tmp_path / "train.tsv", GOOD)
    valid = write_lines(tmp_path / "valid.tsv", ["a\tr1\tc", "a\tr1\tnew1"])
    test = write_lines(tmp_path / "test.tsv", ["new2\tr3\tnew3", "b\tr2\ta"])
    summary = partition([train], tmp_path / "out", valid=[str(valid)], test=[str(test)], num_partitions=2)
    assert summary["edges"] == {"train": 3, "valid": 2, "test": 2}
    assert summary["entities"] == {"entity": 6}
    assert summary["entities_not_in_train"] == {"entity": 3}
    assert summary["edges_with_entity_not_in_train"] == {"valid": 1, "test": 1}
    assert summary["relations_not_in_train"] == 1
    assert split_triples(tmp_path / "out", "valid") == file_triples(valid)
    assert split_triples(tmp_path / "out", "test") == file_triples(test)


def test_existing_output_is_refused_without_force(tmp_path):
    src = write_lines(tmp_path / "edges.tsv", GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(PartitionError, match="already exists"):
        partition([src], out)
    assert (out / "keep.txt").read_text() == "user data"
    partition([src], out, force=True)
    assert not (out / "keep.txt").exists()
    assert load_manifest(out).split_count("train") == 3


def test_sigkill_mid_run_leaves_no_complete_looking_dataset(tmp_path):
    graph = tmp_path / "graph.parquet"
    generate_graph(GraphSpec(edges=1_000_000, entities=100_000, relations=50), graph)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "partition", str(graph), "--out", str(out), "-P", "8",
         "--buffer-edges", "50000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # Kill it once it is writing the dataset (its temporary directory holds a spill file).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        building = [p for p in tmp_path.iterdir() if p.name.startswith("out" + TMP_MARKER)]
        if building and (building[0] / "spill.bin").exists() and (building[0] / "spill.bin").stat().st_size > 0:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the partitioner finished before it could be killed; use a larger graph"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(DatasetError):
        load_manifest(out)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("out")]
    assert leftovers and all(TMP_MARKER in p.name and not (p / "manifest.json").exists() for p in leftovers)
