"""Export writers: read each format back and compare names and vectors with the source."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bigkg.atomic import OutputError
from bigkg.evaluation.filters import entity_offsets
from bigkg.export import EntityTables, ExportError, export_embeddings, write_entity_tables
from bigkg.format import DatasetError, EntityType, load_manifest
from eval_datasets import TensorSource, write_dataset


@pytest.fixture()
def dataset(tmp_path):
    root = tmp_path / "data"
    triples = np.array([[0, 0, 0], [1, 1, 2], [2, 0, 4]])
    gid = write_dataset(root, {"user": 5, "item": 7}, [("likes", "user", "item"), ("hates", "user", "item")],
                        {"train": triples}, num_partitions=3, seed=4)
    manifest = load_manifest(root)
    offsets = entity_offsets(manifest)
    g = torch.Generator().manual_seed(0)
    vectors = {"user": torch.randn(5, 6, generator=g), "item": torch.randn(7, 6, generator=g)}
    # Expected (name -> vector): entity k of type T is named T{k} and sits at global id gid[T][k].
    expected = {f"{t}{k}": vectors[t][gid[t][k]].numpy() for t in vectors for k in range(len(gid[t]))}
    return root, manifest, TensorSource(vectors, offsets), expected


def test_parquet_round_trip(dataset, tmp_path):
    root, manifest, source, expected = dataset
    out = tmp_path / "emb.parquet"
    summary = export_embeddings(root, manifest, source, out, "parquet")
    assert summary["rows"] == 12
    table = pq.read_table(out)
    assert table.schema.field("embedding").type.value_type == "float"
    rows = table.to_pylist()
    assert sorted(r["name"] for r in rows) == sorted(expected)
    for r in rows:
        np.testing.assert_array_equal(np.array(r["embedding"], dtype=np.float32), expected[r["name"]])
        assert r["name"].startswith(r["entity_type"])
        assert 0 <= r["local_id"] < manifest.entity_type(r["entity_type"]).partition_counts[r["partition"]]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_parquet_row_groups_cut_partitions(dataset, tmp_path):
    root, manifest, source, expected = dataset
    out = tmp_path / "emb.parquet"
    export_embeddings(root, manifest, source, out, "parquet", row_group_rows=2)
    meta = pq.ParquetFile(out).metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    counts = [c for et in manifest.entity_types for c in et.partition_counts if c]
    assert sizes == [min(2, c - s) for c in counts for s in range(0, c, 2)]
    rows = pq.read_table(out).to_pylist()
    for r in rows:
        np.testing.assert_array_equal(np.array(r["embedding"], dtype=np.float32), expected[r["name"]])


def test_hdf5_round_trip(dataset, tmp_path):
    root, manifest, source, expected = dataset
    out = tmp_path / "emb.h5"
    export_embeddings(root, manifest, source, out, "hdf5")
    with h5py.File(out, "r") as fh:
        for t in ("user", "item"):
            names = [n.decode() for n in fh[t]["name"][...]]
            emb = fh[t]["embedding"][...]
            assert len(names) == manifest.entity_type(t).count
            for name, vec in zip(names, emb):
                np.testing.assert_array_equal(vec, expected[name])


def test_npy_and_npz_round_trip(dataset, tmp_path):
    root, manifest, source, expected = dataset
    export_embeddings(root, manifest, source, tmp_path / "npy", "npy")
    export_embeddings(root, manifest, source, tmp_path / "emb.npz", "npz")
    npz = np.load(tmp_path / "emb.npz")
    for t in ("user", "item"):
        emb = np.load(tmp_path / "npy" / f"{t}.embedding.npy")
        names = (tmp_path / "npy" / f"{t}.names.txt").read_text().splitlines()
        assert names == list(npz[f"{t}/name"])
        np.testing.assert_array_equal(emb, npz[f"{t}/embedding"])
        for name, vec in zip(names, emb):
            np.testing.assert_array_equal(vec, expected[name])


def test_tsv_round_trip_in_blocks(dataset, tmp_path):
    """PBG's entity lines: name, then the values; each value reads back as the same float32."""
    root, manifest, source, expected = dataset
    out = tmp_path / "emb.tsv"
    export_embeddings(root, manifest, source, out, "tsv", row_group_rows=2)  # lines formatted 2 at a time
    lines = out.read_text().splitlines()
    assert len(lines) == 12
    for line in lines:
        name, *values = line.split("\t")
        np.testing.assert_array_equal(np.array(values, dtype=np.float32), expected[name])
    # every type in turn, each in global-id order: the users first
    assert [line.split("\t")[0][:4] for line in lines] == ["user"] * 5 + ["item"] * 7


def _named(names: dict[str, list[str]], dim: int = 3) -> EntityTables:
    """Entity tables of one partition per type, with the given names and vectors 0, 1, 2, ..."""
    types = [EntityType(t, [len(n)]) for t, n in names.items()]
    vectors = {t: torch.arange(len(n) * dim, dtype=torch.float32).reshape(len(n), dim) / 7 for t, n in names.items()}
    source = TensorSource(vectors, {t: np.array([0, len(n)]) for t, n in names.items()})
    return EntityTables(types, lambda t, part: pa.array(names[t]), source)


def test_names_a_text_format_cannot_hold_are_an_error_naming_them(tmp_path):
    odd = {"entity": ['say "hi"', "a,b c", "ünï"]}
    write_entity_tables(_named(odd), tmp_path / "ok.tsv", "tsv")  # quotes, commas and spaces are fine
    assert [line.split("\t")[0] for line in (tmp_path / "ok.tsv").read_text(encoding="utf-8").splitlines()] == odd["entity"]
    for fmt, name in (("tsv", "tab\there"), ("tsv", "two\nlines"), ("npy", "two\nlines")):
        out = tmp_path / f"bad.{fmt}"
        with pytest.raises(ExportError, match=f"entity name {re.escape(repr(name))} holds .* --format {fmt} cannot hold"):
            write_entity_tables(_named({"entity": ["fine", name]}), out, fmt)
        assert not out.exists() and not list(tmp_path.glob("bad*"))
    write_entity_tables(_named({"entity": ["tab\there"]}), tmp_path / "ok_npy", "npy")  # npy's names file has lines


def test_existing_output_refused_without_force(dataset, tmp_path):
    root, manifest, source, _ = dataset
    out = tmp_path / "emb.parquet"
    out.write_text("keep me")
    with pytest.raises(ExportError, match="already exists"):
        export_embeddings(root, manifest, source, out, "parquet")
    assert out.read_text() == "keep me"
    export_embeddings(root, manifest, source, out, "parquet", force=True)
    assert pq.read_table(out).num_rows == 12
    with pytest.raises(ExportError, match="unknown export format"):
        export_embeddings(root, manifest, source, tmp_path / "x", "csv")


def test_failed_export_leaves_nothing(dataset, tmp_path):
    root, manifest, source, _ = dataset
    (root / "entities" / "item" / "part_1.parquet").unlink()
    out = tmp_path / "emb.parquet"
    with pytest.raises(Exception, match="missing entity table"):
        export_embeddings(root, manifest, source, out, "parquet")
    assert not out.exists() and not list(tmp_path.glob("emb.parquet*"))


def test_output_in_an_unwritable_place_is_an_error_naming_it(dataset, tmp_path):
    root, manifest, source, _ = dataset
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    for fmt in ("parquet", "npy"):  # a file, a directory
        out = blocker / "emb.out"  # its parent cannot be made: a file is in the way
        with pytest.raises(OutputError, match=f"cannot write {out}: {blocker} is not a directory"):
            export_embeddings(root, manifest, source, out, fmt)
    # --force replaces a file, but a directory in the way stays, whole
    folder = tmp_path / "folder"
    (folder / "inner").mkdir(parents=True)
    with pytest.raises(OutputError, match=f"cannot write {folder}: it is a directory"):
        export_embeddings(root, manifest, source, folder, "parquet", force=True)
    assert blocker.read_text() == "keep me" and [p.name for p in folder.iterdir()] == ["inner"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "data", "folder"]


def test_damaged_entity_table_is_an_error_naming_it(dataset, tmp_path):
    root, manifest, source, _ = dataset
    table = root / "entities" / "item" / "part_1.parquet"
    table.write_text("not parquet")
    out = tmp_path / "emb.parquet"
    with pytest.raises(DatasetError, match=f"cannot read entity table {table}"):
        export_embeddings(root, manifest, source, out, "parquet")
    assert not list(tmp_path.glob("emb.parquet*"))
