"""Config loading: defaults, overrides, and clear errors for typos and bad values."""

from pathlib import Path

import pytest
import torch

from bigkg.config import Config, ConfigError, config_from_dict, config_to_yaml, describe_options, load_config


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: d\nrun_dir: r\nmodel:\n  dim: 8\n  operator: diagonal\ntraining:\n  lr: 1\n")
    config = load_config(path, ["training.epochs=3", "model.reciprocal=true", "eval.hits=[1,5]"])
    assert config.model.dim == 8 and config.model.operator == "diagonal"
    assert config.training.lr == 1.0 and isinstance(config.training.lr, float)
    assert config.training.epochs == 3 and config.model.reciprocal is True
    assert config.eval.hits == [1, 5]
    assert config.training.batch_size == Config().training.batch_size


def test_round_trip_through_yaml(tmp_path):
    config = config_from_dict({"dataset": "x", "model": {"relation_operators": {"r1": "rotate"}, "dim": 4}})
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    "data, overrides, words",
    [
        ({"modle": {}}, [], ["modle", "model"]),
        ({"model": {"dimm": 3}}, [], ["model.dimm", "dim"]),
        ({}, ["training.los=softmax"], ["training.los", "loss"]),
        ({"model": {"operator": "transe"}}, [], ["model.operator", "transe", "translation"]),
        ({"training": {"batch_size": "many"}}, [], ["training.batch_size", "integer"]),
        ({"training": {"batch_size": 0}}, [], ["training.batch_size", "minimum"]),
        ({"model": {"reciprocal": "yes"}}, [], ["model.reciprocal", "true or false"]),
        ({"model": {"operator": "rotate", "dim": 5}}, [], ["model.dim", "even"]),
        ({"device": "tpu"}, [], ["device", "cuda"]),
        ({}, ["training.lr"], ["training.lr", "key.sub=value"]),
        ({"model": {"relation_operators": {"r": "bad"}}}, [], ["relation_operators.r", "bad"]),
        ({}, ["training.lr=nan"], ["training.lr", "finite", "nan"]),
        ({}, ["training.lr=.inf"], ["training.lr", "finite", "inf"]),
        ({}, ["training.margin=1" + "0" * 400], ["training.margin", "finite"]),
        ({"device": "cuda:x"}, [], ["device", "'cuda:x'", "cuda:N"]),
        ({"seed": -1}, [], ["seed", "-1", "minimum"]),
        ({"eval": {"rec_k": [0, 10]}}, [], ["eval.rec_k", "at least 1"]),
        ({"model": {"max_norm": 0}}, [], ["model.max_norm", "0", "above 0"]),
        ({}, ["model.max_norm=-1"], ["model.max_norm", "-1", "above 0"]),
        ({"model": {"max_norm": "big"}}, [], ["model.max_norm", "'big'"]),
    ],
)
def test_errors_name_key_and_allowed(data, overrides, words):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, overrides)
    for word in words:
        assert word in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_duplicate_key_and_non_utf8_config_name_the_file(tmp_path):
    # YAML keeps the last of two equal keys: the second section would silently replace the first.
    dup = tmp_path / "dup.yaml"
    dup.write_text("training:\n  epochs: 1\nmodel:\n  dim: 8\ntraining:\n  lr: 0.5\n")
    with pytest.raises(ConfigError, match=r"(?s)dup.yaml.*duplicate key 'training'.*line 5"):
        load_config(dup)
    with pytest.raises(ConfigError, match="duplicate key 'dim'"):
        config_from_dict({}, ["model={dim: 8, dim: 16}"])
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"seed: 1\n\xff: 2\n")
    with pytest.raises(ConfigError, match=f"cannot read config file {binary}: 'utf-8' codec"):
        load_config(binary)


def test_every_option_has_help():
    options = list(describe_options())
    keys = {key for key, *_ in options}
    assert {"model.dim", "training.chunk_size", "eval.early_stopping_patience", "checkpoint.keep_versions"} <= keys
    assert all(help_text for _, _, help_text, _ in options)


def test_max_norm_is_off_by_default_and_not_structural():
    """A run may resume under another bound: it changes no parameter's shape."""
    assert Config().model.max_norm is None
    config = config_from_dict({}, ["model.max_norm=1"])
    assert config.model.max_norm == 1.0 and isinstance(config.model.max_norm, float)
    assert "max_norm" not in config.model.STRUCTURAL_OPTIONS
    assert config_from_dict({"model": {"max_norm": 2.5}}, ["model.max_norm=null"]).model.max_norm is None


def test_foreign_negatives_refuse_a_graph_encoder():
    with pytest.raises(ConfigError, match="training.foreign_negatives.*'compgcn'"):
        config_from_dict({"training": {"foreign_negatives": 10}, "model": {"encoder": {"name": "compgcn"}}})
    assert config_from_dict({"training": {"foreign_negatives": 10}}).training.foreign_negatives == 10


@pytest.mark.parametrize("training", [{"foreign_pool": 100}, {"foreign_pool": 100, "foreign_negatives": 200}])
def test_a_foreign_pool_must_hold_the_foreign_negatives(training):
    with pytest.raises(ConfigError, match="training.foreign_pool: 100 must be 0 or at least"):
        config_from_dict({"training": training})
    assert config_from_dict({"training": {"foreign_pool": 300, "foreign_negatives": 200}}).training.foreign_pool == 300


def test_hogwild_workers_refuse_a_graph_encoder():
    """Its weights are saved for backward and updated in place: threads would corrupt each other."""
    with pytest.raises(ConfigError, match="training.workers: 2 Hogwild threads cannot share model.encoder 'compgcn'"):
        config_from_dict({"training": {"workers": 2}, "model": {"encoder": {"name": "compgcn"}}})
    assert config_from_dict({"training": {"workers": 2}}).training.workers == 2


REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(REPO.glob("configs/*.yaml")) + sorted(REPO.glob("benchmarks/configs/*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads(path):
    """A key misspelt or a value out of range in a shipped file fails here, not in a user's run."""
    load_config(path, ["dataset=d", "run_dir=r"])  # the benchmark configs leave both to --set


def test_matmul_precision_is_set_for_the_process_that_builds_the_device():
    from bigkg.device import build_device

    before = torch.get_float32_matmul_precision()
    try:
        build_device(config_from_dict({"matmul_precision": "high"}))
        assert torch.get_float32_matmul_precision() == "high"
        build_device(config_from_dict({}))
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)
    with pytest.raises(ConfigError, match="matmul_precision: 'tf32' is not allowed; choose one of highest, high, medium"):
        config_from_dict({"matmul_precision": "tf32"})
