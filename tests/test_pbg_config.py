"""bigkg config --from-pbg: a PyTorch-BigGraph config file translated into a bigkg config."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from bigkg.config import load_config
from bigkg.pbg_config import PBGConfigError, load_pbg_config, translate, translate_pbg_config
from launcher.cli import main as cli_main

PBG_VENV = Path(os.environ.get("BIGKG_PBG_VENV", "/work/pbg-venv"))

# A PBG config in the shape of PBG's FB15k example: one dynamic relation, ComplEx, softmax.
FB15K_LIKE = """
def get_torchbiggraph_config():
    return dict(
        entity_path="data/fb", edge_paths=["data/fb/train_p", "data/fb/valid_p"], checkpoint_path="model/fb",
        entities={"all": {"num_partitions": 4}},
        relations=[{"name": "all_edges", "lhs": "all", "rhs": "all", "operator": "complex_diagonal"}],
        dynamic_relations=True, dimension=400, global_emb=False, comparator="dot",
        num_epochs=50, num_uniform_negs=1000, loss_fn="softmax", lr=0.1, eval_fraction=0,
    )
"""

# Named relations with their own operators, weights and negatives, and one side's negatives switched off.
NAMED = """
def get_torchbiggraph_config():
    relation = lambda name, op, **more: dict(name=name, lhs="user", rhs="item", operator=op, **more)
    return dict(
        entity_path="e", edge_paths=["p"], checkpoint_path="c",
        entities={"user": {"num_partitions": 2}, "item": {"num_partitions": 2}},
        relations=[relation("likes", "translation"), relation("buys", "translation", weight=2.5),
                   relation("rates", "linear", all_negs=True)],
        dimension=64, max_norm=1.0, init_scale=0.1, margin=0.3, batch_size=500, num_batch_negs=25,
        bucket_order="affinity", workers=8, relation_lr=0.02, disable_lhs_negs=True, background_io=True,
        checkpoint_preservation_interval=5, num_edge_chunks=3,
    )
"""


def write(tmp_path: Path, text: str, name: str = "pbg_config.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def translate_file(path: Path, tmp_path: Path, capsys) -> tuple[dict, str, str]:
    """(the YAML written, as a dict; the YAML's text; what went to stderr) of `bigkg config --from-pbg`."""
    out = tmp_path / "bigkg.yaml"
    assert cli_main(["config", "--from-pbg", str(path), "--out", str(out), "--force"]) == 0
    text = out.read_text()
    return yaml.safe_load(text), text, capsys.readouterr().err


def test_a_fb15k_like_config_translates_to_the_same_model_and_training(tmp_path, capsys):
    config, text, _ = translate_file(write(tmp_path, FB15K_LIKE), tmp_path, capsys)
    assert config["model"] == {"dim": 400, "init_scale": 1e-3, "max_norm": None, "global_embedding": False,
                               "comparator": "dot", "bias": False, "reciprocal": True, "operator": "complex_diagonal"}
    t = config["training"]
    assert (t["epochs"], t["loss"], t["lr"], t["num_uniform_negatives"]) == (50, "softmax", 0.1, 1000)
    assert (t["batch_size"], t["chunk_size"], t["margin"], t["bucket_order"], t["prefetch"]) == (1000, 50, 0.1, "inside_out", False)
    assert "workers" not in t  # PBG's default (every core) is named in a note instead
    for moved in ("entity_path", "edge_paths", "checkpoint_path", "dynamic_relations", "eval_fraction", "workers"):
        assert f"#   {moved}: " in text
    assert "bigkg partition --partitions 4" in text and "NOT TRANSLATED" not in text
    # the file is a bigkg config, given a dataset and a run directory
    loaded = load_config(tmp_path / "bigkg.yaml", ["dataset=d", "run_dir=r"])
    assert (loaded.model.dim, loaded.model.operator, loaded.training.num_uniform_negatives) == (400, "complex_diagonal", 1000)


def test_what_a_pbg_config_leaves_out_takes_pbg_defaults_not_bigkg_ones(tmp_path):
    pbg = {"dimension": 10, "relations": [{"name": "r", "lhs": "a", "rhs": "a"}]}
    t = translate(pbg).config
    assert (t["model"]["comparator"], t["model"]["global_embedding"], t["model"]["operator"]) == ("cos", True, "none")
    assert (t["training"]["loss"], t["training"]["lr"], t["training"]["epochs"]) == ("ranking", 0.01, 1)
    assert (t["training"]["num_edge_chunks"], t["training"]["max_edges_per_chunk"]) == (0, 1_000_000_000)


def test_named_relations_sides_snapshots_chunks_and_the_regulariser(tmp_path, capsys):
    config, text, _ = translate_file(write(tmp_path, NAMED), tmp_path, capsys)
    model, training = config["model"], config["training"]
    assert model["operator"] == "translation" and model["relation_operators"] == {"rates": "linear"}
    assert (model["max_norm"], model["init_scale"]) == (1.0, 0.1)
    assert training["relation_weights"] == {"buys": 2.5}
    assert "negatives" not in training and training["relation_negatives"] == {"rates": "all"}
    assert training["negative_sides"] == "tails"  # PBG's disable_lhs_negs: only tails are corrupted
    assert (training["workers"], training["shared_lr"], training["prefetch"]) == (8, 0.02, True)
    assert (training["batch_size"], training["chunk_size"], training["margin"]) == (500, 25, 0.3)
    assert (training["bucket_order"], training["num_edge_chunks"]) == ("affinity", 3)
    assert config["checkpoint"] == {"snapshot_every": 5}
    assert "bigkg partition --partitions 2" in text


def test_later_pbgs_regulariser_becomes_bigkgs():
    model = translate({"dimension": 8, "regularization_coef": 1e-3}).config["model"]
    assert (model["regularizer"], model["regularization_weight"]) == ("n3", 1e-3)


def test_options_bigkg_cannot_reproduce_are_named_in_the_file_and_on_stderr(tmp_path, capsys):
    text = """
    def get_torchbiggraph_config():
        return dict(entity_path="e", edge_paths=["p"], checkpoint_path="c", dimension=8, bias=True,
                    entities={"page": {"num_partitions": 1, "featurized": True}, "user": {"num_partitions": 1}},
                    relations=[dict(name="a", lhs="user", rhs="page", all_negs=True),
                               dict(name="b", lhs="user", rhs="page")],
                    half_precision=True)
    """
    config, written, err = translate_file(write(tmp_path, text), tmp_path, capsys)
    assert "entities.page.featurized" in written.split("# Notes:")[0]
    assert "warning: not translated: entities.page.featurized" in err
    assert "half_precision: not an option of PBG 1.0.0" in written
    assert config["model"]["bias"] is True


@pytest.mark.parametrize("text, message", [
    ("x = 1\n", "defines no get_torchbiggraph_config()"),
    ("def get_torchbiggraph_config():\n    return [1]\n", "returned list, not a dict"),
    ("def get_torchbiggraph_config():\n    raise KeyError('oops')\n", "could not be run: KeyError"),
    ("def get_torchbiggraph_config():\n    return dict(lr=0.1)\n", "has no 'dimension'"),
    ("def get_torchbiggraph_config():\n    return dict(dimension=8, disable_lhs_negs=True, disable_rhs_negs=True)\n",
     "both set"),
    ("def get_torchbiggraph_config():\n    return dict(dimension=8, comparator='manhattan')\n",
     "not valid: model.comparator"),
])
def test_a_config_that_cannot_be_translated_is_an_error_naming_the_file_and_why(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PBGConfigError, match=message) as caught:
        translate_pbg_config(path)
    assert f"PBG config {path}" in str(caught.value)


def test_an_existing_output_is_kept_without_force(tmp_path, capsys):
    out = tmp_path / "bigkg.yaml"
    out.write_text("keep me")
    assert cli_main(["config", "--from-pbg", str(write(tmp_path, FB15K_LIKE)), "--out", str(out)]) != 0
    assert f"{out} already exists (use --force" in capsys.readouterr().err
    assert out.read_text() == "keep me"


@pytest.mark.skipif(not (PBG_VENV / ".ready").is_file(), reason=f"PBG's venv ({PBG_VENV}) is not set up")
@pytest.mark.parametrize("text", [FB15K_LIKE, NAMED])
def test_the_defaults_taken_are_real_pbgs(tmp_path, text):
    """PBG itself loads the file and fills in its defaults: translating its full config gives
    the same bigkg config as translating the sparse file."""
    path = write(tmp_path, text)
    resolved = subprocess.run(
        [str(PBG_VENV / "bin" / "python"), "-c",
         "import json, sys; from torchbiggraph.config import ConfigFileLoader; "
         "print(json.dumps(ConfigFileLoader().load_config(sys.argv[1]).to_dict()))", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    full = json.loads(resolved.splitlines()[-1])
    assert translate(full).config == translate(load_pbg_config(path)).config


def test_a_missing_pbg_config_is_an_error_naming_it(tmp_path):
    with pytest.raises(PBGConfigError, match=f"PBG config {tmp_path / 'nope.py'} does not exist"):
        translate_pbg_config(tmp_path / "nope.py")
