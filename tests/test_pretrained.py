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
    typed = fmt != "tsv"  # a TSV line has no entity type: its rows are offered to every type by name
    expected = {(t if typed else None, f"{t}{k}"): vectors[t][gid[t][k]].numpy() for t in vectors for k in range(len(gid[t]))}
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


def first_version(run_dir: Path, dataset: Path) -> tuple[dict[str, np.ndarray], dict[str, float], dict]:
    """(name -> vector, name -> Adagrad state, shared state) of the run's latest checkpoint."""
    version = CheckpointStore(run_dir).latest()
    vectors, adagrad = {}, {}
    for part in range(load_manifest(dataset).num_partitions):
        names = read_entity_names(dataset, "entity", part).to_pylist()
        embeddings, state = version.load_partition("entity", part)
        vectors.update(zip(names, embeddings.numpy()))
        adagrad.update(zip(names, state.tolist()))
    return vectors, adagrad, version.shared_state()


def relation_names(dataset: Path) -> list[str]:
    return [r.name for r in load_manifest(dataset).relations]


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> Path:
    """An "old" graph of the first 40% of CoDEx-S's training edges (P=2; 41 of its 42 relations),
    trained one epoch and exported, and the "new" graph of all of them (P=3)."""
    work = tmp_path_factory.mktemp("grown")
    lines = (CODEX / "train.txt").read_text().splitlines(keepends=True)
    (work / "old.txt").write_text("".join(lines[: len(lines) * 2 // 5]))
    partition([work / "old.txt"], work / "old", num_partitions=2, seed=1)
    partition([CODEX / "train.txt"], work / "new", num_partitions=3, seed=2)
    old_config = run_config(work / "old", work / "old_run")
    old_config["training"]["epochs"] = 1
    train(config_from_dict(old_config))
    (work / "old_run.yaml").write_text(json.dumps(old_config))
    assert cli_main(["export", str(work / "old_run.yaml"), "--format", "parquet", "--out", str(work / "old.parquet")]) == 0
    train(config_from_dict(run_config(work / "new", work / "cold")))  # the fresh start, for comparison
    return work


def test_a_grown_graph_starts_from_the_exported_vectors_of_the_entities_it_shares(grown, tmp_path):
    """Shared entities start from the exported vectors exactly, new ones exactly as a run
    without init_from starts them; relations and Adagrad state start afresh."""
    summary = train(config_from_dict(run_config(grown / "new", tmp_path / "warm", init_from=str(grown / "old.parquet"))))
    exported = {r["name"]: np.array(r["embedding"], np.float32) for r in pq.read_table(grown / "old.parquet").to_pylist()}
    warm, warm_adagrad, warm_shared = first_version(tmp_path / "warm", grown / "new")
    cold, _, cold_shared = first_version(grown / "cold", grown / "new")
    shared = exported.keys() & warm.keys()
    assert shared == exported.keys() and len(shared) < len(warm)  # the old graph's entities, and new ones
    for name, vector in warm.items():
        np.testing.assert_array_equal(vector, exported[name] if name in exported else cold[name])
    assert not any(warm_adagrad.values())
    for key, value in cold_shared["model"].items():
        torch.testing.assert_close(warm_shared["model"][key], value, rtol=0, atol=0)
    assert summary["initialised_from"] == {
        "path": str(grown / "old.parquet"), "source": "export", "entities": {"entity": len(warm)},
        "matched": {"entity": len(shared)}, "relations": 42, "relations_matched": 0,
    }


def test_a_tsv_export_starts_a_run_as_the_parquet_export_does(grown, tmp_path):
    """bigkg's --format tsv (PBG's entity lines; no entity type, so names match in every type)."""
    tsv = tmp_path / "old.tsv"
    assert cli_main(["export", str(grown / "old_run.yaml"), "--format", "tsv", "--out", str(tsv)]) == 0
    via_tsv = train(config_from_dict(run_config(grown / "new", tmp_path / "tsv", init_from=str(tsv))))
    via_parquet = train(config_from_dict(run_config(grown / "new", tmp_path / "parquet", init_from=str(grown / "old.parquet"))))
    assert via_tsv["initialised_from"]["matched"] == via_parquet["initialised_from"]["matched"]
    for a, b in zip(first_version(tmp_path / "tsv", grown / "new")[0].items(),
                    first_version(tmp_path / "parquet", grown / "new")[0].items()):
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])


def test_a_grown_graph_starts_from_the_run_directory_with_its_optimizer_state(grown, tmp_path):
    """From the old run's checkpoint: shared entities take their vectors and Adagrad state,
    the 41 shared relations (and their reciprocal twins, 41 rows apart there and 42 here)
    their operator rows and Adagrad sums; the rest starts as a fresh run does."""
    summary = train(config_from_dict(run_config(grown / "new", tmp_path / "warm", init_from=str(grown / "old_run"))))
    old, old_adagrad, old_shared = first_version(grown / "old_run", grown / "old")
    warm, warm_adagrad, warm_shared = first_version(tmp_path / "warm", grown / "new")
    cold, _, cold_shared = first_version(grown / "cold", grown / "new")
    assert any(old_adagrad.values())
    for name in warm:
        np.testing.assert_array_equal(warm[name], old[name] if name in old else cold[name])
        assert warm_adagrad[name] == old_adagrad.get(name, 0.0)
    old_relations, new_relations = relation_names(grown / "old"), relation_names(grown / "new")
    assert len(old_relations) == 41 and len(new_relations) == 42
    slots = [(k, old_relations.index(r)) for k, r in enumerate(new_relations) if r in old_relations]
    fresh = [k for k, r in enumerate(new_relations) if r not in old_relations]
    sums = {k: state["sum"] for k, state in warm_shared["optimizer"]["state"].items()}
    old_sums = {k: state["sum"] for k, state in old_shared["optimizer"]["state"].items()}
    for k, key in enumerate(cold_shared["model"]):  # the optimizer numbers the parameters in this order
        for twin in (0, 1):
            for new_row, old_row in slots:
                torch.testing.assert_close(warm_shared["model"][key][new_row + 42 * twin], old_shared["model"][key][old_row + 41 * twin])
                torch.testing.assert_close(sums[k][new_row + 42 * twin], old_sums[k][old_row + 41 * twin])
            for new_row in fresh:
                torch.testing.assert_close(warm_shared["model"][key][new_row + 42 * twin], cold_shared["model"][key][new_row + 42 * twin])
                assert not sums[k][new_row + 42 * twin].any()
    assert summary["initialised_from"]["source"] == "checkpoint"
    assert summary["initialised_from"]["matched"] == {"entity": len(old)} and summary["initialised_from"]["relations_matched"] == 41


def test_the_same_relations_take_the_whole_shared_state_and_another_model_none_of_it(grown, tmp_path, caplog):
    partition([grown / "old.txt"], tmp_path / "same", num_partitions=1, seed=5)  # the old edges, another layout
    train(config_from_dict(run_config(tmp_path / "same", tmp_path / "warm", init_from=str(grown / "old_run"))))
    old, _, old_shared = first_version(grown / "old_run", grown / "old")
    warm, _, warm_shared = first_version(tmp_path / "warm", tmp_path / "same")
    assert warm.keys() == old.keys() and all((warm[n] == old[n]).all() for n in old)
    for key, value in old_shared["model"].items():
        torch.testing.assert_close(warm_shared["model"][key], value, rtol=0, atol=0)
    assert str(warm_shared["optimizer"]) == str(old_shared["optimizer"])

    other = run_config(tmp_path / "same", tmp_path / "other", init_from=str(grown / "old_run"))
    other["model"]["operator"] = "diagonal"
    summary = train(config_from_dict(other))
    assert summary["initialised_from"]["relations_matched"] == 0 and summary["initialised_from"]["matched"] == {"entity": len(old)}
    assert "model.operator='complex_diagonal'" in caplog.text
    _, _, other_shared = first_version(tmp_path / "other", tmp_path / "same")
    assert (other_shared["model"]["operators.0.diagonal"] == 1).all()  # the diagonal operator's fresh start


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


def test_a_dimension_mismatch_names_the_source_and_both_dimensions_and_writes_no_checkpoint(small, tmp_path):
    source = write_parquet_export(tmp_path / "emb.parquet", ["entity0", "entity1"], [[0.5] * 8, [1.0] * 8])
    with pytest.raises(PretrainedError, match=r"emb\.parquet holds 8-dimensional vectors for entity type 'entity', but model.dim is 16"):
        train(config_from_dict(run_config(small, tmp_path / "run", init_from=str(source))))
    assert_no_version_written(tmp_path / "run")
    train(config_from_dict(run_config(small, tmp_path / "earlier")))
    with pytest.raises(PretrainedError, match=r"earlier/checkpoints/v000000 holds 16-dimensional vectors, but model.dim is 8"):
        train(config_from_dict(run_config(small, tmp_path / "run", init_from=str(tmp_path / "earlier"), dim=8)))
    assert_no_version_written(tmp_path / "run")


def test_what_is_not_an_export_is_a_clear_error(small, tmp_path):
    tsv = tmp_path / "edges.tsv"
    tsv.write_text("a\tr\tb\n")  # an edge list, not vectors
    text, hole = tmp_path / "notes.txt", tmp_path / "hole.tsv"
    text.write_text("no tabs here\n")
    hole.write_text("entity0\t0.5\t1\nentity1\t\t1\n")
    no_vectors = tmp_path / "names.parquet"
    pq.write_table(pa.table({"entity_type": ["entity"], "name": ["entity0"]}), no_vectors)
    ragged = write_parquet_export(tmp_path / "ragged.parquet", ["entity0", "entity1", "entity2"], [[0.0] * 16, [0.0] * 16, [0.0] * 15])
    missing = write_parquet_export(tmp_path / "missing.parquet", ["entity0", "entity1"], [[0.0] * 16, None])
    unnamed = write_parquet_export(tmp_path / "unnamed.parquet", ["entity0", None], [[0.0] * 16, [0.0] * 16])
    cases = [
        (tmp_path / "nowhere.parquet", "nowhere.parquet does not exist"),
        (tsv, r"edges.tsv is not a TSV export \(a name, then 2 values\): .*'r'"),
        (text, r"notes.txt is not an export of 'bigkg export'"),
        (hole, r"hole.tsv, line 2: a value is missing"),
        (no_vectors, r"names.parquet has no column 'embedding'"),
        (ragged, r"ragged.parquet, row 2: the embedding is missing or not as long as row 0's"),
        (missing, r"missing.parquet, row 1: the embedding is missing"),
        (unnamed, r"unnamed.parquet, row 1: no name"),
        (tmp_path, r"holds no '<type>.embedding.npy'"),
        (tmp_path / "run0", r"the run directory .*run0 holds no complete checkpoint"),  # the case above made it
    ]
    for k, (source, message) in enumerate(cases):
        with pytest.raises(PretrainedError, match=message):
            train(config_from_dict(run_config(small, tmp_path / f"run{k}", init_from=str(source))))
        assert_no_version_written(tmp_path / f"run{k}")


def test_the_init_is_ignored_on_resume(small, tmp_path, caplog):
    """A run resumes from its checkpoint, saying so; init_from only decides a fresh run's first version."""
    first = train(config_from_dict(run_config(small, tmp_path / "run")))
    source = write_parquet_export(tmp_path / "emb.parquet", ["entity0"], [[7.0] * 16])
    before = first_version(tmp_path / "run", small)[0]
    summary = train(config_from_dict(run_config(small, tmp_path / "run", init_from=str(source))))
    assert "model.init_from is not used: the run resumes from its checkpoint" in caplog.text
    assert first["initialised_from"] is None and summary["initialised_from"] is None
    np.testing.assert_array_equal(first_version(tmp_path / "run", small)[0]["entity0"], before["entity0"])
    fresh = train(config_from_dict(run_config(small, tmp_path / "run", init_from=str(source))), fresh=True)
    assert fresh["initialised_from"]["matched"] == {"entity": 1}
    np.testing.assert_array_equal(first_version(tmp_path / "run", small)[0]["entity0"], [7.0] * 16)


# -- model.init_relations_from -----------------------------------------------------------------
def test_relation_parameters_start_from_an_exported_relations_file_by_name(grown, tmp_path):
    """The old run's relations, exported, give the new run's 41 shared relations and their
    twins their operator rows (another relation order: matched by name); the relation the
    old graph lacks starts as in a fresh run. A file of another operator, or reciprocal rows
    for a model without reciprocal relations, is refused before anything is written."""
    rel_file = tmp_path / "rel.parquet"
    assert cli_main(["export", str(grown / "old_run.yaml"), "--out", str(tmp_path / "e.parquet"),
                     "--relations", str(rel_file)]) == 0
    summary = train(config_from_dict(run_config(grown / "new", tmp_path / "warm", init_relations_from=str(rel_file))))
    assert summary["initialised_from"] == {"relations_file": {"path": str(rel_file), "relations": 42, "relations_matched": 41}}
    old_shared, new_shared = first_version(grown / "old_run", grown / "old")[2], first_version(tmp_path / "warm", grown / "new")[2]
    cold_shared = first_version(grown / "cold", grown / "new")[2]
    old_names, new_names = relation_names(grown / "old"), relation_names(grown / "new")
    for key in ("operators.0.real", "operators.0.imag"):
        for twin in (0, 1):
            for k, name in enumerate(new_names):
                row = new_shared["model"][key][k + twin * 42]
                expected = (old_shared["model"][key][old_names.index(name) + twin * 41] if name in old_names
                            else cold_shared["model"][key][k + twin * 42])
                torch.testing.assert_close(row, expected, rtol=0, atol=0)

    for k, (model, message) in enumerate([
        ({"operator": "diagonal"}, r"relation '.*' has a complex_diagonal operator's 'real'; this model's is diagonal"),
        ({"reciprocal": False}, r"has reciprocal parameters .* set model.reciprocal: true"),
        ({"init_relations_from": str(tmp_path / "e.parquet")}, r"e.parquet has no column 'relation'"),
        ({"init_relations_from": str(tmp_path / "nowhere.parquet")}, r"nowhere.parquet cannot be read"),
    ]):
        options = {"init_relations_from": str(rel_file), **model}
        with pytest.raises(PretrainedError, match=message):
            train(config_from_dict(run_config(grown / "new", tmp_path / f"bad{k}", **options)))
        assert_no_version_written(tmp_path / f"bad{k}")


def test_relations_trained_under_another_comparator_or_bias_load_with_a_warning(grown, tmp_path, caplog):
    rel_file = tmp_path / "rel.parquet"
    assert cli_main(["export", str(grown / "old_run.yaml"), "--out", str(tmp_path / "e.parquet"),
                     "--relations", str(rel_file)]) == 0
    for k, (model, warning) in enumerate([({}, None), ({"bias": True}, "model.bias False, this model scores with True"),
                                          ({"comparator": "cos"}, "model.comparator dot, this model scores with cos")]):
        caplog.clear()
        summary = train(config_from_dict(run_config(grown / "new", tmp_path / f"run{k}", init_relations_from=str(rel_file),
                                                    **model)))
        assert summary["initialised_from"]["relations_file"]["relations_matched"] == 41
        assert ("trained with" in caplog.text) == (warning is not None) and (warning or "") in caplog.text


def test_a_relations_file_of_other_column_types_or_metadata_is_a_clear_error(small, tmp_path):
    """A relations Parquet not written by bigkg (values a float, not a list; a null row;
    metadata that is not JSON) names the file and what is wrong, and writes no checkpoint."""
    good = {"relation": ["r"], "reciprocal": [False], "operator": ["diagonal"], "parameter": ["diagonal"],
            "shape": [[16]], "values": [[0.5] * 16]}
    cases = [
        (pa.table({**good, "values": [0.5]}), None, r"rel0.parquet: column 'values' of type double is not list"),
        (pa.table({**good, "values": pa.array([None], pa.list_(pa.float32()))}), None,
         r"rel1.parquet: relation 'r''s 'diagonal' has no values \(null\)"),
        (pa.table(good), b"{not json", r"rel2.parquet: its metadata bigkg.model is not JSON"),
        (pa.table(good), b"[1]", r"rel3.parquet: its metadata bigkg.model is \[1\], not an object"),
    ]
    for k, (table, metadata, message) in enumerate(cases):
        path = tmp_path / f"rel{k}.parquet"
        pq.write_table(table if metadata is None else table.replace_schema_metadata({b"bigkg.model": metadata}), path)
        run_dir = tmp_path / f"run{k}"
        with pytest.raises(PretrainedError, match=message):
            train(config_from_dict(run_config(small, run_dir, operator="diagonal", init_relations_from=str(path))))
        assert_no_version_written(run_dir)
    pq.write_table(pa.table(good), tmp_path / "good.parquet")  # the same file with list values starts the run
    summary = train(config_from_dict(run_config(small, tmp_path / "ok", operator="diagonal",
                                                init_relations_from=str(tmp_path / "good.parquet"))))
    assert summary["initialised_from"]["relations_file"]["relations_matched"] == 1
