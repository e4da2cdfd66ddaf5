"""model.init_from: a fresh run starts from an export's vectors, matched by entity type and name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bigkg.checkpoint import CheckpointStore
from bigkg.config import config_from_dict
from bigkg.evaluation.filters import entity_offsets
from bigkg.export import FORMATS, export_embeddings
from bigkg.format import load_manifest, read_entity_names
from bigkg.pretrained import PretrainedError, read_exported
from bigkg.training import train
from eval_datasets import TensorSource, write_dataset
from launcher.cli import main as cli_main
from partition_helpers import partition

REPO = Path(__file__).resolve().parents[1]
CODEX = REPO / "data" / "codex-s"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_export_format_reads_back_row_by_row(tmp_path, fmt):
    root = tmp_path / "data"
    gid = write_dataset(root, {"user": 5, "item": 7}, [("likes", "user", "item")], {"train": np.array([[0, 0, 0]])},
                        num_partitions=3, seed=4)
    manifest = load_manifest(root)
    g = torch.Generator().manual_seed(0)
    vectors = {"user": torch.randn(5, 6, generator=g), "item": torch.randn(7, 6, generator=g)}
    out = tmp_path / f"emb.{fmt}"
    # Parquet row groups of 2 rows and read batches of 3 cut partitions and mix the types in a batch.
    export_embeddings(root, manifest, TensorSource(vectors, entity_offsets(manifest)), out, fmt, row_group_rows=2)
    read = {}
    for rows in read_exported(out, batch_rows=3):
        assert len(rows.names) == rows.vectors.shape[0] <= 3 and rows.vectors.dtype == np.float32
        for name, vector in zip(rows.names.to_pylist(), rows.vectors):
            assert (rows.entity_type, name) not in read
            read[(rows.entity_type, name)] = vector
    expected = {(t, f"{t}{k}"): vectors[t][gid[t][k]].numpy() for t in vectors for k in range(len(gid[t]))}
    assert read.keys() == expected.keys()
    for key, vector in expected.items():
        np.testing.assert_array_equal(read[key], vector)


def run_config(dataset: Path, run_dir: Path, **model) -> dict:
    return {
        "dataset": str(dataset), "run_dir": str(run_dir), "seed": 3,
        "model": {"dim": 16, "operator": "complex_diagonal", "reciprocal": True, **model},
        "training": {"epochs": 0, "batch_size": 500, "threads": 1},
        "eval": {"valid_every": 0},
    }


def first_version_vectors(run_dir: Path, dataset: Path) -> dict[str, np.ndarray]:
    """name -> the vector the run's latest checkpoint holds for it."""
    version = CheckpointStore(run_dir).latest()
    vectors = {}
    for part in range(load_manifest(dataset).num_partitions):
        names = read_entity_names(dataset, "entity", part).to_pylist()
        vectors.update(zip(names, version.load_partition("entity", part)[0].numpy()))
    return vectors


def test_a_grown_graph_starts_from_the_exported_vectors_of_the_entities_it_shares(tmp_path):
    """Train on the first 40% of CoDEx-S's training edges, export, and start a run on all of
    them in another partitioning: shared entities start from the exported vectors exactly,
    new ones exactly as a run without init_from starts them."""
    lines = (CODEX / "train.txt").read_text().splitlines(keepends=True)
    (tmp_path / "old.txt").write_text("".join(lines[: len(lines) * 2 // 5]))
    partition([tmp_path / "old.txt"], tmp_path / "old", num_partitions=2, seed=1)
    partition([CODEX / "train.txt"], tmp_path / "new", num_partitions=3, seed=2)
    old_config = run_config(tmp_path / "old", tmp_path / "old_run")
    old_config["training"]["epochs"] = 1
    train(config_from_dict(old_config))
    (tmp_path / "old_run.yaml").write_text(json.dumps(old_config))
    assert cli_main(["export", str(tmp_path / "old_run.yaml"), "--format", "parquet", "--out", str(tmp_path / "old.parquet")]) == 0

    summary = train(config_from_dict(run_config(tmp_path / "new", tmp_path / "warm", init_from=str(tmp_path / "old.parquet"))))
    train(config_from_dict(run_config(tmp_path / "new", tmp_path / "cold")))

    exported = {r["name"]: np.array(r["embedding"], np.float32) for r in pq.read_table(tmp_path / "old.parquet").to_pylist()}
    warm = first_version_vectors(tmp_path / "warm", tmp_path / "new")
    cold = first_version_vectors(tmp_path / "cold", tmp_path / "new")
    shared = exported.keys() & warm.keys()
    assert shared == exported.keys() and len(shared) < len(warm)  # the old graph's entities, and new ones
    for name, vector in warm.items():
        np.testing.assert_array_equal(vector, exported[name] if name in exported else cold[name])
    assert summary["initialised_from"] == {
        "path": str(tmp_path / "old.parquet"), "matched": {"entity": len(shared)}, "entities": {"entity": len(warm)},
    }


@pytest.fixture()
def small(tmp_path) -> Path:
    root = tmp_path / "small"
    write_dataset(root, {"entity": 30}, [("r", "entity", "entity")], {"train": np.array([[0, 0, 1], [2, 0, 3]])},
                  num_partitions=2)
    return root


def write_parquet_export(path: Path, names: list[str], embeddings: list[list[float] | None]) -> Path:
    pq.write_table(pa.table({
        "entity_type": ["entity"] * len(names), "name": names,
        "embedding": pa.array(embeddings, pa.list_(pa.float32())),
    }), path)
    return path


def assert_no_version_written(run_dir: Path) -> None:
    assert CheckpointStore(run_dir).latest() is None
    assert not list(run_dir.rglob("*.tmp-*"))


def test_a_dimension_mismatch_names_the_file_and_both_dimensions_and_writes_no_checkpoint(small, tmp_path):
    source = write_parquet_export(tmp_path / "emb.parquet", ["entity0", "entity1"], [[0.5] * 8, [1.0] * 8])
    with pytest.raises(PretrainedError, match=r"emb\.parquet holds 8-dimensional vectors for entity type 'entity', but model.dim is 16"):
        train(config_from_dict(run_config(small, tmp_path / "run", init_from=str(source))))
    assert_no_version_written(tmp_path / "run")


def test_what_is_not_an_export_is_a_clear_error(small, tmp_path):
    tsv = tmp_path / "edges.tsv"
    tsv.write_text("a\tr\tb\n")
    no_vectors = tmp_path / "names.parquet"
    pq.write_table(pa.table({"entity_type": ["entity"], "name": ["entity0"]}), no_vectors)
    ragged = write_parquet_export(tmp_path / "ragged.parquet", ["entity0", "entity1", "entity2"], [[0.0] * 16, [0.0] * 16, [0.0] * 15])
    missing = write_parquet_export(tmp_path / "missing.parquet", ["entity0", "entity1"], [[0.0] * 16, None])
    unnamed = write_parquet_export(tmp_path / "unnamed.parquet", ["entity0", None], [[0.0] * 16, [0.0] * 16])
    cases = [
        (tmp_path / "nowhere.parquet", "nowhere.parquet does not exist"),
        (tsv, r"edges.tsv is not an export of 'bigkg export'"),
        (no_vectors, r"names.parquet has no column 'embedding'"),
        (ragged, r"ragged.parquet, row 2: the embedding is missing or not as long as row 0's"),
        (missing, r"missing.parquet, row 1: the embedding is missing"),
        (unnamed, r"unnamed.parquet, row 1: no name"),
        (tmp_path, r"holds no '<type>.embedding.npy'"),
    ]
    for k, (source, message) in enumerate(cases):
        with pytest.raises(PretrainedError, match=message):
            train(config_from_dict(run_config(small, tmp_path / f"run{k}", init_from=str(source))))
        assert_no_version_written(tmp_path / f"run{k}")


def test_the_init_is_ignored_on_resume(small, tmp_path):
    """A run resumes from its checkpoint; init_from only decides a fresh run's first version."""
    first = train(config_from_dict(run_config(small, tmp_path / "run")))
    source = write_parquet_export(tmp_path / "emb.parquet", ["entity0"], [[7.0] * 16])
    before = first_version_vectors(tmp_path / "run", small)
    summary = train(config_from_dict(run_config(small, tmp_path / "run", init_from=str(source))))
    assert first["initialised_from"] is None and summary["initialised_from"] is None
    np.testing.assert_array_equal(first_version_vectors(tmp_path / "run", small)["entity0"], before["entity0"])
    fresh = train(config_from_dict(run_config(small, tmp_path / "run", init_from=str(source))), fresh=True)
    assert fresh["initialised_from"]["matched"] == {"entity": 1}
    np.testing.assert_array_equal(first_version_vectors(tmp_path / "run", small)["entity0"], [7.0] * 16)
