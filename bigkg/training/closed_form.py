"""The batched softmax loss under the dot comparator, with its gradient in closed form.

For scores s = q·c over a query's candidates, the cross-entropy of candidate k
has the gradient p − e_k with respect to s (p: the softmax of s), so the
gradients of the queries and candidates are two more batched products. Done
by hand this is about fifteen tensor operations per side and batch; autograd
records, orders and replays several times as many. At PBG's settings
(d=100, chunks of 50, 50 uniform negatives) that bookkeeping costs about as
much as the products themselves on a CPU core.

Without a relation operator the queries are the rows themselves, and a
chunk's positive block is the same on both sides: the tail side scores
h_i·t_j, the head side t_j·h_i. ``paired_softmax_dot_gradients`` computes that
block once and sums its two gradients before mapping them to rows, which
saves a quarter of the products (9 instead of 12 of size c×c×d when u = c) and
gathers each positive row once.

``BatchStep`` takes this path when the model allows it (``supports_closed_form``);
tests hold it to the autograd path, step for step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bigkg.config import TrainingConfig
from bigkg.model import IdentityEncoder, KGModel


def supports_closed_form(model: KGModel, t: TrainingConfig) -> bool:
    """Whether a batch's loss and gradient are ``softmax_dot_gradients`` of query vectors
    that autograd maps back to the rows and relation parameters: shallow embeddings,
    the dot comparator (whose head ranking always has a query vector), the softmax
    loss, batched negatives without anchors."""
    return (
        t.closed_form_softmax
        and isinstance(model.encoder, IdentityEncoder)
        and model.comparator.name == "dot"
        and t.loss == "softmax"
        and t.negatives == "batched"
        and not t.anchor_negatives
    )


class SoftmaxDotGradients(NamedTuple):
    loss: Tensor  # [nc, c] cross-entropy of each positive among its candidates
    queries: Tensor  # [nc, c, d]
    candidates: Tensor  # [nc, k, d]
    shared: Tensor | None  # [f, d]


class PairedGradients(NamedTuple):
    loss: Tensor  # [nc, c] both sides' cross-entropy of each positive
    heads: Tensor  # [nc, c, d] the positives' head rows, as queries and as candidates
    tails: Tensor  # [nc, c, d]
    head_negatives: Tensor  # [nc, u, d]
    tail_negatives: Tensor  # [nc, u, d]
    foreign_heads: Tensor | None  # [f, d]
    foreign_tails: Tensor | None  # [f, d]


@torch.no_grad()
def softmax_dot_gradients(
    queries: Tensor, candidates: Tensor, weight: Tensor | None, shared: Tensor | None = None
) -> SoftmaxDotGradients:
    """Loss and gradients of each chunk's softmax cross-entropy on one side.

    ``queries`` [nc, c, d]; ``candidates`` [nc, k, d], k ≥ c, where candidate i of a
    chunk is the positive of its query i; ``shared`` [f, d]: more candidates, the
    same for every query, scored after the chunk's own. ``weight`` [nc, c] scales
    each query's loss (and so its gradients).
    """
    k = candidates.shape[1]
    scores = _with_shared(torch.bmm(queries, candidates.transpose(1, 2)), queries, shared)
    loss, grad = _softmax_gradient(scores, queries.shape[1], weight)
    own = grad[:, :, :k]
    grad_queries = torch.bmm(own, candidates)
    grad_shared = _add_shared_gradient(grad_queries, grad[:, :, k:], queries, shared)
    return SoftmaxDotGradients(loss, grad_queries, torch.bmm(own.transpose(1, 2), queries), grad_shared)


@torch.no_grad()
def paired_softmax_dot_gradients(
    heads: Tensor, tails: Tensor, head_negatives: Tensor, tail_negatives: Tensor, weight: Tensor | None,
    foreign_heads: Tensor | None = None, foreign_tails: Tensor | None = None,
) -> PairedGradients:
    """Both sides' softmax cross-entropy when every score is a plain dot product of rows.

    ``heads``, ``tails`` [nc, c, d]: each chunk's positives; the tail side ranks
    a positive's tail among the chunk's tails, ``tail_negatives`` [nc, u, d] and
    ``foreign_tails`` [f, d]; the head side its head among the chunk's heads,
    ``head_negatives`` and ``foreign_heads``. ``weight`` [nc, c] as in
    ``softmax_dot_gradients``.
    """
    c = heads.shape[1]
    k = c + tail_negatives.shape[1]
    tail_candidates = torch.cat([tails, tail_negatives], 1)
    head_candidates = torch.cat([heads, head_negatives], 1)
    tail_scores = torch.bmm(heads, tail_candidates.transpose(1, 2))
    head_scores = torch.cat([tail_scores[:, :, :c].transpose(1, 2), torch.bmm(tails, head_negatives.transpose(1, 2))], -1)
    tail_loss, tail_grad = _softmax_gradient(_with_shared(tail_scores, heads, foreign_tails), c, weight)
    head_loss, head_grad = _softmax_gradient(_with_shared(head_scores, tails, foreign_heads), c, weight)
    # A positive block entry is one score on both sides: its gradient is the sum of the two.
    tail_grad[:, :, :c].add_(head_grad[:, :, :c].transpose(1, 2))
    head_grad[:, :, :c].copy_(tail_grad[:, :, :c].transpose(1, 2))
    grad_heads = torch.bmm(tail_grad[:, :, :k], tail_candidates)
    grad_tails = torch.bmm(head_grad[:, :, :k], head_candidates)
    return PairedGradients(
        tail_loss.add_(head_loss), grad_heads, grad_tails,
        torch.bmm(head_grad[:, :, c:k].transpose(1, 2), tails),
        torch.bmm(tail_grad[:, :, c:k].transpose(1, 2), heads),
        _add_shared_gradient(grad_tails, head_grad[:, :, k:], tails, foreign_heads),
        _add_shared_gradient(grad_heads, tail_grad[:, :, k:], heads, foreign_tails),
    )


def _softmax_gradient(scores: Tensor, c: int, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """(loss [nc, c], its gradient with respect to ``scores`` [nc, c, k], written over
    ``scores``) of the cross-entropy of each query's candidate i = its own index."""
    positive = scores[:, :, :c].diagonal(dim1=1, dim2=2).clone()
    top = scores.amax(-1, keepdim=True)
    probs = scores.sub_(top).exp_()  # one exponential per score: the softmax and its normaliser
    total = probs.sum(-1, keepdim=True)
    probs.div_(total)
    loss = total.log_().add_(top).squeeze(-1).sub_(positive)
    probs[:, :, :c].diagonal(dim1=1, dim2=2).sub_(1.0)
    if weight is not None:
        probs.mul_(weight.unsqueeze(-1))
    return loss, probs


def _with_shared(scores: Tensor, queries: Tensor, shared: Tensor | None) -> Tensor:
    """``scores`` [nc, c, k] followed by every query's scores against ``shared`` [f, d]."""
    if shared is None:
        return scores
    nc, c, d = queries.shape
    return torch.cat([scores, (queries.reshape(-1, d) @ shared.T).view(nc, c, -1)], -1)


def _add_shared_gradient(grad_queries: Tensor, grad_scores: Tensor, queries: Tensor, shared: Tensor | None) -> Tensor | None:
    """Add the shared candidates' part to ``grad_queries`` [nc, c, d]; return the shared
    candidates' gradient [f, d] (None without them)."""
    if shared is None:
        return None
    d = queries.shape[-1]
    flat = grad_scores.reshape(-1, shared.shape[0])
    grad_queries.view(-1, d).addmm_(flat, shared)
    return flat.T @ queries.reshape(-1, d)
