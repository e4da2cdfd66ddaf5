"""The KGNN encoder inside the trainer: registered under its name, trained
through the model's encode hook, and used again at evaluation."""

import json
from pathlib import Path

import pytest
import torch

from bigkg.checkpoint import CheckpointStore
from bigkg.config import config_from_dict
from bigkg.format import load_manifest
from bigkg.model import EncoderContext, build_model
from bigkg.nn import EncoderSpec
from bigkg.nn.model_encoder import GraphEncoder, register
from bigkg.training import train
from partition_helpers import partition

CODEX = Path(__file__).resolve().parents[1] / "data" / "codex-s"


@pytest.fixture(scope="module")
def codex1(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("codex") / "codex1"
    partition([CODEX / "train.txt"], out, num_partitions=1, valid=[str(CODEX / "valid.txt")], test=[str(CODEX / "test.txt")])
    return out


def test_repeated_rows_get_one_gradient(codex1):
    manifest = load_manifest(codex1)
    encoder = GraphEncoder(EncoderSpec(name="compgcn", quantize_bits=2), codex1, manifest, 8)
    table = torch.randn(manifest.entity_type("entity").count, 8)
    rows = torch.tensor([3, 7, 3])
    leaf = table[rows].requires_grad_()
    out = encoder.encode(leaf, EncoderContext("entity", 0, rows, table))
    torch.testing.assert_close(out[0], out[2])
    out[0].sum().backward()
    assert leaf.grad[2].abs().sum() == 0  # the repeat is not a second leaf
    assert leaf.grad[0].abs().sum() > 0


def test_trainer_trains_a_quantized_sparsified_compgcn(codex1, tmp_path):
    register(EncoderSpec(layers=1, quantize_bits=2, message_thresholds=[0.5]))
    config = config_from_dict({
        "dataset": str(codex1),
        "run_dir": str(tmp_path / "run"),
        "model": {"dim": 16, "operator": "diagonal", "reciprocal": True, "encoder": {"name": "compgcn"}},
        "training": {"epochs": 2, "batch_size": 2000, "threads": 1, "lr": 0.1},
        "eval": {"valid_every": 0},
    })
    summary = train(config)
    assert summary is not None
    manifest = load_manifest(codex1)
    model = build_model(config, manifest)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    CheckpointStore(config.run_dir).latest().load_shared(model)
    after = list(model.encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # encoder weights were trained and saved
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_per_edge"] for r in records if r["type"] == "epoch"]
    assert losses[1] < losses[0]
