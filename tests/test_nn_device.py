"""Encoders off the CPU: a graph moves to the embeddings' device, mismatched
devices are refused, and on CUDA the layers' torch path (the fused kernel is CPU
only) computes what the CPU computes (GPU-marked tests)."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from bigkg.format import load_manifest
from bigkg.model import EncoderContext
from bigkg.nn import EncoderSpec, GraphError, build_encoder
from bigkg.nn.data import graph_of
from bigkg.nn.graph import Graph
from bigkg.nn.model_encoder import GraphEncoder
from launcher.cli import main as cli_main
from partition_helpers import partition

CODEX = Path(__file__).resolve().parents[1] / "data" / "codex-s"
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def codex():
    return graph_of(CODEX / "train.txt")


def test_graph_moves_to_a_device_with_all_its_tensors(codex):
    assert codex.to("cpu") is codex
    moved = codex.to("meta")
    assert moved.device.type == "meta" and codex.device.type == "cpu"
    for name in ("src", "dst", "rel", "weight", "rowptr"):
        tensor = getattr(moved, name)
        assert tensor.device.type == "meta" and tensor.shape == getattr(codex, name).shape
    assert (moved.num_nodes, moved.num_relations, moved.base_relations) == (codex.num_nodes, codex.num_relations, codex.base_relations)


def test_encoder_refuses_embeddings_on_another_device(codex):
    encoder = build_encoder(EncoderSpec(name="compgcn"), 8, codex.base_relations)
    with pytest.raises(GraphError, match="embeddings on meta but the graph on cpu"):
        encoder.encode(torch.empty(codex.num_nodes, 8, device="meta"), codex)


def _step(spec: EncoderSpec, graph, device: str, nodes: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Output and every gradient of one encoder step on ``device``, back on the CPU."""
    torch.manual_seed(0)
    encoder = build_encoder(spec, 16, graph.base_relations).to(device)
    emb = nn.Parameter(torch.randn(graph.num_nodes, 16).to(device))
    out = encoder.encode(emb, graph.to(device), None if nodes is None else nodes.to(device))
    (out * torch.linspace(-1, 1, out.numel()).view(out.shape).to(device)).sum().backward()
    return [t.cpu() for t in (out.detach(), emb.grad, *(p.grad for p in encoder.parameters()))]


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("bits", [0, 32])
@pytest.mark.parametrize("name", ["compgcn", "kgat"])
def test_cuda_encoder_equals_cpu(codex, name, bits):
    spec = EncoderSpec(name=name, layers=2, quantize_bits=bits)
    # The GPU's atomic additions sum a gradient over the graph's edges in an order of their own:
    # single entries were seen 1.4e-4 relative off the CPU's.
    for gpu, cpu in zip(_step(spec, codex, "cuda"), _step(spec, codex, "cpu")):
        torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@cuda_only
def test_cuda_neighbourhood_encoding_equals_cpu_full_graph(codex):
    spec = EncoderSpec(name="compgcn", layers=2, quantize_bits=32, full_graph_max_nodes=0)
    seeds = torch.tensor([5, 17, 5, 900])
    gpu = _step(spec, codex, "cuda", seeds)[0]
    full = _step(EncoderSpec(name="compgcn", layers=2, quantize_bits=32), codex, "cpu")[0]
    torch.testing.assert_close(gpu, full[seeds], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@cuda_only
def test_cuda_int2_gradients_stay_close_to_cpu_fp32(codex):
    reference = torch.cat([t.flatten() for t in _step(EncoderSpec(name="compgcn", layers=2), codex, "cpu")[1:]])
    int2 = torch.cat([t.flatten() for t in _step(EncoderSpec(name="compgcn", layers=2, quantize_bits=2), codex, "cuda")[1:]])
    assert nn.functional.cosine_similarity(int2, reference, dim=0) >= 0.9


@pytest.fixture(scope="module")
def codex1(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("codex") / "codex1"
    partition([CODEX / "train.txt"], out, num_partitions=1)
    return out


@pytest.mark.gpu
@cuda_only
def test_cuda_graph_encoder_hook_equals_cpu(codex1):
    """The trainer's hook copies the partition graph to the rows' device once and encodes there."""
    manifest = load_manifest(codex1)
    results = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        encoder = GraphEncoder(EncoderSpec(name="compgcn", layers=2, quantize_bits=32), codex1, manifest, 8).to(device)
        table = torch.randn(manifest.entity_type("entity").count, 8).to(device)
        rows = torch.tensor([3, 7, 3, 100], device=device)
        leaf = table[rows].requires_grad_()
        out = encoder.encode(leaf, EncoderContext("entity", 0, rows, table))
        out.sum().backward()
        assert encoder.graph_on("entity", 0, table.device) is encoder.graph_on("entity", 0, table.device)
        results[device] = (out.detach().cpu(), leaf.grad.cpu())
    for gpu, cpu in zip(results["cuda"], results["cpu"]):
        torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@cuda_only
def test_cli_trains_an_int2_sparsified_encoder_on_cuda(codex1, tmp_path):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump({
        "dataset": str(codex1), "run_dir": str(tmp_path / "run"), "device": "cuda",
        "model": {"dim": 16, "operator": "diagonal", "reciprocal": True,
                  "encoder": {"name": "compgcn", "layers": 2, "quantize_bits": 2, "message_thresholds": [1.0, 1.1]}},
        "training": {"epochs": 2, "batch_size": 2000, "threads": 1, "lr": 0.1},
        "eval": {"valid_every": 0},
    }))
    assert cli_main(["train", str(config_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_per_edge"] for r in records if r["type"] == "epoch"]
    assert len(losses) == 2 and losses[1] < losses[0]


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("norm", ["sym", "none"])
def test_graph_built_from_cuda_tensors_has_every_tensor_there(norm):
    """``Graph.to`` keeps a graph already on the device as it is, so its own row pointers and
    weights must be made there too, or neighbourhoods index CPU tensors with CUDA ids."""
    heads, rels, tails = torch.tensor([0, 0, 1, 3]), torch.tensor([0, 1, 0, 1]), torch.tensor([1, 2, 2, 0])
    cpu = Graph(heads, rels, tails, 4, 2, norm=norm)
    gpu = Graph(heads.cuda(), rels.cuda(), tails.cuda(), 4, 2, norm=norm)
    for name in ("src", "dst", "rel", "weight", "rowptr"):
        assert getattr(gpu, name).device.type == "cuda", name
    seeds = torch.tensor([2, 0])
    want, got = cpu.neighbourhood(seeds, 2), gpu.neighbourhood(seeds.cuda(), 2)
    torch.testing.assert_close(got.nodes.cpu(), want.nodes)
    torch.testing.assert_close(got.edges.weight.cpu(), want.edges.weight)
