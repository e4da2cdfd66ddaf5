"""KGNN layers and encoder: graph construction, neighbourhoods, layer semantics,
quantized gradients against FP32, and the relation-operator hook."""

import pytest
import torch
from torch import nn

from bigkg.nn import (
    CompGCNLayer,
    EncoderSpec,
    Graph,
    GraphError,
    LightGCNLayer,
    RGCNLayer,
    build_encoder,
    segment_softmax,
)
from bigkg.nn.data import graph_of, read_triples
from bigkg.quant import SavedBytes


@pytest.fixture(scope="module")
def umls(shared_dataset):
    return graph_of(shared_dataset("umls") / "train.txt")


@pytest.fixture(scope="module")
def codex(shared_dataset):
    return graph_of(shared_dataset("codex-s") / "train.txt")


def test_reciprocal_edges_and_norms():
    g = Graph(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), torch.tensor([1, 2, 2]), 3, 2)
    assert g.num_relations == 4 and len(g) == 6
    triples = set(zip(g.src.tolist(), g.rel.tolist(), g.dst.tolist()))
    assert triples == {(0, 0, 1), (0, 1, 2), (1, 0, 2), (1, 2, 0), (2, 3, 0), (2, 2, 1)}
    assert torch.equal(g.dst, g.dst.sort().values)  # sorted by destination
    deg = torch.tensor([2.0, 2.0, 2.0])
    torch.testing.assert_close(g.weight, (deg[g.src] * deg[g.dst]).rsqrt())
    mean = Graph(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), torch.tensor([1, 2, 2]), 3, 2, norm="mean")
    torch.testing.assert_close(mean.weight, torch.full((6,), 0.5))


def test_bad_graph_input_names_the_problem():
    with pytest.raises(GraphError, match=r"tail ids must lie in \[0, 3\)"):
        Graph(torch.tensor([0]), torch.tensor([0]), torch.tensor([3]), 3, 1)
    with pytest.raises(GraphError, match="edge norm"):
        Graph(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), 3, 1, norm="max")
    with pytest.raises(GraphError, match="model.encoder.name"):
        build_encoder(EncoderSpec(name="gat"), 8, 2)
    with pytest.raises(GraphError, match="quantize_bits"):
        build_encoder(EncoderSpec(name="compgcn", quantize_bits=3), 8, 2)


def test_read_triples_rejects_a_malformed_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("a\tr\tb\nc\td\n")
    with pytest.raises(GraphError, match=r"train.txt:2: expected head<TAB>relation<TAB>tail"):
        read_triples(path)


@pytest.mark.parametrize("name", ["compgcn", "rgcn", "kgat"])
def test_neighbourhood_encoding_equals_full_graph(umls, name):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderSpec(name=name, quantize_bits=32), 12, umls.base_relations)
    emb = torch.randn(umls.num_nodes, 12)
    seeds = torch.tensor([5, 17, 5, 90])
    full = encoder.encode(emb, umls)[seeds]
    encoder.full_graph_max_nodes = 0
    local = encoder.encode(emb, umls, seeds)
    torch.testing.assert_close(local, full)


@pytest.mark.parametrize("whole", [True, False], ids=["whole-graph", "neighbourhood"])
def test_encode_rows_equals_encoding_a_spliced_table(umls, whole):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderSpec(name="compgcn", quantize_bits=32), 12, umls.base_relations)
    table = torch.randn(umls.num_nodes, 12)
    nodes = torch.tensor([3, 17, 90])
    rows = torch.randn(3, 12, requires_grad=True)
    spliced = encoder.encode(table.index_copy(0, nodes, rows), umls)[nodes]
    (reference,) = torch.autograd.grad(spliced.sum(), rows)
    if not whole:
        encoder.full_graph_max_nodes = 0
    out = encoder.encode_rows(table, nodes, rows, umls)
    torch.testing.assert_close(out, spliced)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), rows)[0], reference)
    with pytest.raises(GraphError, match="ascending"):
        encoder.encode_rows(table, nodes.flip(0), rows, umls)


def test_fanout_sampling_caps_incoming_edges_per_node(codex):
    seeds = torch.arange(0, 40)
    sub = codex.neighbourhood(seeds, 2, fanouts=[5, 3], generator=torch.Generator().manual_seed(0))
    full = codex.neighbourhood(seeds, 2)
    assert torch.equal(sub.nodes[sub.index], seeds)
    assert len(sub.edges) < len(full.edges)
    hop1 = sub.edges.dst < seeds.numel()
    assert torch.bincount(sub.edges.dst[hop1]).max() <= 5
    assert torch.bincount(sub.edges.dst[~hop1]).max() <= 3
    real = set(zip(codex.src.tolist(), codex.rel.tolist(), codex.dst.tolist()))
    got = zip(sub.nodes[sub.edges.src].tolist(), sub.edges.rel.tolist(), sub.nodes[sub.edges.dst].tolist())
    assert set(got) <= real


def _gradients(spec, graph, seed=0):
    torch.manual_seed(seed)
    encoder = build_encoder(spec, 32, graph.base_relations)
    emb = nn.Parameter(torch.randn(graph.num_nodes, 32) * 0.5)
    out = encoder.encode(emb, graph)
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * target).sum().backward()
    return torch.cat([emb.grad.flatten()] + [p.grad.flatten() for p in encoder.parameters()])


@pytest.mark.parametrize("name", ["compgcn", "rgcn"])
def test_quantized_gradients_stay_close_to_fp32(codex, name):
    reference = _gradients(EncoderSpec(name=name, layers=2), codex)
    exact = _gradients(EncoderSpec(name=name, layers=2, quantize_bits=32), codex)
    torch.testing.assert_close(exact, reference, rtol=1e-4, atol=1e-5)
    cos = nn.functional.cosine_similarity
    assert cos(_gradients(EncoderSpec(name=name, layers=2, quantize_bits=8), codex), reference, dim=0) >= 0.999
    assert cos(_gradients(EncoderSpec(name=name, layers=2, quantize_bits=2), codex), reference, dim=0) >= 0.9


def test_quantized_encoder_saves_no_edge_level_tensors(codex):
    torch.manual_seed(0)
    d = 32
    sizes = {}
    for bits in (0, 2):
        encoder = build_encoder(EncoderSpec(name="compgcn", quantize_bits=bits), d, codex.base_relations)
        emb = nn.Parameter(torch.randn(codex.num_nodes, d))
        with SavedBytes([emb, *encoder.parameters()], codex.edges().tensors()) as saved:
            encoder.encode(emb, codex)
        sizes[bits] = saved.report.activations
    edge_tensor = len(codex) * d * 4
    assert sizes[0] > 2 * edge_tensor
    assert sizes[2] < 0.1 * edge_tensor


def _int2_saved_and_gradients(graph, **spec):
    torch.manual_seed(0)
    d = 16
    encoder = build_encoder(EncoderSpec(layers=2, **spec), d, graph.base_relations)
    emb = nn.Parameter(torch.randn(graph.num_nodes, d))
    with SavedBytes([emb, *encoder.parameters()], graph.edges().tensors()) as saved:
        out = encoder.encode(emb * 1.0, graph)  # not a leaf: the first layer's input is not kept by autograd anyway
    (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    return saved.report.activations, [emb.grad] + [p.grad for p in encoder.parameters()]


def test_edge_stage_keeps_x_only_when_backward_reads_it(umls):
    # The input gradient of any elementwise message is the transposed
    # propagation; only mult's relation gradient reads x back. So LightGCN keeps
    # no activation at all (its INT2 gradients are exact), and CompGCN with sub
    # keeps less than with mult.
    saved, grads = _int2_saved_and_gradients(umls, name="lightgcn", quantize_bits=2)
    _, reference = _int2_saved_and_gradients(umls, name="lightgcn", quantize_bits=0)
    assert saved == 0
    for a, b in zip(grads, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with_sub, _ = _int2_saved_and_gradients(umls, name="compgcn", composition="sub", quantize_bits=2)
    with_mult, _ = _int2_saved_and_gradients(umls, name="compgcn", composition="mult", quantize_bits=2)
    assert 0 < with_sub < with_mult


class ScaleOperator(nn.Module):
    """A relation operator of the decoder's shape: forward(x, rel_ids)."""

    def __init__(self, num_relations, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(num_relations, dim) + 0.5)

    def forward(self, x, rel_ids):
        return x * self.scale[rel_ids]


@pytest.mark.parametrize("bits", [0, 32, 2])
def test_compgcn_trains_an_external_operator(umls, bits):
    torch.manual_seed(0)
    op = ScaleOperator(umls.num_relations, 8)
    layer = CompGCNLayer(8, 8, umls.base_relations, compose=op, bits=bits)
    x = torch.randn(umls.num_nodes, 8)
    out, _ = layer(x, umls.edges())
    out.sum().backward()
    assert op.scale.grad is not None and op.scale.grad.abs().sum() > 0
    # The message of edge u -> v is op(x_u, r): check one destination by hand.
    edges = umls.edges()
    v = int(edges.dst[0])
    into = edges.dst == v
    fwd = into & (edges.rel < umls.base_relations)
    agg = (op(x[edges.src[fwd]], edges.rel[fwd]) * edges.weight[fwd, None]).sum(0)
    bwd = into & ~fwd
    agg_inv = (op(x[edges.src[bwd]], edges.rel[bwd]) * edges.weight[bwd, None]).sum(0)
    pre = layer.transform.weight @ torch.cat([agg, agg_inv]) + layer.transform.bias + layer.self_loop.weight @ x[v]
    expected = torch.tanh(pre)
    torch.testing.assert_close(out[v], expected.detach(), rtol=1e-4, atol=1e-5)


def test_rgcn_messages_use_basis_weights(umls):
    torch.manual_seed(0)
    layer = RGCNLayer(6, 5, umls.base_relations, num_bases=3, activation="none")
    x = torch.randn(umls.num_nodes, 6)
    out, _ = layer(x, umls.edges())
    edges = umls.edges()
    v = int(edges.dst[-1])
    into = edges.dst == v
    bases = layer.bases.weight.view(3, 5, 6)
    w_rel = torch.einsum("rb,bkd->rkd", layer.coeff, bases)
    msgs = torch.einsum("ekd,ed->ek", w_rel[edges.rel[into]], x[edges.src[into]]) * edges.weight[into, None]
    expected = msgs.sum(0) + layer.self_loop.weight @ x[v] + layer.self_loop.bias
    torch.testing.assert_close(out[v], expected.detach(), rtol=1e-4, atol=1e-5)


def test_lightgcn_is_normalised_propagation(umls):
    x = torch.randn(umls.num_nodes, 4)
    layer = LightGCNLayer(4, umls.base_relations)
    out, _ = layer(x, umls.edges())
    e = umls.edges()
    adj = torch.sparse_coo_tensor(
        torch.stack([e.dst, e.src]), e.weight, (umls.num_nodes, umls.num_nodes), check_invariants=True
    )
    torch.testing.assert_close(out, torch.sparse.mm(adj, x))


def test_attention_is_a_softmax_over_incoming_edges():
    logits = torch.tensor([1.0, 2.0, 3.0, 0.5, 100.0])
    segment = torch.tensor([0, 0, 1, 1, 2])
    alpha = segment_softmax(logits, segment, 4)
    torch.testing.assert_close(torch.zeros(4).index_add(0, segment, alpha)[:3], torch.ones(3))
    torch.testing.assert_close(alpha[:2], torch.softmax(logits[:2], 0))


def test_dropout_is_active_only_in_training(umls):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderSpec(name="compgcn", quantize_bits=2, dropout=0.5), 8, umls.base_relations)
    emb = torch.randn(umls.num_nodes, 8)
    train_out = encoder.encode(emb, umls)
    encoder.eval()
    a, b = encoder.encode(emb, umls), encoder.encode(emb, umls)
    torch.testing.assert_close(a, b)
    assert (train_out == 0).float().mean() > 0.3


@pytest.mark.parametrize("name,op", [("compgcn", "mult"), ("compgcn", "sub"), ("lightgcn", None)])
def test_fused_kernel_agrees_with_torch_path(umls, name, op):
    grads = {}
    for fused in (True, False):
        torch.manual_seed(0)
        spec = EncoderSpec(name=name, quantize_bits=32, fused_kernels=fused, composition=op or "mult")
        encoder = build_encoder(spec, 20, umls.base_relations)
        emb = nn.Parameter(torch.randn(umls.num_nodes, 20))
        out = encoder.encode(emb, umls)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        grads[fused] = [out.detach(), emb.grad] + [p.grad for p in encoder.parameters()]
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
