"""The KGNN encoder inside the trainer: chosen and set up by ``model.encoder``,
trained through the model's encode hook, and used again at evaluation."""

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bigkg.checkpoint import CheckpointStore, PartitionState
from bigkg.config import ConfigError, EncoderConfig, config_from_dict, load_config
from bigkg.format import load_manifest, read_bucket
from bigkg.losses import LOSSES
from bigkg.model import EncoderContext, build_model
from bigkg.nn import EncoderSpec
from bigkg.nn.model_encoder import GraphEncoder
from bigkg.optim import RowAdagrad
from bigkg.training.step import Batch, BatchStep
from launcher.cli import main as cli_main
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


def test_a_whole_partition_request_keeps_the_table_as_the_first_layers_leaf(codex1):
    """Rows that are the whole table go through as given: the layer saves that leaf by
    reference, so at INT2 the gradients that read it (self-loop weight, composition
    vectors) are exact, while the aggregate's weight still reads a quantized copy.
    (One layer without activation: the gradient arriving at the layer is exact.)
    Values are those of any other request."""
    manifest = load_manifest(codex1)
    n = manifest.entity_type("entity").count
    table = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    grads = {}
    for bits in (32, 2):
        torch.manual_seed(0)
        spec = EncoderSpec(name="compgcn", layers=1, activation="none", quantize_bits=bits)
        encoder = GraphEncoder(spec, codex1, manifest, 8)
        leaf = table.clone().requires_grad_()
        out = encoder.encode(leaf, EncoderContext("entity", 0, torch.arange(n), table))
        some = torch.tensor([5, 1, 9])
        torch.testing.assert_close(out[some], encoder.encode(table[some], EncoderContext("entity", 0, some, table)))
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
        grads[bits] = {name: p.grad for name, p in encoder.named_parameters()}
    for name in ("encoder.layers.0.self_loop.weight", "encoder.layers.0.compose.rel"):
        torch.testing.assert_close(grads[2][name], grads[32][name])
    aggregate = "encoder.layers.0.transform.weight"
    assert (grads[2][aggregate] - grads[32][aggregate]).norm() > 0.05 * grads[32][aggregate].norm()


def test_a_request_over_its_neighbourhood_matches_the_whole_partition(codex1):
    """A partition too large to propagate whole: each request propagates over its own
    neighbourhood, reading only the table rows it reaches; values and gradients are
    those of whole-partition propagation."""
    manifest = load_manifest(codex1)
    table = torch.randn(manifest.entity_type("entity").count, 8, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([30, 4, 30, 11])
    results = []
    for limit in (10**9, 0):
        torch.manual_seed(0)
        encoder = GraphEncoder(EncoderSpec(name="compgcn", layers=2, quantize_bits=32, full_graph_max_nodes=limit),
                               codex1, manifest, 8)
        assert encoder.whole_partition("entity", 0) == (limit > 0)
        leaf = table[rows].requires_grad_()
        out = encoder.encode(leaf, EncoderContext("entity", 0, rows, table))
        out.pow(2).sum().backward()
        results.append((out.detach(), leaf.grad))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])


def _entity_count(dataset: Path) -> int:
    return load_manifest(dataset).entity_type("entity").count


@pytest.mark.parametrize("encoder", [
    ["model.encoder.name=compgcn", "model.encoder.layers=2"],
    ["model.encoder.name=compgcn", "model.encoder.layers=1", "model.encoder.quantize_bits=2", "model.encoder.message_thresholds=[0.5]"],
], ids=["fp32", "int2-sparsified"])
def test_cli_trains_and_evaluates_an_encoder_from_the_config(codex1, tmp_path, capsys, encoder):
    run_dir = tmp_path / "run"
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump({
        "dataset": str(codex1),
        "run_dir": str(run_dir),
        "model": {"dim": 16, "operator": "diagonal", "reciprocal": True},
        "training": {"epochs": 2, "batch_size": 2000, "threads": 1, "lr": 0.1},
        "eval": {"valid_every": 0, "split": "valid"},
    }))
    sets = [arg for override in encoder for arg in ("--set", override)]
    assert cli_main(["train", str(config_path), *sets]) == 0

    config = load_config(config_path, encoder)
    model = build_model(config, load_manifest(codex1))
    assert isinstance(model.encoder, GraphEncoder)
    assert len(model.encoder.encoder.layers) == config.model.encoder.layers
    assert model.encoder.encoder.layers[0].bits == config.model.encoder.quantize_bits
    before = [p.detach().clone() for p in model.encoder.parameters()]
    CheckpointStore(run_dir).latest().load_shared(model)
    assert any(not torch.equal(a, b) for a, b in zip(model.encoder.parameters(), before))  # trained and saved
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_per_edge"] for r in records if r["type"] == "epoch"]
    assert losses[1] < losses[0]

    assert cli_main(["eval", str(config_path), *sets, "--json", str(tmp_path / "m.json")]) == 0
    mrr = json.loads((tmp_path / "m.json").read_text())["mrr"]
    n = _entity_count(codex1)
    random_mrr = sum(1 / k for k in range(1, n + 1)) / n  # expected reciprocal rank of a uniformly random rank
    assert math.isfinite(mrr) and mrr > 10 * random_mrr

    # export writes the encoder's representations, not the raw embeddings; query ranks with them
    assert cli_main(["export", str(config_path), *sets, "--format", "npy", "--out", str(tmp_path / "vectors")]) == 0
    exported = np.load(tmp_path / "vectors" / "entity.embedding.npy")
    local = np.load(tmp_path / "vectors" / "entity.local_id.npy")
    table, _ = CheckpointStore(run_dir).latest().load_partition("entity", 0)
    model.eval()
    with torch.no_grad():
        encoded = model.encoder.encode(table, EncoderContext("entity", 0, torch.arange(table.shape[0]), table))
    np.testing.assert_allclose(exported, encoded[torch.from_numpy(local)].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(exported, table[torch.from_numpy(local)].numpy())
    head, relation, _ = (CODEX / "train.txt").read_text().splitlines()[0].split("\t")
    answers = tmp_path / "answers.json"
    assert cli_main(["query", str(config_path), *sets, "--head", head, "--relation", relation, "-k", "5", "--json", str(answers)]) == 0
    assert len(json.loads(answers.read_text())["answers"]) == 5

    # Resuming with another layer count is refused, naming the option; runtime settings may change.
    capsys.readouterr()
    layers = config.model.encoder.layers
    assert cli_main(["train", str(config_path), *sets, "--set", f"model.encoder.layers={layers + 1}"]) == 2
    err = capsys.readouterr().err
    assert "model.encoder" in err and f"'layers': {layers}" in err
    assert cli_main(["train", str(config_path), *sets, "--set", "model.encoder.quantize_bits=8"]) == 0


def test_bad_encoder_values_name_the_key_and_what_is_allowed(tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump({"dataset": str(tmp_path), "run_dir": str(tmp_path / "run")}))
    assert cli_main(["train", str(config_path), "--set", "model.encoder.quantize_bits=3"]) == 2
    err = capsys.readouterr().err
    assert "model.encoder.quantize_bits: 3 is not allowed; choose one of 0, 1, 2, 4, 8, 32" in err
    cases = {
        "model.encoder.name=gat": "model.encoder.name: 'gat' is not allowed; choose one of none, compgcn, rgcn, lightgcn, kgat",
        "model.encoder.layers=0": "model.encoder.layers: 0 is below the minimum 1",
        "model.encoder.composition=add": "model.encoder.composition: 'add' is not allowed; choose one of mult, sub",
        "model.encoder.activation=gelu": "model.encoder.activation: 'gelu' is not allowed",
        "model.encoder.fanouts=[10]": "model.encoder.fanouts: 1 entries for 2 layers",
        "model.encoder.message_targets=[1.5]": "model.encoder.message_targets: every fraction must be in [0, 1)",
        "model.encoder.dropout=1.0": "model.encoder.dropout: 1.0 must be in [0, 1)",
        "model.encoder.message_thresholds=oops": "model.encoder.message_thresholds: expected a list of float",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(config_path, [override])
    with pytest.raises(ConfigError, match="set one of them, not both"):
        load_config(config_path, ["model.encoder.message_thresholds=[1.0]", "model.encoder.message_targets=[0.5]"])


def test_print_defaults_lists_the_encoder_options(capsys):
    assert cli_main(["config", "--print-defaults"]) == 0
    out = capsys.readouterr().out
    for key in dataclasses.fields(EncoderConfig):
        assert f"model.encoder.{key.name} = " in out
    assert "model.encoder.quantize_bits = 0 [0 | 1 | 2 | 4 | 8 | 32]" in out


def test_a_step_propagates_once_and_matches_dense_autograd(codex1):
    """With a graph encoder the step encodes the partition once per batch, and its
    row updates equal autograd through one encode of the whole table."""
    config = config_from_dict({
        "dataset": str(codex1),
        "model": {"dim": 8, "operator": "diagonal", "encoder": {"name": "compgcn", "layers": 2}},
        "training": {"chunk_size": 4, "num_uniform_negatives": 0, "lr": 0.5},
    })
    manifest = load_manifest(codex1)
    model = build_model(config, manifest)
    g = torch.Generator().manual_seed(0)
    n = manifest.entity_type("entity").count
    table, state = torch.randn(n, 8, generator=g), torch.rand(n, generator=g)
    edges = read_bucket(codex1, "train", 0, 0)
    batch = Batch(*(torch.from_numpy(a[:10].astype(np.int64)) for a in (edges.lhs, edges.rhs, edges.rel)), None)

    leaf = table.clone().requires_grad_()
    with torch.no_grad():
        reference = model.encoder.encode(table, EncoderContext("entity", 0, torch.arange(n), table))
    reps = model.encoder.encode(leaf, EncoderContext("entity", 0, torch.arange(n), table))
    torch.testing.assert_close(reps.detach(), reference)
    loss = 0.0
    for start, size in [(0, 4), (4, 4), (8, 2)]:
        sl = slice(start, start + size)
        h, t, r = reps[batch.lhs[sl]], reps[batch.rhs[sl]], batch.rel[sl]
        pos = torch.arange(size)
        loss = loss + LOSSES["softmax"](model.score_candidates("rhs", h, r, t), pos, 0.1).sum()
        loss = loss + LOSSES["softmax"](model.score_candidates("lhs", t, r, h), pos, 0.1).sum()
    (grad,) = torch.autograd.grad(loss, [leaf])
    touched = grad.abs().sum(1) > 0
    expected_state = state + grad.pow(2).mean(1) * touched
    expected_table = table - 0.5 * grad / (expected_state.sqrt() + 1e-10).unsqueeze(1) * touched.unsqueeze(1)

    calls = []
    model.encoder.encoder.register_forward_hook(lambda *_: calls.append(1))
    part = PartitionState(table.clone(), state.clone())
    step = BatchStep(model, LOSSES["softmax"], config.training, RowAdagrad(0.5), None, torch.Generator())
    step(batch, (("entity", 0), part), (("entity", 0), part))
    assert len(calls) == 1  # one propagation for both sides' four requests
    torch.testing.assert_close(part.embeddings, expected_table)
    torch.testing.assert_close(part.adagrad, expected_state)
    in_batch = torch.zeros(n, dtype=torch.bool)
    in_batch[torch.cat([batch.lhs, batch.rhs])] = True
    assert (touched & ~in_batch).any()  # neighbours of the batch's entities learn too


def test_weight_pruning_ramps_over_training_steps_across_a_resume(codex1, tmp_path):
    """weight_ramp_steps counts optimizer steps: every pruned weight of every layer drops
    target x step / ramp of its entries at a step, however many forward passes the step
    makes, and a resumed run goes on from the checkpoint's count."""
    from bigkg.nn.base import Linear
    from bigkg.training.trainer import Trainer

    target, ramp, batch = 0.5, 20, 8000
    per_epoch = math.ceil(read_bucket(codex1, "train", 0, 0).lhs.size / batch)

    def trained(epochs: int) -> tuple[Trainer, list[Linear]]:
        config = config_from_dict({
            "dataset": str(codex1), "run_dir": str(tmp_path / "run"),
            "model": {"dim": 8, "operator": "diagonal", "reciprocal": True,
                      "encoder": {"name": "compgcn", "layers": 2, "weight_target": target, "weight_ramp_steps": ramp}},
            "training": {"epochs": epochs, "batch_size": batch, "threads": 1},
            "eval": {"valid_every": 0},
        })
        trainer = Trainer(config)
        trainer.train()
        linears = [m for m in trainer.model.encoder.modules() if isinstance(m, Linear) and m.pruner is not None]
        assert len(linears) == 4  # two layers: the aggregate's map and the self-loop's
        return trainer, linears

    for epochs in (1, 2):  # the second call resumes from the first's checkpoint
        trainer, linears = trained(epochs)
        last_step = epochs * per_epoch - 1  # the step whose forward pass made the masks
        assert CheckpointStore(tmp_path / "run").latest().meta["progress"]["steps"] == epochs * per_epoch
        for linear in linears:
            dropped = int(target * min(1.0, last_step / ramp) * linear.weight.numel())
            assert int((~linear.mask).sum()) == dropped
