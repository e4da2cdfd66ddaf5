"""bigkg convert: a PyTorch-BigGraph checkpoint's vectors with their names, as bigkg export
writes them, and from there a bigkg run's starting point (model.init_from)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from bigkg.checkpoint import CheckpointStore
from bigkg.config import config_from_dict
from bigkg.evaluation.scoring import entity_vectors, score_triples
from bigkg.evaluation.source import open_run
from bigkg.format import load_manifest, read_entity_names
from bigkg.training.trainer import train
from launcher.cli import main
from partition_helpers import partition

REPO = Path(__file__).resolve().parents[1]
PBG_COUNTS = {"user": [3, 2], "item": [4]}


def write_pbg_checkpoint(root: Path, *, dim: int = 6, version: int = 3, featurized: bool = False) -> dict[str, np.ndarray]:
    """A checkpoint laid out as PBG 1.0.0 writes one (``checkpoint_storage.py``), with the names
    its importer writes to entity_path; returns each name's vector."""
    entities, checkpoint = root / "entities", root / "model"
    entities.mkdir(parents=True)
    checkpoint.mkdir()
    rng = np.random.default_rng(0)
    vectors = {}
    for entity_type, counts in PBG_COUNTS.items():
        for part, count in enumerate(counts):
            names = [f"{entity_type}-{part}-{k}" for k in range(count)]
            (entities / f"entity_names_{entity_type}_{part}.json").write_text(json.dumps(names, indent=4))
            (entities / f"entity_count_{entity_type}_{part}.txt").write_text(f"{count}\n")
            rows = rng.standard_normal((count, dim)).astype(np.float32)
            for stale in (version - 1, version):  # an older version left beside the latest
                with h5py.File(checkpoint / f"embeddings_{entity_type}_{part}.v{stale}.h5", "w") as fh:
                    fh.attrs["format_version"] = 1
                    fh.create_dataset("embeddings", data=rows if stale == version else rows + 1)
            vectors.update(zip(names, rows))
    (checkpoint / "checkpoint_version.txt").write_text(f"{version}\n")
    config = {"entity_path": str(entities), "checkpoint_path": str(checkpoint), "dimension": dim,
              "entities": {t: {"num_partitions": len(c), "featurized": featurized and t == "item"}
                           for t, c in PBG_COUNTS.items()}}
    (checkpoint / "config.json").write_text(json.dumps(config, indent=4))
    return vectors


def test_convert_writes_every_entity_of_the_latest_version_with_its_name(tmp_path, capsys):
    vectors = write_pbg_checkpoint(tmp_path)
    out = tmp_path / "pbg.parquet"
    assert main(["convert", str(tmp_path / "model"), "--out", str(out), "--json", str(tmp_path / "s.json")]) == 0
    assert "wrote 9 entities (user: 5, item: 4) of PBG checkpoint" in capsys.readouterr().out
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["name"] for r in rows) == sorted(vectors)
    for r in rows:
        assert r["entity_type"] == r["name"].split("-")[0] and r["partition"] == int(r["name"].split("-")[1])
        assert r["local_id"] == int(r["name"].split("-")[2])
        np.testing.assert_array_equal(np.array(r["embedding"], dtype=np.float32), vectors[r["name"]])
    assert json.loads((tmp_path / "s.json").read_text())["pbg_checkpoint"]["version"] == 3
    # an explicit older version, to HDF5
    assert main(["convert", str(tmp_path / "model"), "--version", "2", "--format", "hdf5", "--out", str(tmp_path / "v2.h5")]) == 0
    with h5py.File(tmp_path / "v2.h5") as fh:
        names = [n.decode() for n in fh["item"]["name"][:]]
        np.testing.assert_array_equal(fh["item"]["embedding"][:], np.stack([vectors[n] + 1 for n in names]))


def test_converted_vectors_are_the_ones_pbg_scores_with_max_norm_and_global_embeddings(tmp_path):
    """PBG's lookup scales a row longer than max_norm down to it (F.embedding), then adds the
    type's global embedding (global_emb, PBG's default): the converted vector is that sum."""
    vectors = write_pbg_checkpoint(tmp_path)
    model = tmp_path / "model"
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_norm": 1.5, "global_emb": True}))
    offsets = {"user": np.arange(6, dtype=np.float32) / 10, "item": -np.ones(6, np.float32)}
    with h5py.File(model / "model.v3.h5", "w") as fh:
        for entity_type, offset in offsets.items():
            fh.create_dataset(f"model/global_embs/emb_{entity_type}", data=offset).attrs["state_dict_key"] = \
                f"global_embs.emb_{entity_type}"
    assert main(["convert", str(model), "--out", str(tmp_path / "pbg.parquet")]) == 0
    clipped = 0
    for r in pq.read_table(tmp_path / "pbg.parquet").to_pylist():
        row = vectors[r["name"]]
        norm = np.linalg.norm(row)
        clipped += norm > 1.5
        expected = (row * (1.5 / (norm + 1e-7)) if norm > 1.5 else row) + offsets[r["entity_type"]]
        np.testing.assert_allclose(np.array(r["embedding"], dtype=np.float32), expected, rtol=1e-6, atol=1e-6)
    assert clipped  # some rows were longer than max_norm


def test_a_bigkg_run_starts_from_a_converted_pbg_checkpoint(tmp_path):
    """The converted vectors are a run's initial rows, matched by name wherever bigkg's
    partitioner put the entity (its own partitions and local ids)."""
    vectors = write_pbg_checkpoint(tmp_path, dim=6)
    assert main(["convert", str(tmp_path / "model"), "--out", str(tmp_path / "pbg.parquet")]) == 0
    users = [n for n in vectors if n.startswith("user")]
    items = [n for n in vectors if n.startswith("item")]
    edges = tmp_path / "edges.tsv"
    edges.write_text("".join(f"{u}\tbuys\t{i}\n" for u in users for i in items) + "newcomer\tbuys\titem-0-0\n")
    (tmp_path / "schema.yaml").write_text("buys: [user, item]\n")
    dataset = tmp_path / "data"
    partition([edges], dataset, num_partitions=2, schema=tmp_path / "schema.yaml")
    config = config_from_dict({"dataset": str(dataset), "run_dir": str(tmp_path / "run"), "model": {
        "dim": 6, "init_from": str(tmp_path / "pbg.parquet")}, "training": {"epochs": 0}, "eval": {"valid_every": 0}})
    train(config)
    version = CheckpointStore(tmp_path / "run").latest()
    manifest = load_manifest(dataset)
    started = 0
    for entity_type in ("user", "item"):
        for part in range(2):
            names = read_entity_names(dataset, entity_type, part).to_pylist()
            table, _ = version.load_partition(entity_type, part)
            for name, row in zip(names, table):
                if name in vectors:
                    np.testing.assert_array_equal(row.numpy(), vectors[name])
                    started += 1
                else:
                    assert name == "newcomer" and float(row.norm()) < 1  # a fresh row
    assert started == len(vectors) and manifest.entity_type("user").count == len(users) + 1


def test_convert_errors_name_the_file_and_write_nothing(tmp_path, capsys):
    write_pbg_checkpoint(tmp_path)
    model, out = tmp_path / "model", tmp_path / "pbg.parquet"

    def fails(*args: str) -> str:
        assert main(["convert", *args, "--out", str(out)]) == 2
        assert not list(tmp_path.glob("pbg.parquet*"))
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    assert "is not a PBG checkpoint directory: it has no config.json" in fails(str(tmp_path / "entities"))
    assert f"{model / 'embeddings_user_0.v7.h5'}" in fails(str(model), "--version", "7")
    assert "has no entity type 'users' to rename; its types: user, item" in fails(str(model), "--rename-type", "users=x")
    assert "gives two the same name" in fails(str(model), "--rename-type", "user=item")
    assert "--rename-type 'user': expected PBG_TYPE=BIGKG_TYPE" in fails(str(model), "--rename-type", "user")
    os.rename(tmp_path / "entities", tmp_path / "moved")
    assert "give it with --entities DIR" in fails(str(model))
    names = tmp_path / "moved" / "entity_names_item_0.json"
    names.write_text(json.dumps(["a", "b"]))
    assert f"{names} and {model / 'embeddings_item_0.v3.h5'}: 4 entities expected, the name table has 2" in fails(
        str(model), "--entities", str(tmp_path / "moved"))
    names.write_text("{not json")
    assert f"cannot read the entity names {names}" in fails(str(model), "--entities", str(tmp_path / "moved"))

    featurized = tmp_path / "featurized"
    write_pbg_checkpoint(featurized, featurized=True)
    err = fails(str(featurized / "model"))
    assert "entity type 'item'" in err and "is featurized" in err


@pytest.mark.skipif(not (Path(os.environ.get("BIGKG_PBG_VENV", "/work/pbg-venv")) / ".ready").is_file(),
                    reason="PBG 1.0.0 is not installed (benchmarks/pbg_env.py makes its venv)")
def test_convert_reads_a_checkpoint_that_pbg_itself_trained(tmp_path):
    """PBG 1.0.0 imports and trains a small graph; every converted row is PBG's row of that
    name, read through PBG's own checkpoint and entity storage classes."""
    from benchmarks.pbg_env import locate_pbg, write_pbg_config

    pbg = locate_pbg()
    rng = np.random.default_rng(0)
    edges = tmp_path / "edges.tsv"
    edges.write_text("".join(f"n{a}\tr{r}\tn{b}\n" for a, r, b in rng.integers(0, 40, (300, 3)) % [40, 3, 40]))
    config = tmp_path / "pbg_config.py"
    write_pbg_config(config, entity_path=tmp_path / "entities", edge_path=tmp_path / "edges_partitioned",
                     checkpoint_path=tmp_path / "model", partitions=2, dimension=8, num_epochs=1, workers=1,
                     global_emb=False, eval_fraction=0)
    env = pbg.env()
    subprocess.run(pbg.command("torchbiggraph_import_from_tsv") + ["-l", "0", "-r", "2", "--rel-col", "1", str(config),
                                                                   str(edges)], check=True, env=env, capture_output=True)
    trained = subprocess.run(pbg.command("torchbiggraph_train") + [str(config)], env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = tmp_path / "pbg.parquet"
    assert main(["convert", str(tmp_path / "model"), "--out", str(out)]) == 0
    dump = subprocess.run([str(pbg.python), "-c", PBG_DUMP, str(tmp_path)], check=True, env=env,
                          capture_output=True, text=True).stdout
    expected = {name: np.array(v, dtype=np.float32) for name, v in json.loads(dump).items()}
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(expected) == 40
    for r in rows:
        np.testing.assert_array_equal(np.array(r["embedding"], dtype=np.float32), expected[r["name"]])
    assert not torch.equal(torch.tensor(rows[0]["embedding"]), torch.zeros(8))


PBG_DUMP = """
import json, sys
from pathlib import Path
from torchbiggraph.checkpoint_storage import FileCheckpointStorage
from torchbiggraph.graph_storages import FileEntityStorage
root = Path(sys.argv[1])
storage, names = FileCheckpointStorage(str(root / "model")), FileEntityStorage(str(root / "entities"))
version = storage.load_version()
out = {}
for part in range(2):
    vectors, _ = storage.load_entity_partition(version, "all", part)
    out.update(zip(names.load_names("all", part), vectors.tolist()))
print(json.dumps(out))
"""


PBG_SCORES = """
import json, sys
from pathlib import Path
import h5py, torch
from torchbiggraph.checkpoint_storage import FileCheckpointStorage
from torchbiggraph.graph_storages import FileEntityStorage
from torchbiggraph.model import BiasedComparator, ComplexDiagonalDynamicOperator, DotComparator
root, triples, bias = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "bias"
comparator = BiasedComparator(DotComparator()) if bias else DotComparator()

def compare(a, b):  # PBG's comparator on one pair: [1, 1, dim] positives, no negatives
    a, b = comparator.prepare(a[None]), comparator.prepare(b[None])
    none = a.new_empty(1, 0, a.shape[-1])
    return comparator(a, b, none, none)[0].item()

storage, entities = FileCheckpointStorage(str(root / "model")), FileEntityStorage(str(root / "entities"))
version = storage.load_version()
vectors, _ = storage.load_entity_partition(version, "all", 0)
row = {name: k for k, name in enumerate(entities.load_names("all", 0))}
relations = json.loads((root / "entities" / "dynamic_rel_names.json").read_text())
operators = {}
with h5py.File(root / "model" / f"model.v{version}.h5", "r") as fh:
    for side in ("lhs", "rhs"):
        op = ComplexDiagonalDynamicOperator(vectors.shape[1], len(relations))
        op.load_state_dict({p: torch.from_numpy(fh[f"model/relations/0/operator/{side}/{p}"][...]) for p in ("real", "imag")})
        operators[side] = op
scores = []
with torch.no_grad():
    for h, r, t in triples:
        u, v, k = vectors[row[h]][None], vectors[row[t]][None], torch.tensor([relations.index(r)])
        # PBG with dynamic relations: c(g_r(u), v) against tail candidates, c(u, h_r(v)) against head ones
        scores.append([compare(operators["lhs"](u, k), v), compare(u, operators["rhs"](v, k))])
print(json.dumps(scores))
"""


@pytest.mark.skipif(not (Path(os.environ.get("BIGKG_PBG_VENV", "/work/pbg-venv")) / ".ready").is_file(),
                    reason="PBG 1.0.0 is not installed (benchmarks/pbg_env.py makes its venv)")
@pytest.mark.parametrize("bias", [False, True])
def test_a_converted_pbg_complex_model_scores_every_triple_as_pbg_does(tmp_path, bias):
    """PBG 1.0.0 trains ComplEx with dynamic relations (and with its bias); converted (entities
    and relations) into a bigkg run, its tail- and head-prediction scores of triples are PBG's
    own, computed by PBG's operator and comparator classes from PBG's checkpoint."""
    from benchmarks.pbg_env import locate_pbg, write_pbg_config

    pbg, env = locate_pbg(), locate_pbg().env()
    rng = np.random.default_rng(1)
    triples = [(f"n{a}", f"r{r}", f"n{b}") for a, r, b in rng.integers(0, 30, (400, 3)) % [30, 3, 30]]
    edges = tmp_path / "edges.tsv"
    edges.write_text("".join("\t".join(t) + "\n" for t in triples))
    config = tmp_path / "pbg_config.py"
    write_pbg_config(config, entity_path=tmp_path / "entities", edge_path=tmp_path / "edges_partitioned",
                     checkpoint_path=tmp_path / "model", partitions=1, operator="complex_diagonal", dimension=8,
                     comparator="dot", loss_fn="softmax", num_epochs=2, workers=1, global_emb=False, eval_fraction=0,
                     bias=bias, init_scale=0.5)  # scores of order one, so the tolerances below are tight
    for tool, args in (("torchbiggraph_import_from_tsv", ["-l", "0", "-r", "2", "--rel-col", "1", str(config), str(edges)]),
                       ("torchbiggraph_train", [str(config)])):
        done = subprocess.run(pbg.command(tool) + args, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    # Two short epochs leave both sides' operators close to their common initialisation; set
    # the head side's apart in PBG's checkpoint so that converting one side twice would fail.
    (checkpoint,) = (tmp_path / "model").glob("model.v*.h5")
    with h5py.File(checkpoint, "r+") as fh:
        for part in ("real", "imag"):
            fh[f"model/relations/0/operator/lhs/{part}"][...] = rng.normal(size=fh[f"model/relations/0/operator/lhs/{part}"].shape)
    assert main(["convert", str(tmp_path / "model"), "--out", str(tmp_path / "pbg.parquet"),
                 "--relations", str(tmp_path / "pbg_rel.parquet"), "--rename-type", "all=entity"]) == 0

    partition([edges], tmp_path / "data", num_partitions=1)  # its one entity type: 'entity'; PBG's: 'all'
    run_config = config_from_dict({"dataset": str(tmp_path / "data"), "run_dir": str(tmp_path / "run"), "model": {
        "dim": 8, "operator": "complex_diagonal", "comparator": "dot", "bias": bias, "reciprocal": True,
        "init_from": str(tmp_path / "pbg.parquet"), "init_relations_from": str(tmp_path / "pbg_rel.parquet")},
        "training": {"epochs": 0}, "eval": {"valid_every": 0}})
    summary = train(run_config)
    assert summary["initialised_from"]["relations_file"]["relations_matched"] == 3
    run = open_run(run_config)
    sample = triples[:10] + [("n1", "r2", "n3")]
    (scored,) = score_triples(run, sample)
    heads = entity_vectors(run, "entity", [h for h, _, _ in sample])
    tails = entity_vectors(run, "entity", [t for _, _, t in sample])
    rels = torch.tensor([run.manifest.relation_index(r) for _, r, _ in sample])
    with torch.no_grad():
        head_side = run.model.score_candidates("lhs", tails.unsqueeze(1), rels.unsqueeze(1), heads.unsqueeze(1))[:, 0, 0]
    expected = json.loads(subprocess.run([str(pbg.python), "-c", PBG_SCORES, str(tmp_path), json.dumps(sample),
                                          "bias" if bias else "none"],
                                         env=env, check=True, capture_output=True, text=True).stdout)
    np.testing.assert_allclose(scored.scores, [tail for tail, _ in expected], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head_side.numpy(), [head for _, head in expected], rtol=1e-5, atol=1e-6)
    assert not np.allclose(scored.scores, head_side.numpy(), rtol=0.1)  # the sides differ: both were converted


def test_relations_convert_only_where_bigkg_can_express_them(tmp_path, capsys):
    """Without dynamic relations PBG applies its operators to the tail: only 'none' converts
    (to no rows); any other operator is refused, and neither output is written."""
    write_pbg_checkpoint(tmp_path)
    model, config_path = tmp_path / "model", tmp_path / "model" / "config.json"
    config = json.loads(config_path.read_text())
    out, rel = tmp_path / "pbg.parquet", tmp_path / "rel.parquet"
    for operator in ("none", "translation"):
        config_path.write_text(json.dumps({**config, "relations": [{"name": "buys", "lhs": "user", "rhs": "item",
                                                                    "operator": operator}]}))
        code = main(["convert", str(model), "--out", str(out), "--relations", str(rel), "--force"])
        if operator == "none":
            assert code == 0 and pq.read_table(rel).num_rows == 0 and out.is_file()
            assert json.loads(pq.read_schema(rel).metadata[b"bigkg.model"])["comparator"] == "cos"  # PBG's default
            out.unlink(), rel.unlink()
        else:
            assert code == 2 and not out.exists() and not rel.exists()
            assert "applies the operators ['translation'] to the tail" in capsys.readouterr().err


def test_dynamic_relations_whose_operator_parameters_are_missing_are_an_error(tmp_path, capsys):
    """A dynamic-relation model of translation operators whose model.v<N>.h5 is missing (or
    lacks a side's parameters) converts no relations silently: it is an error naming the
    file and the parameter, and neither output is written."""
    write_pbg_checkpoint(tmp_path)
    model, config_path = tmp_path / "model", tmp_path / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "dynamic_relations": True, "relations": [
        {"name": "all_edges", "lhs": "user", "rhs": "item", "operator": "translation"}]}))
    names = tmp_path / "entities" / "dynamic_rel_names.json"
    out, rel = tmp_path / "pbg.parquet", tmp_path / "rel.parquet"
    names.write_text(json.dumps({"buys": 0}))
    assert main(["convert", str(model), "--out", str(out), "--relations", str(rel)]) == 2
    assert f"{names} is not a JSON list of relation names" in capsys.readouterr().err
    names.write_text(json.dumps(["buys", "likes"]))
    assert main(["convert", str(model), "--out", str(out), "--relations", str(rel)]) == 2
    assert f"{model / 'model.v3.h5'} has no lhs_operators.0.translations" in capsys.readouterr().err
    assert not out.exists() and not rel.exists()
    with h5py.File(model / "model.v3.h5", "w") as fh:  # the forward operators only
        fh.create_dataset("model/lhs_operators/0/translations", data=np.ones((2, 6), np.float32)).attrs[
            "state_dict_key"] = "lhs_operators.0.translations"
    assert main(["convert", str(model), "--out", str(out), "--relations", str(rel)]) == 2
    assert "has no rhs_operators.0.translations" in capsys.readouterr().err
    assert not out.exists() and not rel.exists()


def test_a_malformed_pbg_config_names_the_key_and_writes_nothing(tmp_path, capsys):
    """entities that is not an object, an entity type that is not one, or a num_partitions
    that is not a positive integer: an error naming config.json and the key, no traceback."""
    write_pbg_checkpoint(tmp_path)
    model, config_path, out = tmp_path / "model", tmp_path / "model" / "config.json", tmp_path / "pbg.parquet"
    config = json.loads(config_path.read_text())
    for entities, message in [
        (["user", "item"], "entities is list, not an object of entity types"),
        ({"user": 3, "item": {}}, "entities.user is 3, not an object of options"),
        ({"user": {"num_partitions": "2"}, "item": {}}, "entities.user.num_partitions is '2'; expected a positive integer"),
        ({"user": {"num_partitions": 0}, "item": {}}, "entities.user.num_partitions is 0; expected a positive integer"),
    ]:
        config_path.write_text(json.dumps({**config, "entities": entities}))
        assert main(["convert", str(model), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{config_path}: {message}" in err and "Traceback" not in err
        assert not list(tmp_path.glob("pbg.parquet*"))
