"""Optimisers: row-wise Adagrad for entity embeddings, a dense one for shared parameters.

Row-wise Adagrad (PBG) keeps one accumulator per embedding row, the running sum
of the mean squared gradient of that row. A step reads and writes only the
rows of the batch, so its cost does not grow with the table.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bigkg.config import TrainingConfig


class RowAdagrad:
    def __init__(self, lr: float, eps: float = 1e-10):
        self.lr = lr
        self.eps = eps

    @torch.no_grad()
    def step(self, table: Tensor, state: Tensor, rows: Tensor, grad: Tensor) -> None:
        """Update ``table[rows]`` with ``grad`` [len(rows), d]; ``rows`` must be distinct."""
        accumulated = state.index_select(0, rows).add_(grad.pow(2).mean(dim=1))
        state.index_copy_(0, rows, accumulated)
        step = grad / accumulated.sqrt_().add_(self.eps).unsqueeze(1)
        table.index_add_(0, rows, step, alpha=-self.lr)


def build_shared_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer | None:
    """The optimizer of the model's shared parameters; None when it has none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    lr = config.lr if config.shared_lr is None else config.shared_lr
    if config.shared_optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.Adagrad(params, lr=lr)
