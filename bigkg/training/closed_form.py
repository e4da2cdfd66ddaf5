"""The batched softmax loss of plain dot products, with its gradient in closed form.

For scores s = q·c over a query's candidates, the cross-entropy of candidate k
has the gradient p − e_k with respect to s (p: the softmax of s), so the
gradients of the queries and candidates are more batched products, computed
here in about twenty tensor operations per batch instead of the several times
as many that autograd records, orders and replays.

Where it pays: without a relation operator (PBG's setting for plain graphs) a
score is the product of two rows, so a chunk's positive block is the same on
both sides: the tail side scores h_i·t_j, the head side t_j·h_i. It is computed
once and its two gradients are summed before they are mapped to rows, which
saves a quarter of the products (9 instead of 12 of size c×c×d when u = c) and
gathers each positive row once. Under a relation operator the two blocks
differ, and the same algebra done per side measured no faster than autograd
(docs/benchmarks.md), so those models keep autograd.

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
    """Whether a batch's loss and gradient are ``softmax_dot_gradients`` of its rows:
    shallow embeddings without a relation operator (so no parameters besides the
    rows), the dot comparator, the softmax loss, batched negatives without anchors."""
    return (
        t.closed_form_softmax
        and isinstance(model.encoder, IdentityEncoder)
        and model.rows_compared_directly
        and not any(p.requires_grad for p in model.parameters())
        and model.comparator.name == "dot"
        and t.loss == "softmax"
        and t.negatives == "batched"
        and not t.anchor_negatives
    )


class SoftmaxDotGradients(NamedTuple):
    loss: Tensor  # [nc, c] both sides' cross-entropy of each positive
    heads: Tensor  # [nc, c, d] the positives' head rows, as queries and as candidates
    tails: Tensor  # [nc, c, d]
    head_negatives: Tensor  # [nc, u, d]
    tail_negatives: Tensor  # [nc, u, d]
    foreign_heads: Tensor | None  # [f, d]
    foreign_tails: Tensor | None  # [f, d]


@torch.no_grad()
def softmax_dot_gradients(
    heads: Tensor, tails: Tensor, head_negatives: Tensor, tail_negatives: Tensor, weight: Tensor | None,
    foreign_heads: Tensor | None = None, foreign_tails: Tensor | None = None,
) -> SoftmaxDotGradients:
    """Loss and gradients of both sides' softmax cross-entropy, chunk by chunk.

    ``heads``, ``tails`` [nc, c, d]: each chunk's positives; the tail side ranks
    a positive's tail among the chunk's tails, ``tail_negatives`` [nc, u, d] and
    ``foreign_tails`` [f, d] (the same for every query); the head side its head
    among the chunk's heads, ``head_negatives`` and ``foreign_heads``.
    ``weight`` [nc, c] scales each positive's loss (and so its gradients).
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
    return SoftmaxDotGradients(
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
