"""Message pruning by relative norm (Unifews): drop the message m_uv when its
norm is below delta times the mean message norm of the layer, or keep only the
largest (1 - target) fraction. The caller compacts the kept edges and hands
them to the next layer, so deeper layers see only the survivors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from bigkg.errors import BigKGError


class SparsifyError(BigKGError):
    """An invalid sparsification setting."""


@dataclass
class MessagePruner:
    """Per-layer thresholds ``deltas`` (delta_a, relative to the mean norm) or
    per-layer target sparsities ``targets`` (fraction of incoming edges to drop).
    A layer index beyond the list uses the last entry."""

    deltas: Sequence[float] = ()
    targets: Sequence[float] = ()

    def __post_init__(self) -> None:
        if bool(self.deltas) == bool(self.targets):
            raise SparsifyError("message pruning needs exactly one of thresholds (delta_a) or target sparsities")
        for d in self.deltas:
            if d < 0:
                raise SparsifyError(f"message threshold delta_a must be >= 0, got {d}")
        for t in self.targets:
            if not 0.0 <= t < 1.0:
                raise SparsifyError(f"message target sparsity must be in [0, 1), got {t}")

    def keep(self, norms: Tensor, layer: int) -> Tensor:
        """Indices (ascending) of the edges to keep, given each edge's message norm."""
        if norms.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=norms.device)
        if self.deltas:
            delta = self.deltas[min(layer, len(self.deltas) - 1)]
            return torch.nonzero(norms >= delta * norms.mean()).squeeze(1)
        target = self.targets[min(layer, len(self.targets) - 1)]
        count = norms.numel() - int(target * norms.numel())
        return torch.topk(norms, count, sorted=False).indices.sort().values
