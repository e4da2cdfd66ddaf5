"""Row-wise Adagrad: equal to a dense reference on the touched rows, other rows untouched."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bigkg.checkpoint import PartitionState
from bigkg.config import config_from_dict
from bigkg.format import EntityType, Manifest, Relation
from bigkg.losses import LOSSES
from bigkg.model import build_model
from bigkg.optim import RowAdagrad, RowScratch, _step_dense, _step_numba, _step_torch, build_shared_optimizer, clip_row_norms
from bigkg.training.foreign import ForeignSample
from bigkg.training.step import Batch, BatchStep
from bigkg.training.builders import build_all_rows_relations, build_side_weights

REPO = Path(__file__).resolve().parents[1]


def dense_row_adagrad(table, state, grad, lr, eps=1e-10):
    """The same rule as a dense pass: rows with a zero gradient are unchanged."""
    touched = grad.abs().sum(1) > 0
    new_state = state + grad.pow(2).mean(1) * touched
    new_table = table - lr * grad / (new_state.sqrt() + eps).unsqueeze(1) * touched.unsqueeze(1)
    return new_table, new_state


PRELOAD_THEN_STEP = """
import torch
from bigkg.optim import RowAdagrad, _accumulate, _assign_slots, _update_rows, preload_cpu_kernels
kernels = (_assign_slots, _accumulate, _update_rows)
preload_cpu_kernels().join()
loaded = [list(k.signatures) for k in kernels]
table, state = torch.randn(50, 8), torch.zeros(50)
RowAdagrad(0.1).step(table, state, [torch.tensor([3, 4, 3]), torch.tensor([7])], [torch.randn(3, 8), torch.randn(1, 8)])
print(all(loaded) and loaded == [list(k.signatures) for k in kernels])
"""


def test_preloaded_kernels_are_the_ones_a_training_step_calls():
    """The background preload compiles (or loads) every kernel of the CPU update with the
    types a real step passes, so the first step finds them ready (a fresh process: no
    kernel loaded before)."""
    out = subprocess.run([sys.executable, "-c", PRELOAD_THEN_STEP], check=True, capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("kernel", [_step_torch, _step_dense, _step_numba, None])
def test_row_adagrad_matches_dense_reference(kernel):
    """Repeated rows across and within pieces get one update with their summed gradient;
    the compiled CPU kernel (which restores its slot map to all -1 and overwrites, rather
    than adds to, what an earlier step left in its slot sums), the sorted torch one and the
    whole-table one (GPU paths) and the dispatching step (twice, reusing its scratch) agree."""
    g = torch.Generator().manual_seed(0)
    table, state = torch.randn(50, 8, generator=g), torch.rand(50, generator=g)
    ids = [torch.tensor([3, 17, 4, 3]), torch.tensor([49, 17])]
    grads = [torch.randn(4, 8, generator=g), torch.randn(2, 8, generator=g)]
    dense_grad = torch.zeros(50, 8)
    for i, grad in zip(ids, grads):
        dense_grad.index_add_(0, i, grad)
    expected_table, expected_state = dense_row_adagrad(table, state, dense_grad, 0.3)
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[torch.cat(ids)] = False
    before = table.clone()
    optimizer = RowAdagrad(0.3)
    if kernel in (_step_torch, _step_dense):
        kernel(table, state, ids, grads, optimizer.lr, optimizer.eps)
    elif kernel is _step_numba:
        scratch = RowScratch(50, 8)
        scratch.sums_for(16).fill(float("nan"))  # an earlier step's leftovers
        kernel(table, state, ids, grads, optimizer.lr, optimizer.eps, scratch)
        assert (scratch.slot_of == -1).all()
    else:
        optimizer.step(table, state, ids, grads)
    torch.testing.assert_close(table, expected_table)
    torch.testing.assert_close(state, expected_state)
    assert torch.equal(table[untouched], before[untouched])
    if kernel is None:  # a second step with other rows, through the same scratch
        more_ids, more_grad = [torch.tensor([17, 20, 20])], [torch.randn(3, 8, generator=g)]
        dense_grad = torch.zeros(50, 8).index_add_(0, more_ids[0], more_grad[0])
        expected_table, expected_state = dense_row_adagrad(expected_table, expected_state, dense_grad, 0.3)
        optimizer.step(table, state, more_ids, more_grad)
        torch.testing.assert_close(table, expected_table)
        torch.testing.assert_close(state, expected_state)


@pytest.mark.parametrize("kernel", [_step_torch, _step_numba, None])
def test_row_adagrad_max_norm_clips_the_updated_rows_only(kernel):
    """With max_norm, each updated row (repeated ones once) is the dense rule's row scaled
    down to norm max_norm where it is longer, as F.embedding's renorm does; rows not named
    keep their values, even above the bound (no pass over the table). The compiled CPU
    kernel, the torch one (GPU path) and the dispatching step agree."""
    g = torch.Generator().manual_seed(2)
    table, state = torch.randn(50, 8, generator=g), torch.rand(50, generator=g)
    ids = [torch.tensor([3, 17, 4, 3, 30]), torch.tensor([49, 17])]
    grads = [torch.randn(5, 8, generator=g), torch.randn(2, 8, generator=g)]
    grads[0][4] *= 1e-3  # row 30: a small step, ...
    table[30] *= 0.1  # ... from a short row: stays within the bound, unchanged by the clip
    dense_grad = torch.zeros(50, 8)
    for i, grad in zip(ids, grads):
        dense_grad.index_add_(0, i, grad)
    max_norm = 1.5
    expected_table, expected_state = dense_row_adagrad(table, state, dense_grad, 0.3)
    touched = torch.zeros(50, dtype=torch.bool)
    touched[torch.cat(ids)] = True
    norms = expected_table.norm(dim=1, keepdim=True)
    expected_table = torch.where(touched.unsqueeze(1) & (norms > max_norm), expected_table * max_norm / (norms + 1e-7),
                                 expected_table)
    assert (norms[touched] > max_norm).sum() >= 3 and norms[30] < max_norm  # both cases are tested
    assert (table[~touched].norm(dim=1) > max_norm).any()
    before = table.clone()
    optimizer = RowAdagrad(0.3, max_norm=max_norm)
    if kernel is _step_torch:
        kernel(table, state, ids, grads, optimizer.lr, optimizer.eps, max_norm=max_norm)
    elif kernel is _step_numba:
        kernel(table, state, ids, grads, optimizer.lr, optimizer.eps, RowScratch(50, 8), max_norm=max_norm)
    else:
        optimizer.step(table, state, ids, grads)
    torch.testing.assert_close(table, expected_table)
    torch.testing.assert_close(state, expected_state)
    assert torch.equal(table[~touched], before[~touched])
    assert table[touched].norm(dim=1).max() <= max_norm * (1 + 1e-6)  # float32 rounding


def test_clip_row_norms_scales_long_rows_only():
    table = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clip_row_norms(table, 1.0)
    torch.testing.assert_close(table, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    clip_row_norms(table, None)  # no bound: nothing changes
    torch.testing.assert_close(table, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


def twin_models(config, manifest, g: torch.Generator):
    """The model a step updates and the autograd reference, with the same random parameters."""
    model, reference = build_model(config, manifest), build_model(config, manifest)
    with torch.no_grad():
        for p, q in zip(model.parameters(), reference.parameters()):
            p.normal_(generator=g)
            q.copy_(p)
    return model, reference


def foreign_candidates(mode: str | None, count: int, d: int, g: torch.Generator):
    """(head and tail samples for the step; for the reference, their pool rows as leaves, and
    the head and tail candidates a batch scores). ``mode``: None; "pool", every batch scores
    the whole pool; "drawn", each batch draws 5 rows of a pool of ``count`` (so some twice),
    with the step's generator, which draws them before anything else."""
    if mode is None:
        return None, (), (None, None)
    rows = [torch.randn(count, d, generator=g) for _ in range(2)]
    per_batch = 5 if mode == "drawn" else 0
    samples = tuple(ForeignSample("e", {1: torch.arange(count)}, r, per_batch) for r in rows)
    leaves = tuple(r.clone().requires_grad_() for r in rows)
    if mode == "pool":
        return samples, leaves, leaves
    step_generator = torch.Generator()  # a fresh one, as step_and_compare gives the step
    return samples, leaves, tuple(leaf[torch.randint(0, count, (per_batch,), generator=step_generator)] for leaf in leaves)


def step_and_compare(model, config, batch, table, state, samples, pool_leaves, expected_table, expected_state,
                     closed_form=False, side_weights=None, all_rows=None):
    """Run BatchStep on a copy of the partition and check it against the reference's update;
    foreign rows' gradients are handed back to their samples, not applied."""
    part = PartitionState(table.clone(), state.clone())
    step = BatchStep(model, LOSSES["softmax"], config.training, RowAdagrad(0.5),
                     build_shared_optimizer(model, config.training), torch.Generator(), side_weights, all_rows=all_rows)
    assert step.closed_form == closed_form
    step(batch, (("e", 0), part), (("e", 0), part), foreign=samples)
    torch.testing.assert_close(part.embeddings, expected_table)
    torch.testing.assert_close(part.adagrad, expected_state)
    for sample, leaf in zip(samples or (), pool_leaves):
        torch.testing.assert_close(sample.grad, leaf.grad)
    return part


@pytest.mark.parametrize("closed_form", [True, False])
@pytest.mark.parametrize("operator", ["complex_diagonal", "none"])
@pytest.mark.parametrize("uniform, anchor_negatives, foreign", [
    (0, False, None), (3, False, None), (3, True, None), (0, False, "pool"), (3, True, "pool"), (3, False, "drawn"),
])
def test_batch_step_equals_dense_autograd_reference(uniform, anchor_negatives, foreign, operator, closed_form):
    """A full step (repeated rows, both sides, regulariser, chunks of 4, 4 and 2, each with the
    chunk's positives and ``uniform`` drawn rows as candidates, optionally each positive's own
    anchor as one more candidate, masked on the self-loop 3->3, and foreign candidates scored
    by every positive, whose gradients go back to their pool) against autograd on the whole table,
    by autograd and, where it applies (no anchors), by the closed-form softmax gradient, whose
    chunks share their positive block between the two sides without an operator."""
    check_batch_step(uniform, anchor_negatives, foreign, operator, False, "n3", closed_form)


@pytest.mark.parametrize("operator", ["complex_diagonal", "none"])
@pytest.mark.parametrize("uniform, anchor_negatives, foreign", [(3, False, None), (3, True, "pool"), (3, False, "drawn")])
def test_batch_step_with_global_embeddings_equals_dense_autograd_reference(uniform, anchor_negatives, foreign, operator):
    """model.global_embedding: every row scored (positives, uniform and foreign negatives,
    anchors) is represented with the type's global embedding added, which the shared optimizer
    trains; the closed form, which has no shared parameters, steps aside."""
    check_batch_step(uniform, anchor_negatives, foreign, operator, False, "n3", True, global_embedding=True)


@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("regularizer", ["none", "l2", "n3"])
def test_closed_form_step_with_reciprocal_relations_and_regularizers(reciprocal, regularizer):
    """Without an operator, reciprocal relations still score a head as the tail's plain product,
    so the closed form applies; each regulariser's gradient is added to the rows' (none: skipped)."""
    check_batch_step(3, False, "drawn", "none", reciprocal, regularizer, True)


@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("operator", ["translation", "diagonal", "rotate", "affine"])
def test_closed_form_step_under_each_relation_operator(operator, reciprocal):
    """Under an operator the closed form scores the anchors under it against the candidates and
    autograd takes the queries' gradient back through it (with the regulariser's) to the rows and
    the relation parameters: the update is autograd's, with heads ranked by the adjoint (whose
    score term constant per query, translation's and affine's, a softmax ignores) or by the
    reciprocal relation."""
    check_batch_step(3, False, "drawn", operator, reciprocal, "n3", True)


@pytest.mark.parametrize("reciprocal", [False, True])
def test_closed_form_step_with_an_operator_per_relation(reciprocal):
    """model.relation_operators: relation r's queries are its anchors under ComplEx, s's under
    a translation (whose adjoint leaves a score term constant per query); both relations'
    parameters are trained through one step, as autograd trains them."""
    check_batch_step(3, False, "drawn", "complex_diagonal", reciprocal, "l2", True,
                     relation_operators={"s": "translation"})


@pytest.mark.parametrize("closed_form", [True, False])
@pytest.mark.parametrize("operator", ["none", "complex_diagonal"])
@pytest.mark.parametrize("sides", [{"r": "tails"}, {"r": "heads", "s": "tails"}])
def test_batch_step_with_one_side_corrupted_per_relation(sides, operator, closed_form):
    """training.relation_negative_sides: a relation's edges train only their tail- (or head-)
    prediction loss, weighted by the edges' weights; the other relation's both."""
    check_batch_step(3, False, "drawn", operator, False, "n3", closed_form, sides)


@pytest.mark.parametrize("closed_form", [True, False])
@pytest.mark.parametrize("operator", ["none", "complex_diagonal"])
@pytest.mark.parametrize("side", ["tails", "heads"])
@pytest.mark.parametrize("anchor_negatives, foreign", [(False, "drawn"), (True, "pool")])
def test_batch_step_when_every_relation_trains_one_side(side, operator, closed_form, anchor_negatives, foreign):
    """training.negative_sides for every relation: the other side gets no uniform negatives
    (the step draws none for it) and no loss; the update is still the reference's."""
    check_batch_step(3, anchor_negatives, foreign, operator, False, "n3", closed_form, global_side=side)


def check_batch_step(uniform, anchor_negatives, foreign, operator, reciprocal, regularizer, closed_form, sides=None,
                     global_side="both", global_embedding=False, relation_operators=None):
    n, d = 30, 6
    config = config_from_dict({
        "model": {"dim": d, "operator": operator, "reciprocal": reciprocal, "regularizer": regularizer,
                  "regularization_weight": 0.01, "global_embedding": global_embedding,
                  "relation_operators": relation_operators or {}},
        "training": {"chunk_size": 4, "num_uniform_negatives": uniform, "lr": 0.5, "shared_lr": 0.2,
                     "anchor_negatives": anchor_negatives, "closed_form_softmax": closed_form,
                     "relation_negative_sides": sides or {}, "negative_sides": global_side},
    })
    manifest = Manifest(1, [EntityType("e", [n])], [Relation("r", "e", "e"), Relation("s", "e", "e")], {})
    side_weights = build_side_weights(config, manifest, torch.device("cpu"))
    side = {"both": (1.0, 1.0), "tails": (1.0, 0.0), "heads": (0.0, 1.0)}
    expected_sides = torch.tensor([side[(sides or {}).get(name, global_side)] for name in ("r", "s")])
    assert torch.equal(side_weights if side_weights is not None else torch.ones(2, 2), expected_sides)
    g = torch.Generator().manual_seed(1)
    model, reference = twin_models(config, manifest, g)
    table = torch.randn(n, d, generator=g)
    state = torch.rand(n, generator=g)
    batch = Batch(torch.tensor([0, 1, 1, 5, 7, 0, 2, 3, 9, 9]), torch.tensor([1, 2, 3, 0, 0, 4, 4, 3, 1, 2]),
                  torch.tensor([0, 1, 0, 1, 0, 0, 1, 1, 0, 1]), torch.rand(10, generator=g))
    samples, pool_leaves, (foreign_heads, foreign_tails) = foreign_candidates(foreign, 3, d, g)
    # the uniform rows the step draws: after any foreign draws, heads then tails, [chunks, uniform]
    step_generator = torch.Generator()
    if foreign == "drawn":
        torch.randint(0, 3, (2, 5), generator=step_generator)
    # a side no relation trains gets no uniform negatives
    head_negatives, tail_negatives = (torch.randint(0, n, (3, uniform if global_side in ("both", trained) else 0),
                                                    generator=step_generator) for trained in ("heads", "tails"))

    # reference: dense gradient of the same loss, then the dense rule; every row scored is
    # represented with the type's global embedding added, when the model has them
    def rep(rows):
        return rows + reference.global_embeddings[0] if global_embedding else rows

    leaf = table.clone().requires_grad_()
    loss = 0.0
    for chunk, (start, size) in enumerate([(0, 4), (4, 4), (8, 2)]):
        sl = slice(start, start + size)
        h, t, r = rep(leaf[batch.lhs[sl]]), rep(leaf[batch.rhs[sl]]), batch.rel[sl]
        pos = torch.arange(size)
        tails, heads = torch.cat([t, rep(leaf[tail_negatives[chunk]])]), torch.cat([h, rep(leaf[head_negatives[chunk]])])
        tail_scores, head_scores = reference.score_candidates("rhs", h, r, tails), reference.score_candidates("lhs", t, r, heads)
        if anchor_negatives:
            own = torch.stack([reference.score_candidates("rhs", h[k : k + 1], r[k : k + 1], h[k : k + 1])[0]
                               for k in range(size)])
            own_head = torch.stack([reference.score_candidates("lhs", t[k : k + 1], r[k : k + 1], t[k : k + 1])[0]
                                    for k in range(size)])
            loop = (batch.lhs[sl] == batch.rhs[sl]).unsqueeze(1)
            tail_scores = torch.cat([tail_scores, own.masked_fill(loop, float("-inf"))], 1)
            head_scores = torch.cat([head_scores, own_head.masked_fill(loop, float("-inf"))], 1)
        if foreign is not None:
            tail_scores = torch.cat([tail_scores, reference.score_candidates("rhs", h, r, rep(foreign_tails))], 1)
            head_scores = torch.cat([head_scores, reference.score_candidates("lhs", t, r, rep(foreign_heads))], 1)
        tail_weight, head_weight = expected_sides[r].T
        per = LOSSES["softmax"](tail_scores, pos, 0.1) * tail_weight + LOSSES["softmax"](head_scores, pos, 0.1) * head_weight
        loss = loss + (per * batch.weight[sl]).sum()
    reg = reference.regularization([rep(leaf[batch.lhs]), rep(leaf[batch.rhs])], batch.rel)
    (loss if reg is None else loss + reg).backward()
    expected_table, expected_state = dense_row_adagrad(table, state, leaf.grad, 0.5)
    if list(reference.parameters()):
        torch.optim.Adagrad(reference.parameters(), lr=0.2).step()

    part = step_and_compare(model, config, batch, table, state, samples, pool_leaves,
                            expected_table, expected_state,
                            closed_form and not anchor_negatives and not global_embedding, side_weights)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[torch.cat([batch.lhs, batch.rhs, head_negatives.flatten(), tail_negatives.flatten()])] = False
    assert torch.equal(part.embeddings[untouched], table[untouched])


@pytest.mark.parametrize("foreign, sides", [(None, "both"), ("pool", "both"), ("drawn", "both"), (None, "heads")])
def test_all_negatives_step_equals_dense_autograd_reference(foreign, sides):
    """negatives: all scores every row of the partition (then any foreign candidates); the
    positive is its own local id. Every row gets a gradient, so every row is updated.
    negative_sides: heads keeps only the head-prediction loss."""
    n, d = 12, 4
    config = config_from_dict({
        "model": {"dim": d, "operator": "diagonal", "reciprocal": True},
        "training": {"negatives": "all", "lr": 0.5, "shared_lr": 0.2, "negative_sides": sides},
    })
    manifest = Manifest(1, [EntityType("e", [n])], [Relation("r", "e", "e")], {})
    g = torch.Generator().manual_seed(3)
    model, reference = twin_models(config, manifest, g)
    table, state = torch.randn(n, d, generator=g), torch.rand(n, generator=g)
    batch = Batch(torch.tensor([0, 3, 3, 7, 11]), torch.tensor([1, 1, 5, 2, 0]), torch.zeros(5, dtype=torch.long), None)
    samples, pool_leaves, (foreign_heads, foreign_tails) = foreign_candidates(foreign, 2, d, g)

    leaf = table.clone().requires_grad_()
    h, t = leaf[batch.lhs], leaf[batch.rhs]
    tails, heads = reference.score_candidates("rhs", h, batch.rel, leaf), reference.score_candidates("lhs", t, batch.rel, leaf)
    if foreign is not None:
        tails = torch.cat([tails, reference.score_candidates("rhs", h, batch.rel, foreign_tails)], 1)
        heads = torch.cat([heads, reference.score_candidates("lhs", t, batch.rel, foreign_heads)], 1)
    tail_loss = LOSSES["softmax"](tails, batch.rhs, 0.1) * (sides == "both")
    (tail_loss + LOSSES["softmax"](heads, batch.lhs, 0.1)).sum().backward()
    expected_table, expected_state = dense_row_adagrad(table, state, leaf.grad, 0.5)

    step_and_compare(model, config, batch, table, state, samples, pool_leaves,
                     expected_table, expected_state, side_weights=build_side_weights(config, manifest, torch.device("cpu")))


@pytest.mark.parametrize("operator", ["complex_diagonal", "none"])  # autograd; where the closed form would apply
@pytest.mark.parametrize("negatives, named", [("batched", {"r": "all"}), ("all", {"s": "batched"})])
def test_a_step_scores_some_relations_against_every_row_and_the_others_in_chunks(negatives, named, operator):
    """training.relation_negatives: in one batch, the edges of 'r' are scored against every
    row of the partition and those of 's' against their chunk's positives and uniform
    negatives (chunks of 4 and 1 over the five 's' edges in batch order), each side weighted
    by the edge's weight; one update with the summed gradient, as autograd's on the table.
    The closed-form softmax step, for batched negatives only, steps aside."""
    n, d, uniform = 12, 4, 3
    config = config_from_dict({
        "model": {"dim": d, "operator": operator, "regularizer": "n3", "regularization_weight": 0.01},
        "training": {"negatives": negatives, "relation_negatives": named, "chunk_size": 4,
                     "num_uniform_negatives": uniform, "lr": 0.5, "shared_lr": 0.2},
    })
    manifest = Manifest(1, [EntityType("e", [n])], [Relation("r", "e", "e"), Relation("s", "e", "e")], {})
    all_rows = build_all_rows_relations(config, manifest, torch.device("cpu"))
    assert all_rows.tolist() == [True, False]
    g = torch.Generator().manual_seed(5)
    model, reference = twin_models(config, manifest, g)
    table, state = torch.randn(n, d, generator=g), torch.rand(n, generator=g)
    rel = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1])
    batch = Batch(torch.tensor([0, 3, 3, 7, 11, 2, 5, 9, 1]), torch.tensor([1, 1, 5, 2, 0, 6, 6, 4, 8]), rel,
                  torch.rand(9, generator=g))
    step_generator = torch.Generator()  # the uniform rows of the 's' chunks: heads, then tails
    head_negatives, tail_negatives = (torch.randint(0, n, (2, uniform), generator=step_generator) for _ in range(2))

    leaf = table.clone().requires_grad_()
    h, t = leaf[batch.lhs], leaf[batch.rhs]
    loss = 0.0
    every = rel == 0
    tails = reference.score_candidates("rhs", h[every], rel[every], leaf)
    heads = reference.score_candidates("lhs", t[every], rel[every], leaf)
    per = LOSSES["softmax"](tails, batch.rhs[every], 0.1) + LOSSES["softmax"](heads, batch.lhs[every], 0.1)
    loss = loss + (per * batch.weight[every]).sum()
    chunked = torch.nonzero(rel == 1).flatten()
    for chunk, rows in enumerate([chunked[:4], chunked[4:]]):
        hc, tc, rc, pos = h[rows], t[rows], rel[rows], torch.arange(len(rows))
        tail_scores = reference.score_candidates("rhs", hc, rc, torch.cat([tc, leaf[tail_negatives[chunk]]]))
        head_scores = reference.score_candidates("lhs", tc, rc, torch.cat([hc, leaf[head_negatives[chunk]]]))
        per = LOSSES["softmax"](tail_scores, pos, 0.1) + LOSSES["softmax"](head_scores, pos, 0.1)
        loss = loss + (per * batch.weight[rows]).sum()
    loss = loss + reference.regularization([h, t], rel)
    loss.backward()
    expected_table, expected_state = dense_row_adagrad(table, state, leaf.grad, 0.5)
    if list(reference.parameters()):
        torch.optim.Adagrad(reference.parameters(), lr=0.2).step()

    step_and_compare(model, config, batch, table, state, None, (), expected_table, expected_state, all_rows=all_rows)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
