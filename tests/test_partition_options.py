"""Partitioner formats and options: CSV/gz/Parquet, weights, schema types, splits, dedup,
self-loops, assignment, determinism and bounded spill buffers."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bigkg.format import bucket_path, load_manifest, read_entity_names
from partition_helpers import file_triples, partition, split_triples
from partitioner.errors import PartitionError
from partitioner.generate import GraphSpec, generate_graph


def dataset_bytes(root: Path) -> dict[str, bytes]:
    """Every bucket and entity table of a dataset, by relative path."""
    files = sorted(p for sub in ("edges", "entities") for p in (root / sub).rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("graph") / "graph.tsv.gz"
    return generate_graph(GraphSpec(edges=30_000, entities=3_000, relations=20, seed=3, weights=True), path)


def test_same_seed_gives_identical_datasets_and_another_seed_differs(small_graph, tmp_path):
    kwargs = dict(num_partitions=3, valid_fraction=0.05, test_fraction=0.05, weight_column="3", seed=11)
    partition([small_graph], tmp_path / "a", **kwargs)
    partition([small_graph], tmp_path / "b", **kwargs)
    # A spill buffer far smaller than the input exercises many runs per bucket; output must not change.
    partition([small_graph], tmp_path / "c", buffer_edges=997, batch_rows=4096, **kwargs)
    a = dataset_bytes(tmp_path / "a")
    assert len(a) > 3 * 9
    assert a == dataset_bytes(tmp_path / "b") == dataset_bytes(tmp_path / "c")
    partition([small_graph], tmp_path / "d", **{**kwargs, "seed": 12})
    assert dataset_bytes(tmp_path / "d") != a


def test_weights_and_random_split_round_trip(small_graph, tmp_path):
    summary = partition([small_graph], tmp_path / "o", num_partitions=2, valid_fraction=0.1, test_fraction=0.2,
                        weight_column="3")
    with gzip.open(small_graph, "rt") as fh:
        expected = Counter()
        for line in fh:
            h, r, t, w = line.rstrip("\n").split("\t")
            expected[(h, r, t, float(np.float32(w)))] += 1
    got = sum((split_triples(tmp_path / "o", s, with_weights=True) for s in ("train", "valid", "test")), Counter())
    assert got == expected
    n = sum(expected.values())
    assert abs(summary["edges"]["valid"] - 0.1 * n) < 0.02 * n
    assert abs(summary["edges"]["test"] - 0.2 * n) < 0.02 * n
    manifest = load_manifest(tmp_path / "o")
    assert manifest.has_weights and manifest.id_dtype == "int32"


def test_csv_with_header_names_and_gzip(tmp_path):
    src = tmp_path / "edges.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write('w,object,verb,subject\n0.5,b,likes,"a, the first"\n2,c,likes,b\n')
    partition([src], tmp_path / "o", header=True, columns=("subject", "verb", "object"), weight_column="w")
    assert split_triples(tmp_path / "o", "train", with_weights=True) == Counter(
        {("a, the first", "likes", "b", 0.5): 1, ("b", "likes", "c", 2.0): 1}
    )
    with pytest.raises(PartitionError, match="needs --header"):
        partition([src], tmp_path / "p", columns=("subject", "verb", "object"))


def test_parquet_named_columns_and_integer_ids(tmp_path):
    src = tmp_path / "edges.parquet"
    pq.write_table(pa.table({"t": [2, 3, 1], "h": [1, 2, 3], "r": ["x", "y", "x"]}), src)
    partition([src], tmp_path / "o", columns=("h", "r", "t"), num_partitions=2)
    assert split_triples(tmp_path / "o", "train") == Counter({("1", "x", "2"): 1, ("2", "y", "3"): 1, ("3", "x", "1"): 1})


def test_schema_gives_each_type_its_own_dictionary_and_partitions(tmp_path):
    src = tmp_path / "edges.tsv"
    src.write_text("ann\tplays_for\tred\nbob\tplays_for\tblue\nann\tknows\tbob\nred\tknows\tblue\n")
    schema = tmp_path / "schema.yaml"
    schema.write_text("knows: [person, person]\nplays_for: [person, team]\n")
    with pytest.raises(PartitionError, match="relation 'knows'.*not in the schema"):
        bad_schema = tmp_path / "bad.yaml"
        bad_schema.write_text("plays_for: [person, team]\n")
        partition([src], tmp_path / "bad", schema=bad_schema)
    # "red" and "blue" as teams differ from any person of the same name: a "knows" edge between them
    # makes them persons too.
    partition([src], tmp_path / "o", schema=schema, num_partitions=2)
    manifest = load_manifest(tmp_path / "o")
    assert [e.name for e in manifest.entity_types] == ["person", "team"]
    assert manifest.entity_type("person").count == 4 and manifest.entity_type("team").count == 2
    assert [(r.name, r.lhs_type, r.rhs_type) for r in manifest.relations] == [
        ("knows", "person", "person"), ("plays_for", "person", "team")
    ]
    assert split_triples(tmp_path / "o", "train") == file_triples(src)


def test_dedup_and_self_loops(tmp_path):
    src = tmp_path / "edges.tsv"
    src.write_text("a\tr\tb\na\tr\tb\nb\tr\tb\na\ts\tb\na\tr\tb\nc\tr\tc\n")
    kept = partition([src], tmp_path / "keep")
    assert kept["edges"]["train"] == 6 and split_triples(tmp_path / "keep", "train") == file_triples(src)
    summary = partition([src], tmp_path / "o", dedup=True, drop_self_loops=True, num_partitions=2)
    assert summary["duplicates_dropped"]["train"] == 2
    assert summary["self_loops_dropped"]["train"] == 2
    assert split_triples(tmp_path / "o", "train") == Counter({("a", "r", "b"): 1, ("a", "s", "b"): 1})
    # Entities seen only in dropped self-loops still have ids, but not as "seen in training".
    assert summary["entities"] == {"entity": 3} and summary["entities_not_in_train"] == {"entity": 1}


def test_dedup_drops_from_valid_and_test_the_triples_of_earlier_splits(tmp_path):
    """Without it, an input's repeated triple lands in train and test alike and is evaluated
    after being trained on."""
    train, valid, test = (tmp_path / f"{s}.tsv" for s in ("train", "valid", "test"))
    train.write_text("a\tr\tb\nc\tr\td\ne\tr\tf\n")
    valid.write_text("a\tr\tb\ng\tr\th\ng\tr\th\n")  # one trained, one twice
    test.write_text("c\tr\td\ng\tr\th\na\ts\tb\nb\tr\ta\n")  # trained, validated, new, reversed
    args = dict(valid=[str(valid)], test=[str(test)], num_partitions=2)
    kept = partition([train], tmp_path / "keep", **args)
    assert kept["edges"] == {"train": 3, "valid": 3, "test": 4}
    summary = partition([train], tmp_path / "o", dedup=True, **args)
    assert summary["duplicates_dropped"] == {"train": 0, "valid": 2, "test": 2}
    assert split_triples(tmp_path / "o", "valid") == Counter({("g", "r", "h"): 1})
    assert split_triples(tmp_path / "o", "test") == Counter({("a", "s", "b"): 1, ("b", "r", "a"): 1})
    assert split_triples(tmp_path / "o", "train") == file_triples(train)


def test_local_ids_follow_first_appearance(tmp_path):
    src = tmp_path / "edges.tsv"
    names = [f"n{k}" for k in range(200)]
    src.write_text("".join(f"{names[k]}\tr\t{names[k + 1]}\n" for k in range(199)))
    partition([src], tmp_path / "o", num_partitions=4)
    parts = [read_entity_names(tmp_path / "o", "entity", p).to_pylist() for p in range(4)]
    assert sorted(sum(parts, [])) == sorted(names)
    assert [len(p) for p in parts] == [50, 50, 50, 50]
    for part in parts:
        assert part == sorted(part, key=names.index)


def test_degree_assignment_evens_out_buckets(tmp_path):
    src = generate_graph(GraphSpec(edges=60_000, entities=5_000, relations=10, alpha=1.1, seed=5), tmp_path / "g.parquet")
    spread = {}
    for method in ("random", "degree"):
        partition([src], tmp_path / method, num_partitions=4, assign=method)
        counts = list(load_manifest(tmp_path / method).bucket_counts["train"].values())
        assert len(counts) == 16 and sum(counts) == 60_000
        spread[method] = max(counts) / min(counts)
    assert spread["degree"] < 1.2 < spread["random"]


def test_small_bucket_makes_a_small_file(tmp_path):
    src = tmp_path / "edges.tsv"
    src.write_text("a\tr\tb\n")
    partition([src], tmp_path / "o")
    assert bucket_path(tmp_path / "o", "train", 0, 0).stat().st_size < 16 * 1024


def test_bad_options_are_refused(tmp_path, small_graph):
    for kwargs, message in [
        (dict(num_partitions=0), "at least 1"),
        (dict(valid_fraction=0.6, test_fraction=0.5), "leave some edges"),
        (dict(valid_fraction=0.1, valid=[str(small_graph)]), "not both"),
        (dict(assign="metis"), "unknown --assign"),
        (dict(seed=-1), "--seed must be at least 0, got -1"),
        (dict(buffer_edges=0), "--buffer-edges must be at least 1, got 0"),
        (dict(batch_rows=0), "--batch-rows must be at least 1, got 0"),
        (dict(delimiter="::"), "--delimiter must be one character, got '::'"),
    ]:
        with pytest.raises(PartitionError, match=message):
            partition([small_graph], tmp_path / "o", **kwargs)


def test_custom_delimiter_and_column_positions(tmp_path):
    src = tmp_path / "edges.txt"
    src.write_text("x|a|likes|b\nx|b|likes|c\n")
    partition([src], tmp_path / "o", fmt="tsv", delimiter="|", columns=("1", "2", "3"))
    assert split_triples(tmp_path / "o", "train") == Counter({("a", "likes", "b"): 1, ("b", "likes", "c"): 1})


@pytest.mark.parametrize(
    "text, message",
    [
        ("knows: person\n", "relation 'knows' must map to \\[head_type, tail_type\\], got 'person'"),
        ("- a\n- b\n", "must map relation names"),
        ("knows: [a, b\n", "not valid YAML"),
        ("knows: [a, b]\nknows: [c, d]\n", "(?s)not valid YAML.*duplicate key 'knows'.*line 2"),
        ("knows: [person, ../up]\n", "relation 'knows': entity type '../up' cannot name a directory"),
        ("knows: [person, ..]\n", "relation 'knows': entity type '..' cannot name a directory"),
    ],
)
def test_bad_schema_file_is_named(tmp_path, text, message):
    src = tmp_path / "edges.tsv"
    src.write_text("a\tknows\tb\n")
    schema = tmp_path / "schema.yaml"
    schema.write_text(text)
    with pytest.raises(PartitionError, match=message):
        partition([src], tmp_path / "o", schema=schema)
    assert not (tmp_path / "o").exists() and not (tmp_path / "up").exists()


def test_schema_file_that_is_not_utf8_is_named(tmp_path):
    src = tmp_path / "edges.tsv"
    src.write_text("a\tknows\tb\n")
    schema = tmp_path / "schema.yaml"
    schema.write_bytes(b"knows: [a, b]\n\xff: [c, d]\n")
    with pytest.raises(PartitionError, match=f"cannot read schema file {schema}: 'utf-8' codec"):
        partition([src], tmp_path / "o", schema=schema)


def test_min_counts_drop_rare_entities_and_relations_with_every_edge_that_uses_them(small_graph, tmp_path):
    """Entities and relations are counted in the training edges; their edges go from every split."""
    with gzip.open(small_graph, "rt") as fh:
        lines = [line.split("\t")[:3] for line in fh]
    cut = int(0.8 * len(lines))
    for name, rows in (("train.tsv", lines[:cut]), ("test.tsv", lines[cut:])):
        (tmp_path / name).write_text("".join("\t".join(row) + "\n" for row in rows))
    summary = partition([tmp_path / "train.tsv"], tmp_path / "o", test=[str(tmp_path / "test.tsv")], num_partitions=3,
                        entity_min_count=12, relation_min_count=800)
    degree = Counter(e for h, _, t in lines[:cut] for e in (h, t))
    rel_count = Counter(r for _, r, _ in lines[:cut])
    rare = {e for h, _, t in lines for e in (h, t) if degree[e] < 12}
    rare_rel = {r for _, r, _ in lines if rel_count[r] < 800}
    assert rare and rare_rel  # the thresholds bite

    def kept(rows):
        return Counter((h, r, t) for h, r, t in rows if h not in rare and t not in rare and r not in rare_rel)

    assert split_triples(tmp_path / "o", "train") == kept(lines[:cut])
    assert split_triples(tmp_path / "o", "test") == kept(lines[cut:])
    names = {n for p in range(3) for n in read_entity_names(tmp_path / "o", "entity", p).to_pylist()}
    assert names == {e for h, _, t in lines for e in (h, t)} - rare
    assert not {r.name for r in load_manifest(tmp_path / "o").relations} & rare_rel
    assert summary["rare_dropped"]["entities"] == {"entity": len(rare)}
    assert summary["rare_dropped"]["relations"] == len(rare_rel)
    assert sum(summary["rare_dropped"]["edges"].values()) == len(lines) - sum(summary["edges"].values())


def test_a_min_count_that_drops_everything_is_refused(small_graph, tmp_path):
    with pytest.raises(PartitionError, match="--entity-min-count 1000000 drops every entity"):
        partition([small_graph], tmp_path / "o", entity_min_count=1_000_000)
    assert not (tmp_path / "o").exists()
