"""The batched softmax loss of plain dot products, with its gradient in closed form.

For scores s = q·c over a query's candidates, the cross-entropy of candidate k
has the gradient p − e_k with respect to s (p: the softmax of s), so the
gradients of the queries and candidates are more batched products, computed
here in about twenty tensor operations per batch instead of the several times
as many that autograd records, orders and replays.

Without a relation operator (PBG's setting for plain graphs) a score is the
product of two rows, so a chunk's positive block is the same on both sides: the
tail side scores h_i·t_j, the head side t_j·h_i. ``softmax_dot_gradients``
computes it once and sums its two gradients before they are mapped to rows,
which saves a quarter of the products (9 instead of 12 of size c×c×d when u = c)
and gathers each positive row once.

Under a relation operator the queries are the anchors under it (op_r(h) for
tails, the reciprocal's or the adjoint's of t for heads) and each side is its
own product (``softmax_query_gradients``). Autograd is left only the operator
and the relation parameters' regulariser, on the positives' rows: their gradient
flows back from the queries' closed-form gradient (``grad_outputs``). Measured
(docs/benchmarks.md, "Where a step's time goes"): 1.14-1.29× autograd's edges/s
on an H200 at PBG's FB15k-237 GPU settings, the same MRR by epoch; on the CPU
level with autograd at the shipped FB15k-237 config, 1.8× where the softmax over
many negatives dominates (d=16, 1,000 negatives).

Scores are computed in base-2 units (the products scaled by log2 e, which the
matrix product does for free), so the softmax's exponential is exp2: on CPU
torch's exp2 is about three times faster than its exp. The loss is converted
back to nats; the gradient with respect to the natural scores is still p − e_k.

``BatchStep`` takes this path when the model allows it (``supports_closed_form``);
tests hold it to the autograd path, step for step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bigkg.config import TrainingConfig
from bigkg.model import IdentityEncoder, KGModel

_LOG2_E = 1.4426950408889634
_LN_2 = 0.6931471805599453


def supports_closed_form(model: KGModel, t: TrainingConfig) -> bool:
    """Whether a batch's loss and gradient are computed in closed form: shallow embeddings
    (no encoder, no global embeddings), the plain dot comparator, the softmax loss,
    batched negatives without anchors. Any relation operator: its parameters are
    trained through the queries' gradient."""
    return (
        t.closed_form_softmax
        and isinstance(model.encoder, IdentityEncoder)
        and model.global_embeddings is None
        and model.comparator.name == "dot"
        and t.loss == "softmax"
        and t.negatives == "batched"
        and "all" not in t.relation_negatives.values()
        and not t.anchor_negatives
    )


class ChunkGradients(NamedTuple):
    """A block of chunks' loss and the gradients of the rows it scored: the positives' rows'
    (``heads``, ``tails``) and their side's candidates' from column ``first`` on, which the
    row update adds up where they name the same row."""

    loss: Tensor  # [nc, c] both sides' weighted cross-entropy of each positive
    heads: Tensor | None  # [nc, c, d] the positives' head rows, beyond their candidate columns from ``first``
    tails: Tensor | None  # [nc, c, d]
    head_candidates: Tensor | None  # [nc, c + u - first, d] the head candidates from column ``first``
    tail_candidates: Tensor | None  # [nc, c + u - first, d]
    first: int  # c: the candidate gradients are the negatives' alone; 0: every candidate's
    foreign_heads: Tensor | None  # [f, d]
    foreign_tails: Tensor | None  # [f, d]


@torch.no_grad()
def softmax_dot_gradients(
    head_candidates: Tensor, tail_candidates: Tensor, c: int, weights: tuple[Tensor | None, Tensor | None],
    foreign_heads: Tensor | None = None, foreign_tails: Tensor | None = None,
    trains: tuple[bool, bool] = (True, True),
) -> ChunkGradients:
    """Loss and gradients of both sides' softmax cross-entropy, chunk by chunk.

    ``head_candidates`` [nc, c + u_h, d], ``tail_candidates`` [nc, c + u_t, d]: each
    chunk's c positives' rows followed by its uniform negatives, gathered as one
    block per side (the positives are the queries too, so nothing is concatenated).
    The tail side ranks a positive's tail among the chunk's tail candidates and
    ``foreign_tails`` [f, d] (the same for every query); the head side its head
    among the head candidates and ``foreign_heads``. ``weights``: the tail and
    the head side's [nc, c] (or None: 1), scaling each positive's loss on that
    side (and so its gradients). ``trains``: whether the tail and the head side are
    trained at all; a side that is not has no negatives, no shared candidates and
    no softmax, and the positive block's gradient is the other side's alone.
    """
    tail_weight, head_weight = weights
    train_tails, train_heads = trains
    heads, tails = head_candidates[:, :c], tail_candidates[:, :c]
    k_head, k_tail = head_candidates.shape[1], tail_candidates.shape[1]  # the sides' negatives may differ in number
    if not (train_tails or train_heads) or not train_heads and (k_head > c or foreign_heads is not None) \
            or not train_tails and (k_tail > c or foreign_tails is not None):
        raise ValueError(f"sides trained {trains}: at least one, and a side not trained takes no negatives")
    tail_scores = _base2_scores(heads, tail_candidates)  # its positive block is the head side's too
    if train_heads:  # (copied out before the tail side's softmax overwrites it)
        head_scores = torch.cat([tail_scores[:, :, :c].transpose(1, 2), _base2_scores(tails, head_candidates[:, c:])], -1)
        head_loss, head_grad = _softmax_gradient(_with_shared(head_scores, tails, foreign_heads), c, head_weight)
    if train_tails:
        loss, tail_grad = _softmax_gradient(_with_shared(tail_scores, heads, foreign_tails), c, tail_weight)
    if train_tails and train_heads:
        # A positive block entry is one score on both sides: its gradient is the sum of the two.
        tail_grad[:, :, :c].add_(head_grad[:, :, :c].transpose(1, 2))
        head_grad[:, :, :c].copy_(tail_grad[:, :, :c].transpose(1, 2))
        loss.add_(head_loss)
    elif train_tails:
        head_grad = tail_grad[:, :, :c].transpose(1, 2)
    else:
        loss, tail_grad = head_loss, head_grad[:, :, :c].transpose(1, 2)
    grad_heads = torch.bmm(tail_grad[:, :, :k_tail], tail_candidates)
    grad_tails = torch.bmm(head_grad[:, :, :k_head], head_candidates)
    return ChunkGradients(
        loss, grad_heads, grad_tails,
        torch.bmm(head_grad[:, :, c:k_head].transpose(1, 2), tails),
        torch.bmm(tail_grad[:, :, c:k_tail].transpose(1, 2), heads), c,
        _add_shared_gradient(grad_tails, head_grad[:, :, k_head:], tails, foreign_heads),
        _add_shared_gradient(grad_heads, tail_grad[:, :, k_tail:], heads, foreign_tails),
    )


class SoftmaxQueryGradients(NamedTuple):
    """``softmax_query_gradients``' loss and the gradients of each side's queries and candidates."""

    loss: Tensor  # [nc, c] both sides' weighted cross-entropy of each positive
    tail_queries: Tensor | None  # [nc, c, d] gradient of the tail side's queries (None: side not trained)
    head_queries: Tensor | None
    tail_candidates: Tensor | None  # [nc, k_t, d] gradient of the tail side's candidates
    head_candidates: Tensor | None
    foreign_heads: Tensor | None  # [f, d]
    foreign_tails: Tensor | None


@torch.no_grad()
def softmax_query_gradients(
    tail_queries: Tensor | None, tail_candidates: Tensor, head_queries: Tensor | None, head_candidates: Tensor,
    c: int, weights: tuple[Tensor | None, Tensor | None],
    foreign_heads: Tensor | None = None, foreign_tails: Tensor | None = None,
) -> SoftmaxQueryGradients:
    """Loss and gradients of both sides' softmax cross-entropy when queries and candidates
    differ (a relation operator): the tail side scores ``tail_queries`` [nc, c, d] against
    ``tail_candidates`` [nc, k_t, d] (the chunk's c positive tails first, then its
    negatives) and ``foreign_tails`` [f, d]; the head side likewise. Query i's positive is
    candidate i. A side whose queries are None is not trained: no loss, no gradient.
    ``weights``: the tail and head side's [nc, c] (or None: 1)."""
    loss = None
    out: list[Tensor | None] = []
    for queries, candidates, shared, weight in ((tail_queries, tail_candidates, foreign_tails, weights[0]),
                                                (head_queries, head_candidates, foreign_heads, weights[1])):
        if queries is None:
            out += [None, None, None]
            continue
        k = candidates.shape[1]
        side_loss, grad = _softmax_gradient(_with_shared(_base2_scores(queries, candidates), queries, shared), c, weight)
        loss = side_loss if loss is None else loss.add_(side_loss)
        grad_queries = torch.bmm(grad[:, :, :k], candidates)
        out += [grad_queries, torch.bmm(grad[:, :, :k].transpose(1, 2), queries),
                _add_shared_gradient(grad_queries, grad[:, :, k:], queries, shared)]
    if loss is None:
        raise ValueError("no side trained: at least one side's queries are needed")
    (grad_tq, grad_tc, grad_ft), (grad_hq, grad_hc, grad_fh) = out[:3], out[3:]
    return SoftmaxQueryGradients(loss, grad_tq, grad_hq, grad_tc, grad_hc, grad_fh, grad_ft)


def _base2_scores(queries: Tensor, candidates: Tensor) -> Tensor:
    """[nc, c, k]: log2 e times the products of ``queries`` [nc, c, d] and ``candidates`` [nc, k, d]."""
    return torch.baddbmm(queries.new_empty(()), queries, candidates.transpose(1, 2), beta=0, alpha=_LOG2_E)


def _softmax_gradient(scores: Tensor, c: int, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """(loss [nc, c] in nats, its gradient with respect to the natural scores, written over
    ``scores`` [nc, c, k] in base-2 units) of the cross-entropy of each query's
    candidate i = its own index, both scaled by ``weight`` [nc, c]."""
    positive = scores[:, :, :c].diagonal(dim1=1, dim2=2).clone()
    top = scores.amax(-1, keepdim=True)
    probs = scores.sub_(top).exp2_()  # one exponential per score: the softmax and its normaliser
    total = probs.sum(-1, keepdim=True)
    probs.div_(total)
    loss = total.log2_().add_(top).squeeze(-1).sub_(positive).mul_(_LN_2)
    probs[:, :, :c].diagonal(dim1=1, dim2=2).sub_(1.0)
    if weight is not None:
        probs.mul_(weight.unsqueeze(-1))
        loss.mul_(weight)
    return loss, probs


def _with_shared(scores: Tensor, queries: Tensor, shared: Tensor | None) -> Tensor:
    """``scores`` [nc, c, k] followed by every query's (base-2) scores against ``shared`` [f, d]."""
    if shared is None:
        return scores
    nc, c, d = queries.shape
    flat = torch.addmm(queries.new_empty(()), queries.reshape(-1, d), shared.T, beta=0, alpha=_LOG2_E)
    return torch.cat([scores, flat.view(nc, c, -1)], -1)


def _add_shared_gradient(grad_queries: Tensor, grad_scores: Tensor, queries: Tensor, shared: Tensor | None) -> Tensor | None:
    """Add the shared candidates' part to ``grad_queries`` [nc, c, d]; return the shared
    candidates' gradient [f, d] (None without them)."""
    if shared is None:
        return None
    d = queries.shape[-1]
    flat = grad_scores.reshape(-1, shared.shape[0])
    grad_queries.view(-1, d).addmm_(flat, shared)
    return flat.T @ queries.reshape(-1, d)
