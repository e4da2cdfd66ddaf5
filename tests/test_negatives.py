"""Batched negatives: chunking, the positive's place among candidates, losses that mask it."""

import numpy as np
import torch

from bigkg.config import config_from_dict
from bigkg.format import EntityType, Manifest, Relation
from bigkg.losses import LOSSES, self_adversarial_loss
from bigkg.model import build_model
from bigkg.negatives import ChunkPlan, chunk_positive_index, foreign_rows, positive_mask, uniform_negatives


def test_chunk_plan_covers_the_batch_once():
    assert ChunkPlan(1000, 50).blocks() == [(0, 20, 50)]
    assert ChunkPlan(120, 50).blocks() == [(0, 2, 50), (100, 1, 20)]
    assert ChunkPlan(30, 50).blocks() == [(0, 1, 30)]
    assert ChunkPlan(120, 50).total_chunks == 3


def test_positive_is_its_own_candidate_and_is_masked():
    config = config_from_dict({"model": {"dim": 4, "operator": "diagonal"}})
    manifest = Manifest(1, [EntityType("e", [9])], [Relation("r", "e", "e"), Relation("s", "e", "e")], {})
    model = build_model(config, manifest)
    h, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    rel = torch.tensor([[0, 1, 1], [1, 0, 0]])
    negatives = torch.randn(2, 5, 4)
    scores = model.score_candidates("rhs", h, rel, torch.cat([t, negatives], dim=1))
    assert scores.shape == (2, 3, 8)
    positive = chunk_positive_index(2, 3, torch.device("cpu"))
    # candidate k of a chunk is positive k's own tail
    torch.testing.assert_close(scores.diagonal(dim1=-2, dim2=-1), model.score_pairs(h, t, rel))
    mask = positive_mask(scores, positive)
    assert mask.sum() == 6 and mask[:, :, :3].equal(torch.eye(3, dtype=torch.bool).expand(2, 3, 3))


def test_losses_count_the_positive_once_and_never_as_a_negative():
    scores = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 3.0]])
    positive = torch.tensor([0, 1])
    softmax = LOSSES["softmax"](scores, positive, 0.1)
    torch.testing.assert_close(softmax, torch.logsumexp(scores, -1) - torch.tensor([5.0, 3.0]))
    # were the positive one of its own negatives, it would add the margin to row 0
    ranking = LOSSES["ranking"](scores, positive, 1.0)
    torch.testing.assert_close(ranking, torch.tensor([0.0, 1.0]))  # row 1: the tie costs the margin
    # raising the positive's own score only lowers the logistic loss
    higher = scores.clone()
    higher[0, 0] = 50.0
    assert LOSSES["logistic"](higher, positive, 0.1)[0] < LOSSES["logistic"](scores, positive, 0.1)[0]
    logistic = LOSSES["logistic"](scores, positive, 0.1)
    sp = torch.nn.functional.softplus
    torch.testing.assert_close(logistic[1], sp(torch.tensor(-3.0)) + (sp(torch.tensor(0.0)) + sp(torch.tensor(3.0))) / 2)


def test_self_adversarial_loss_weights_negatives_by_their_softmax_and_does_not_differentiate_the_weights():
    scores = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, -1.0]], requires_grad=True)
    positive = torch.tensor([0, 1])
    loss = self_adversarial_loss(scores, positive, 2.0, temperature=0.5)
    sp = torch.nn.functional.softplus
    # row 1: the positive (column 1) has weight 0; the negatives 0 and -1 are weighted
    # by softmax(0.5 * [0, -1])
    w = torch.softmax(torch.tensor([0.0, -0.5]), 0)
    expected = sp(torch.tensor(-5.0)) + w[0] * sp(torch.tensor(2.0)) + w[1] * sp(torch.tensor(1.0))
    torch.testing.assert_close(loss[1], expected)
    loss[1].backward()
    # d/ds of w_k softplus(s_k + γ) with w constant is w_k σ(s_k + γ)
    torch.testing.assert_close(scores.grad[1, 0], w[0] * torch.sigmoid(torch.tensor(2.0)))
    torch.testing.assert_close(scores.grad[1, 2], w[1] * torch.sigmoid(torch.tensor(1.0)))
    # temperature 0 is the logistic loss with γ; a lone positive has no negative term
    flat = self_adversarial_loss(scores.detach(), positive, 0.0, temperature=0.0)
    torch.testing.assert_close(flat, LOSSES["logistic"](scores.detach(), positive, 0.0))
    torch.testing.assert_close(self_adversarial_loss(torch.tensor([[3.0]]), torch.tensor([0]), 1.0), sp(torch.tensor([-4.0])))
    # temperature 0 with γ: the positive's term plus the mean of the negatives'
    torch.testing.assert_close(self_adversarial_loss(scores.detach(), positive, 1.5, temperature=0.0)[0],
                               sp(torch.tensor(-6.5)) + (sp(torch.tensor(2.5)) + sp(torch.tensor(3.5))) / 2)
    # negatives all masked (-inf: an anchor that is its own positive) add nothing, not NaN
    masked = torch.tensor([[2.0, float("-inf")]], requires_grad=True)
    lone = self_adversarial_loss(masked, torch.tensor([0]), 1.0)
    lone.sum().backward()
    torch.testing.assert_close(lone, sp(torch.tensor([-3.0])))
    assert torch.isfinite(masked.grad).all()


def test_uniform_negatives_stay_in_the_partition():
    gen = torch.Generator().manual_seed(0)
    ids = uniform_negatives(40, 50, 7, gen, torch.device("cpu"))
    assert ids.shape == (40, 50) and ids.min() >= 0 and ids.max() < 7
    assert set(ids.flatten().tolist()) == set(range(7))


def test_foreign_rows_come_from_every_other_partition_uniformly():
    offsets = np.array([0, 5, 5, 12, 20])  # partition 1 is empty
    drawn = foreign_rows(offsets, exclude=2, count=40_000, rng=np.random.default_rng(0))
    assert set(drawn) == {0, 3}
    assert sum(len(ids) for ids in drawn.values()) == 40_000
    for part, ids in drawn.items():
        size = offsets[part + 1] - offsets[part]
        counts = np.bincount(ids.numpy(), minlength=size)
        assert len(counts) == size  # local ids stay inside their partition
        # 13 eligible rows: each drawn ~40000/13 times
        assert counts.min() > 0.9 * 40_000 / 13 and counts.max() < 1.1 * 40_000 / 13
    assert foreign_rows(np.array([0, 7]), exclude=0, count=10, rng=np.random.default_rng(0)) == {}
