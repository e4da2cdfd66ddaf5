"""Sparsified propagation: pruning rules, compaction inherited by depth, executed multiply-adds."""

import pytest
import torch
from torch import nn

from bigkg.nn import CompGCNLayer, EdgeSet, EncoderSpec, Linear, MessagePassing, build_encoder
from bigkg.nn.data import graph_of
from bigkg.sparsify import MacCounter, MessagePruner, SparsifyError, WeightPruner, feature_scale


@pytest.fixture(scope="module")
def umls(shared_dataset):
    return graph_of(shared_dataset("umls") / "train.txt")


def test_threshold_keeps_messages_at_or_above_delta_times_mean():
    norms = torch.tensor([0.1, 0.5, 1.0, 2.0, 6.4])  # mean 2.0
    assert MessagePruner(deltas=[1.0]).keep(norms, 0).tolist() == [3, 4]
    assert MessagePruner(deltas=[0.2, 0.5]).keep(norms, 0).tolist() == [1, 2, 3, 4]
    assert MessagePruner(deltas=[0.2, 0.5]).keep(norms, 5).tolist() == [2, 3, 4]  # last entry repeats


def test_target_sparsity_keeps_the_largest_fraction_in_order():
    norms = torch.tensor([5.0, 0.1, 3.0, 0.2, 4.0, 0.3, 2.0, 0.4, 1.0, 0.5])
    assert MessagePruner(targets=[0.5]).keep(norms, 0).tolist() == [0, 2, 4, 6, 8]


def test_bad_pruning_settings_are_refused():
    with pytest.raises(SparsifyError, match="exactly one"):
        MessagePruner()
    with pytest.raises(SparsifyError, match=r"\[0, 1\)"):
        MessagePruner(targets=[1.0])
    with pytest.raises(SparsifyError, match="exactly one"):
        WeightPruner()


def _edge_key(edges: EdgeSet) -> set[tuple[int, int, int]]:
    return set(zip(edges.src.tolist(), edges.dst.tolist(), edges.rel.tolist()))


def test_aggregation_runs_on_the_compacted_edges(umls):
    torch.manual_seed(0)
    d = 16
    x = torch.randn(umls.num_nodes, d)
    pruned = CompGCNLayer(d, d, umls.base_relations, pruner=MessagePruner(deltas=[1.0]), bits=2)
    dense = CompGCNLayer(d, d, umls.base_relations, bits=2)
    dense.load_state_dict(pruned.state_dict())
    counter = MacCounter()
    pruned.counter = counter
    out, kept = pruned(x, umls.edges())
    assert 0 < len(kept) < len(umls)
    assert _edge_key(kept) <= _edge_key(umls.edges())
    # Same output as a layer that is simply given the kept edges.
    torch.testing.assert_close(out, dense(x, kept)[0])
    # The aggregation's multiply-adds are those of the kept edges: d entries
    # each for composing, weighting and scattering.
    scoring = counter["propagation"]
    counter.reset()
    pruned.aggregate(x, kept)
    assert counter["propagation"] == len(kept) * d * 3
    assert scoring - len(kept) * d * 3 < len(umls) * d  # pruning scores cost less than one dense pass


def test_kept_sets_shrink_with_depth_and_reach_90_percent(umls):
    torch.manual_seed(0)
    spec = EncoderSpec(name="compgcn", layers=3, message_thresholds=[1.0, 1.0, 1.0], quantize_bits=2)
    encoder = build_encoder(spec, 16, umls.base_relations)
    h = torch.randn(umls.num_nodes, 16)
    edges = umls.edges()
    kept_sets = [_edge_key(edges)]
    for layer in encoder.layers:
        h, edges = layer(h, edges)
        kept_sets.append(_edge_key(edges))
    for shallow, deep in zip(kept_sets, kept_sets[1:]):
        assert deep < shallow
    assert len(kept_sets[-1]) <= 0.1 * len(umls)


def test_encoder_counts_fewer_macs_when_sparsified(umls):
    torch.manual_seed(0)
    emb = torch.randn(umls.num_nodes, 16)
    counts = {}
    for name, thresholds in (("dense", []), ("sparse", [1.0, 1.0])):
        encoder = build_encoder(EncoderSpec(name="compgcn", message_thresholds=thresholds), 16, umls.base_relations)
        encoder.encode(emb, umls)
        counts[name] = (encoder.counter["propagation"], list(encoder.kept_edges))
    d, edges = 16, len(umls)
    assert counts["dense"] == (2 * edges * d * 3, [edges, edges])
    macs, kept = counts["sparse"]
    assert kept[1] < kept[0] < edges
    aggregation = sum(kept) * d * 3
    # Scoring per layer: node norms, two per-edge products, the relation-gain probe.
    scoring = 2 * (umls.num_nodes * d + 2 * edges + umls.num_relations * 32 * d)
    assert aggregation <= macs <= aggregation + scoring


def _full_aggregate(layer: CompGCNLayer, x: torch.Tensor, edges: EdgeSet) -> torch.Tensor:
    """[N, 2d]: each node's in- and out-direction sums of a_uv * phi(x_u, r), zero rows included."""
    src, dst, rel, weight = edges.tensors()
    messages = layer.compose(x[src], rel) * weight[:, None]
    channel = (rel >= layer.base_relations).long()
    return torch.zeros(2 * x.shape[0], x.shape[1]).index_add(0, 2 * dst + channel, messages).view(x.shape[0], -1)


def _reference_compgcn(layer: CompGCNLayer, x: torch.Tensor, edges: EdgeSet) -> torch.Tensor:
    """The layer's output over ``edges`` in plain torch: a full [N, 2d]
    aggregate (zero rows included) and dense products on every row."""
    agg = _full_aggregate(layer, x, edges)
    return torch.tanh(agg @ layer.transform.weight.t() + layer.transform.bias + x @ layer.self_loop.weight.t())


def _pruned_run(graph, bits: int, loss_rows: int | None, noise_seed: int = 0):
    """A 2-layer pruned CompGCN (the same parameters every call): its output,
    kept edge sets and gradients for a loss over the first ``loss_rows`` rows
    (all when None), with the rounding noise drawn from ``noise_seed``."""
    torch.manual_seed(0)
    spec = EncoderSpec(name="compgcn", layers=2, quantize_bits=bits, message_thresholds=[1.5])
    encoder = build_encoder(spec, 16, graph.base_relations)
    emb = nn.Parameter(torch.randn(graph.num_nodes, 16))
    torch.manual_seed(noise_seed)
    weights = torch.randn(graph.num_nodes, 16, generator=torch.Generator().manual_seed(1))
    if loss_rows is not None:
        weights[loss_rows:] = 0
    h, edges, kept = emb, graph.edges(), []
    for layer in encoder.layers:
        h, edges = layer(h, edges)
        kept.append(edges)
    (h * weights).sum().backward()
    return encoder, emb, weights, h.detach(), kept, [emb.grad] + [p.grad for p in encoder.parameters()]


@pytest.mark.parametrize("bits", [0, 32, 2])
@pytest.mark.parametrize("loss_rows", [None, 10])
def test_restricted_node_work_matches_the_full_computation(umls, bits, loss_rows):
    # The neighbour transform runs on the rows (per direction) that receive
    # kept messages, and backward products on the rows with a nonzero
    # gradient (the loss's reach: all rows, or 10 rows' neighbourhoods). The
    # result must be the full computation's: a receiving row dropped, or a
    # gradient row wrongly skipped, changes the outputs or the gradients.
    encoder, emb, weights, out, kept, grads = _pruned_run(umls, bits, loss_rows)
    for layer_edges in kept:
        channel = (layer_edges.rel >= umls.base_relations).long()
        received = torch.zeros(umls.num_nodes, 2, dtype=torch.bool)
        received[layer_edges.dst, channel] = True
        assert (~received.any(1)).any() and (received.sum(1) == 1).any()  # no messages; one direction only
    params = [emb, *encoder.parameters()]
    for p in params:
        p.grad = None
    h = emb
    for layer, layer_edges in zip(encoder.layers, kept):
        h = _reference_compgcn(layer, h, layer_edges)
    (h * weights).sum().backward()
    torch.testing.assert_close(out, h.detach(), rtol=1e-5, atol=1e-6)  # the forward pass is exact in every mode
    reference = [p.grad for p in params]
    if bits == 2:
        assert nn.functional.cosine_similarity(_flat(grads), _flat(reference), dim=0) >= 0.9
        return
    for got, want in zip(grads, reference):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def test_restricted_int2_gradients_are_unbiased(umls):
    # Averaging INT2 gradients over fresh rounding noise approaches the exact
    # gradient: the restriction to receiving and live rows adds no bias.
    exact = _flat(_pruned_run(umls, 32, 10)[-1])
    draws = torch.stack([_flat(_pruned_run(umls, 2, 10, noise_seed=i)[-1]) for i in range(16)])
    cos = nn.functional.cosine_similarity
    single, mean = cos(draws[0], exact, dim=0), cos(draws.mean(0), exact, dim=0)
    assert mean >= 0.99 and mean > single


def test_weight_mask_of_the_restricted_transform_is_the_full_inputs(umls):
    # Weight importance scales by each input feature's RMS over all rows:
    # the rows that receive nothing count as zeros, not as absent.
    torch.manual_seed(0)
    layer = CompGCNLayer(16, 16, umls.base_relations, pruner=MessagePruner(deltas=[1.5]), weight_pruner=WeightPruner(target=0.5))
    x = torch.randn(umls.num_nodes, 16)
    _, kept = layer(x, umls.edges())
    agg = _full_aggregate(layer, x, kept)
    assert torch.equal(layer.transform.mask, WeightPruner(target=0.5).mask(layer.transform.weight, feature_scale(agg)))


def test_closed_form_relation_gain_equals_probing_every_relation(umls):
    torch.manual_seed(0)
    x = torch.randn(umls.num_nodes, 16)
    for op in ("mult", "sub"):
        layer = CompGCNLayer(16, 16, umls.base_relations, op=op)
        with torch.no_grad():
            torch.testing.assert_close(layer.relation_gain(x), MessagePassing.relation_gain(layer, x), rtol=1e-4, atol=1e-6)


def test_weight_importance_is_relative_to_input_scale():
    weight = torch.tensor([[0.5, 2.0], [0.4, 1.0]])
    scale = torch.tensor([10.0, 0.1])  # feature 0 is large, feature 1 tiny
    mask = WeightPruner(delta=1.0).mask(weight, scale)
    # importance: [[5, 0.2], [4, 0.1]], mean 2.325: the big weights on the tiny feature go.
    assert mask.tolist() == [[True, False], [True, False]]


def test_weight_schedule_raises_sparsity_to_the_target():
    torch.manual_seed(0)
    weight, scale = torch.randn(20, 50), torch.rand(50) + 0.5
    pruner = WeightPruner(target=0.8, ramp_steps=4)
    densities = []
    for step in range(5):
        pruner.steps = step
        densities.append(float(pruner.mask(weight, scale).float().mean()))
    assert densities[0] == 1.0
    assert densities == sorted(densities, reverse=True)
    assert densities[-1] == pytest.approx(0.2)


def test_pruned_weights_get_no_gradient_and_no_effect():
    torch.manual_seed(0)
    layer = Linear(8, 4, pruner=WeightPruner(target=0.5))
    x = torch.randn(30, 8)
    out = layer(x, 2, None)
    out.sum().backward()
    mask = layer.mask
    assert layer.density == pytest.approx(0.5)
    torch.testing.assert_close(out, x @ (layer.weight * mask).t().detach() + layer.bias.detach())
    assert torch.all(layer.weight.grad[~mask] == 0)
