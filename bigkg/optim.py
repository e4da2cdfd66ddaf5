"""Optimisers: row-wise Adagrad for entity embeddings, a dense one for shared parameters.

Row-wise Adagrad (PBG) keeps one accumulator per embedding row, the running sum
of the mean squared gradient of that row. A step reads and writes only the
rows of the batch, so its cost does not grow with the table.
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
import torch
from torch import Tensor, nn

from bigkg.config import TrainingConfig


class RowAdagrad:
    def __init__(self, lr: float, eps: float = 1e-10):
        self.lr = lr
        self.eps = eps

    @torch.no_grad()
    def step(self, table: Tensor, state: Tensor, ids: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        """Update the rows ``ids[k]`` of ``table`` with gradients ``grads[k]`` [len(ids[k]), d].

        A row named several times gets one update with the sum of its gradients.
        """
        if not ids:
            return
        all_ids = ids[0] if len(ids) == 1 else torch.cat(list(ids))
        rows, inverse = torch.unique(all_ids, return_inverse=True)
        pieces = list(zip(inverse.split([len(i) for i in ids]), grads))
        if _numba_ok(table, state, grads):
            _step_numba(table, state, rows, pieces, self.lr, self.eps)
        else:
            _step_torch(table, state, rows, pieces, self.lr, self.eps)


Pieces = list[tuple[Tensor, Tensor]]  # (row slot of each gradient row, gradient rows)


def _numba_ok(table: Tensor, state: Tensor, grads: Sequence[Tensor]) -> bool:
    tensors = [table, state, *grads]
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)


def _step_torch(table: Tensor, state: Tensor, rows: Tensor, pieces: Pieces, lr: float, eps: float) -> None:
    summed = torch.zeros(rows.shape[0], table.shape[1], dtype=table.dtype, device=table.device)
    for slots, grad in pieces:  # piece by piece: no concatenated copy of the gradients
        summed.index_add_(0, slots, grad)
    accumulated = state.index_select(0, rows).add_(summed.pow(2).mean(dim=1))
    state.index_copy_(0, rows, accumulated)
    step = summed / accumulated.sqrt_().add_(eps).unsqueeze(1)
    table.index_add_(0, rows, step, alpha=-lr)


def _step_numba(table: Tensor, state: Tensor, rows: Tensor, pieces: Pieces, lr: float, eps: float) -> None:
    """The same update in two compiled passes (sum the pieces, update each row once): on CPU
    this does the work of the index_add/pow/index_copy chain without its temporaries."""
    summed = np.zeros((rows.shape[0], table.shape[1]), dtype=np.float32)
    for slots, grad in pieces:
        _accumulate(summed, slots.numpy(), grad.numpy())
    _update_rows(table.numpy(), state.numpy(), rows.numpy(), summed, lr, eps)


@numba.njit(nogil=True, cache=True)
def _accumulate(summed, slots, grad):  # pragma: no cover - compiled
    for i in range(slots.shape[0]):
        out = summed[slots[i]]
        src = grad[i]
        for j in range(src.shape[0]):
            out[j] += src[j]


@numba.njit(nogil=True, cache=True)
def _update_rows(table, state, rows, summed, lr, eps):  # pragma: no cover - compiled
    d = summed.shape[1]
    for k in range(rows.shape[0]):
        g = summed[k]
        squares = np.float32(0.0)
        for j in range(d):
            squares += g[j] * g[j]
        r = rows[k]
        accumulated = state[r] + squares / np.float32(d)
        state[r] = accumulated
        scale = np.float32(lr) / (np.sqrt(accumulated) + np.float32(eps))
        row = table[r]
        for j in range(d):
            row[j] -= scale * g[j]


def build_shared_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer | None:
    """The optimizer of the model's shared parameters; None when it has none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    lr = config.lr if config.shared_lr is None else config.shared_lr
    if config.shared_optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.Adagrad(params, lr=lr)
