"""Weight-entry pruning (Unifews): drop W[j, i] when |W[j, i]| * s_i is small,
where s_i is the scale (root mean square) of input feature i, so a small weight
on a large feature survives. The threshold, relative to the mean importance, or
a target sparsity ramps up linearly over training steps from zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bigkg.sparsify.messages import SparsifyError


@dataclass
class WeightPruner:
    """``delta`` (threshold relative to the mean importance) or ``target``
    (fraction of entries to drop), reached after ``ramp_steps`` training steps.
    ``steps`` is where training stands, set by the encoder before each step (every
    layer's pruners read the same count, however many forward passes a step makes)."""

    delta: float = 0.0
    target: float = 0.0
    ramp_steps: int = 0

    def __post_init__(self) -> None:
        if (self.delta > 0) == (self.target > 0):
            raise SparsifyError("weight pruning needs exactly one of a threshold (delta_w > 0) or a target sparsity")
        if not 0.0 <= self.target < 1.0:
            raise SparsifyError(f"weight target sparsity must be in [0, 1), got {self.target}")
        if self.ramp_steps < 0:
            raise SparsifyError(f"weight pruning ramp_steps must be >= 0, got {self.ramp_steps}")
        self.steps = 0

    @property
    def progress(self) -> float:
        return 1.0 if self.ramp_steps == 0 else min(1.0, self.steps / self.ramp_steps)

    def mask(self, weight: Tensor, input_scale: Tensor) -> Tensor:
        """Boolean mask of the entries of ``weight`` [out, in] to keep."""
        importance = weight.detach().abs() * input_scale.detach().unsqueeze(0)
        if self.delta > 0:
            return importance >= self.delta * self.progress * importance.mean()
        drop = int(self.target * self.progress * importance.numel())
        if drop == 0:
            return torch.ones_like(importance, dtype=torch.bool)
        cutoff = importance.flatten().kthvalue(drop).values
        return importance > cutoff


def feature_scale(x: Tensor, rows: int | None = None) -> Tensor:
    """Root mean square of each input feature (column) of ``x``, over ``rows``
    rows when given (``x`` holds the nonzero ones of a larger input)."""
    flat = x.detach().reshape(-1, x.shape[-1])
    return (flat.pow(2).sum(0) / (flat.shape[0] if rows is None else rows)).sqrt()
