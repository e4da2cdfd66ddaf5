"""Operators, comparators and KGModel scoring: shapes and algebraic facts."""

import itertools

import pytest
import torch

from bigkg.config import TrainingConfig, config_from_dict
from bigkg.format import EntityType, Manifest, Relation
from bigkg.model import IdentityEncoder, build_model
from bigkg.model.comparators import COMPARATORS, build_comparator, candidate_product
from bigkg.model.operators import OPERATORS
from bigkg.model.regularizers import regularization, regularization_gradient
from bigkg.training.closed_form import supports_closed_form

DIM = 6
RELATIONS = ["r0", "r1", "r2"]


def manifest() -> Manifest:
    return Manifest(
        num_partitions=1,
        entity_types=[EntityType("e", [10])],
        relations=[Relation(r, "e", "e") for r in RELATIONS],
        bucket_counts={},
    )


def model_for(operator="none", comparator="dot", reciprocal=False, relation_operators=None, **model):
    config = config_from_dict(
        {
            "model": {
                "dim": DIM,
                "operator": operator,
                "comparator": comparator,
                "reciprocal": reciprocal,
                "relation_operators": relation_operators or {},
                **model,
            }
        }
    )
    m = build_model(config, manifest())
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():  # move away from the identity initialisation
            p.add_(0.5 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("operator, comparator, bias", [
    *itertools.product(OPERATORS, COMPARATORS, [False]),
    *itertools.product(["none", "translation", "complex_diagonal"], COMPARATORS, [True]),
])
def test_candidate_scores_equal_pair_scores(operator, comparator, bias):
    """score_candidates on both sides agrees with scoring each (head, rel, tail) directly."""
    m = model_for(operator, comparator, bias=bias)
    g = torch.Generator().manual_seed(1)
    anchors, cands = torch.randn(4, DIM, generator=g), torch.randn(5, DIM, generator=g)
    rel = torch.tensor([0, 1, 2, 1])
    rhs = m.score_candidates("rhs", anchors, rel, cands)
    lhs = m.score_candidates("lhs", anchors, rel, cands)
    assert rhs.shape == lhs.shape == (4, 5)
    for n, k in itertools.product(range(4), range(5)):
        r = rel[n : n + 1]
        direct_rhs = m.score_pairs(anchors[n : n + 1], cands[k : k + 1], r)
        direct_lhs = m.score_pairs(cands[k : k + 1], anchors[n : n + 1], r)
        torch.testing.assert_close(rhs[n, k : k + 1], direct_rhs, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(lhs[n, k : k + 1], direct_lhs, atol=1e-4, rtol=1e-4)


def test_batched_shapes_and_mixed_operators():
    m = model_for("diagonal", "l2", relation_operators={"r1": "rotate", "r2": "translation"})
    anchors, cands = torch.randn(2, 3, DIM), torch.randn(2, 7, DIM)
    rel = torch.tensor([[0, 1, 2], [2, 2, 0]])
    for side in ("lhs", "rhs"):
        scores = m.score_candidates(side, anchors, rel, cands)
        assert scores.shape == (2, 3, 7)
        flat = m.score_candidates(side, anchors[1], rel[1], cands[1])
        torch.testing.assert_close(scores[1], flat)
    # relation r1 really uses the rotation: norms are kept
    x = torch.randn(5, DIM)
    ones = torch.ones(5, dtype=torch.long)
    torch.testing.assert_close(m.operate(x, ones).norm(dim=-1), x.norm(dim=-1))


def test_reciprocal_uses_its_own_relations():
    m = model_for("diagonal", "dot", reciprocal=True)
    anchors, cands, rel = torch.randn(3, DIM), torch.randn(4, DIM), torch.tensor([0, 1, 2])
    lhs = m.score_candidates("lhs", anchors, rel, cands)
    expected = m.score_candidates("rhs", anchors, rel + len(RELATIONS), cands)
    torch.testing.assert_close(lhs, expected)
    assert m.operators[0].diagonal.shape[0] == 2 * len(RELATIONS)


def test_rotate_preserves_norms():
    op = OPERATORS["rotate"](3, DIM)
    with torch.no_grad():
        op.phase.uniform_(-3, 3)
    x = torch.randn(10, DIM)
    rel = torch.randint(0, 3, (10,))
    torch.testing.assert_close(op(x, rel).norm(dim=-1), x.norm(dim=-1))


def test_complex_diagonal_is_the_complex_product():
    op = OPERATORS["complex_diagonal"](2, DIM)
    with torch.no_grad():
        op.real.normal_()
        op.imag.normal_()
    x = torch.randn(4, DIM)
    rel = torch.tensor([0, 1, 1, 0])
    half = DIM // 2
    xc = torch.complex(x[:, :half], x[:, half:])
    wc = torch.complex(op.real[rel], op.imag[rel])
    out = op(x, rel)
    torch.testing.assert_close(torch.complex(out[:, :half], out[:, half:]), xc * wc)
    # ComplEx score with dot: Re(sum h * w * conj(t))
    t = torch.randn(4, DIM)
    tc = torch.complex(t[:, :half], t[:, half:])
    torch.testing.assert_close((out * t).sum(-1), (xc * wc * tc.conj()).sum(-1).real)


def test_translation_and_linear_facts():
    trans = OPERATORS["translation"](2, DIM)
    with torch.no_grad():
        trans.translation.normal_()
    x, rel = torch.randn(3, DIM), torch.tensor([1, 0, 1])
    torch.testing.assert_close(trans(x, rel) - x, trans.translation[rel])
    lin = OPERATORS["linear"](2, DIM)
    torch.testing.assert_close(lin(x, rel), x)  # identity at initialisation


def test_comparators_known_values():
    a = torch.tensor([[3.0, 4.0]])
    c = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    torch.testing.assert_close(COMPARATORS["dot"]().candidates(a, c), torch.tensor([[0.0, 25.0, 50.0]]))
    torch.testing.assert_close(COMPARATORS["l2"]().candidates(a, c), torch.tensor([[-5.0, -1e-6, -5.0]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(COMPARATORS["squared_l2"]().candidates(a, c), torch.tensor([[-25.0, 0.0, -25.0]]))
    torch.testing.assert_close(COMPARATORS["cos"]().candidates(a, c[1:]), torch.tensor([[1.0, 1.0]]))


def test_a_biased_comparator_adds_the_first_coordinates_and_compares_the_rest():
    a = torch.tensor([[2.0, 3.0, 4.0]])
    c = torch.tensor([[-1.0, 0.0, 0.0], [0.5, 3.0, 4.0]])
    for name, compared in (("dot", [0.0, 25.0]), ("squared_l2", [-25.0, 0.0])):
        biased = build_comparator(name, bias=True)
        assert biased.name == f"{name}+bias"
        expected = torch.tensor([[2.0 - 1.0 + compared[0], 2.0 + 0.5 + compared[1]]])
        torch.testing.assert_close(biased.candidates(a, c), expected)
        torch.testing.assert_close(biased.pairs(a.expand(2, 3), c), expected[0])
    # the bias coordinate gets the score's gradient, one for one
    a.requires_grad_(True)
    build_comparator("dot", bias=True).pairs(a, c[1:]).sum().backward()
    torch.testing.assert_close(a.grad, torch.tensor([[1.0, 3.0, 4.0]]))


@pytest.mark.parametrize("reciprocal", [False, True])
def test_a_biased_model_ranks_heads_exactly_and_never_in_closed_form(reciprocal):
    m = model_for("complex_diagonal", "dot", reciprocal=reciprocal, bias=True)
    assert m._head_ranking == ("reciprocal" if reciprocal else "per_relation")
    assert not supports_closed_form(model_for("none", "dot", bias=True), TrainingConfig())
    assert supports_closed_form(model_for("none", "dot"), TrainingConfig())


def test_regularization_counts_rows_and_relations():
    m = model_for("complex_diagonal", "dot", regularizer="n3", regularization_weight=0.5)
    rows = [torch.ones(2, DIM)]
    rel = torch.tensor([0])
    value = m.regularization(rows, rel)
    half = DIM // 2
    modulus = torch.complex(m.operators[0].real[0], m.operators[0].imag[0]).abs()
    expected = 0.5 * (2 * half * 2 ** 1.5 + modulus.pow(3).sum())
    torch.testing.assert_close(value, expected)
    assert model_for("diagonal").regularization(rows, rel) is None


def test_identity_encoder_and_unknown_encoder():
    from bigkg.config import ConfigError

    m = model_for()
    assert isinstance(m.encoder, IdentityEncoder)
    with pytest.raises(ConfigError, match="model.encoder.name"):
        build_model(config_from_dict({"model": {"encoder": {"name": "gcn9"}}}), manifest())
    with pytest.raises(ConfigError, match="not a relation"):
        build_model(config_from_dict({"model": {"relation_operators": {"zzz": "rotate"}}}), manifest())


def test_candidate_product_gradients_are_exact_and_in_the_inputs_layout():
    """Its hand-written backward passes gradcheck, and both gradients come out contiguous
    (autograd's matmul backward hands the candidates a transposed view to copy)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    c = torch.randn(3, 7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(candidate_product, (a, c))
    grad_a, grad_c = torch.autograd.grad(candidate_product(a, c).pow(2).sum(), (a, c))
    assert grad_a.is_contiguous() and grad_c.is_contiguous()
    shared = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)  # broadcast over a's batch
    torch.testing.assert_close(candidate_product(a, shared), a @ shared.T)
    assert torch.autograd.gradcheck(candidate_product, (a, shared))


@pytest.mark.parametrize("name", ["n3", "l2"])
@pytest.mark.parametrize("is_complex", [False, True])
def test_regularization_gradient_is_autograds(name, is_complex):
    """The closed-form gradient of each regulariser (complex: a coordinate's modulus for both
    of its parts) equals autograd's through the penalty, zeros and negative entries included."""
    x = torch.randn(5, 3, 6, generator=torch.Generator().manual_seed(0))
    x[0, 0] = 0.0
    leaf = x.clone().requires_grad_()
    regularization(name, [leaf], is_complex).backward()
    torch.testing.assert_close(regularization_gradient(name, x, is_complex), leaf.grad)
