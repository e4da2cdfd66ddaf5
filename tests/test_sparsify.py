"""Sparsified propagation: pruning rules, compaction inherited by depth, executed multiply-adds."""

import pytest
import torch

from bigkg.nn import CompGCNLayer, EdgeSet, EncoderSpec, Linear, build_encoder
from bigkg.nn.data import graph_of
from bigkg.sparsify import MacCounter, MessagePruner, SparsifyError, WeightPruner


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
    for _ in range(5):
        densities.append(float(pruner.mask(weight, scale).float().mean()))
        pruner.step()
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
