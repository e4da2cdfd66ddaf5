"""Losses over each positive's scores against its candidates.

Every loss takes ``scores`` [..., N, K] (row n: the candidates of positive n),
``positive_index`` [..., N] (the column of the positive itself) and returns a
per-positive loss [..., N]; the trainer multiplies by edge weights and sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bigkg.negatives import positive_mask


def softmax_loss(scores: Tensor, positive_index: Tensor, margin: float) -> Tensor:
    """Cross-entropy of the positive among its candidates (the positive counted once)."""
    flat = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), positive_index.reshape(-1), reduction="none")
    return flat.view(positive_index.shape)


def logistic_loss(scores: Tensor, positive_index: Tensor, margin: float) -> Tensor:
    """−log σ(positive) plus the mean over negatives of −log σ(−negative)."""
    mask = positive_mask(scores, positive_index)
    positive = scores.gather(-1, positive_index.unsqueeze(-1)).squeeze(-1)
    negatives = F.softplus(scores).masked_fill(mask, 0.0).sum(-1) / max(scores.shape[-1] - 1, 1)
    return F.softplus(-positive) + negatives


def ranking_loss(scores: Tensor, positive_index: Tensor, margin: float) -> Tensor:
    """Sum over negatives of max(0, margin − positive + negative)."""
    mask = positive_mask(scores, positive_index)
    positive = scores.gather(-1, positive_index.unsqueeze(-1))
    return F.relu(margin - positive + scores).masked_fill(mask, 0.0).sum(-1)


def self_adversarial_loss(scores: Tensor, positive_index: Tensor, margin: float, temperature: float = 1.0) -> Tensor:
    """RotatE's loss (Sun et al., 2019; DGL-KE's ``-adv``): −log σ(γ + positive) plus the
    negatives' −log σ(−γ − negative), each weighted by the softmax of ``temperature`` × its
    score, so hard negatives count most. The weights are constants, not differentiated. γ is
    ``margin``: with the l2 comparator (score −distance) this is −log σ(γ − d).
    """
    mask = positive_mask(scores, positive_index)
    positive = scores.gather(-1, positive_index.unsqueeze(-1)).squeeze(-1)
    loss = F.softplus(-(positive + margin))
    if scores.shape[-1] == 1:  # no candidate but the positive
        return loss
    weights = torch.softmax((temperature * scores.detach()).masked_fill(mask, float("-inf")), dim=-1)
    # A row whose negatives are all masked (-inf: an anchor that is its own positive) has none.
    weights = torch.nan_to_num(weights, nan=0.0)
    return loss + (weights * F.softplus(scores + margin)).sum(-1)


LOSSES = {"softmax": softmax_loss, "logistic": logistic_loss, "ranking": ranking_loss,
          "self_adversarial": self_adversarial_loss}
