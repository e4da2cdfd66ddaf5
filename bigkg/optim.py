"""Optimisers: row-wise Adagrad for entity embeddings, a dense one for shared parameters.

Row-wise Adagrad (PBG) keeps one accumulator per embedding row, the running sum
of the mean squared gradient of that row. A step reads and writes only the
rows of the batch, so its cost does not grow with the table.

With ``max_norm`` (``model.max_norm``, PBG's option of the same name) every row a
step updates is then scaled down to that L2 norm if it is longer: a projected
gradient step. Rows start within the bound (``clip_row_norms`` at
initialisation), so every stored row stays within it, the rows a batch scores
included; PBG renormalises the rows it looks up instead, which is the same as
long as every row starts within the bound.
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

import numba
import numpy as np
import torch
from torch import Tensor, nn

from bigkg.config import TrainingConfig


# Added to a norm before dividing by it, as torch's ``embedding_renorm_`` (F.embedding's max_norm) does.
_RENORM_EPS = 1e-7


class RowAdagrad:
    def __init__(self, lr: float, eps: float = 1e-10, max_norm: float | None = None):
        self.lr = lr
        self.eps = eps
        self.max_norm = max_norm  # None: rows unbounded
        self._scratch = threading.local()  # per Hogwild thread: the compiled path's RowScratch

    @torch.no_grad()
    def step(self, table: Tensor, state: Tensor, ids: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        """Update the rows ``ids[k]`` of ``table`` with gradients ``grads[k]`` [len(ids[k]), d].

        A row named several times gets one update with the sum of its gradients;
        with ``max_norm`` every row named is then scaled down to norm ``max_norm`` where longer.
        """
        if not ids:
            return
        if _numba_ok(table, state, grads):
            _step_numba(table, state, ids, grads, self.lr, self.eps, self._scratch_for(table), max_norm=self.max_norm)
        elif table.is_cuda and self.max_norm is None and table.shape[0] <= sum(i.shape[0] for i in ids):
            _step_dense(table, state, ids, grads, self.lr, self.eps)
        else:
            _step_torch(table, state, ids, grads, self.lr, self.eps, max_norm=self.max_norm)

    def _scratch_for(self, table: Tensor) -> RowScratch:
        """This thread's scratch, large enough for ``table``."""
        scratch = getattr(self._scratch, "value", None)
        if scratch is None or scratch.slot_of.shape[0] < table.shape[0] or scratch.sums.shape[1] != table.shape[1]:
            scratch = self._scratch.value = RowScratch(table.shape[0], table.shape[1])
        return scratch


class RowScratch:
    """Working memory of the compiled step, reused from step to step: a map from row to
    slot (4 bytes a row), -1 everywhere (the step restores it), and per-slot gradient
    sums, grown on demand, whose rows each step overwrites before adding to them. So
    neither is cleared or allocated (and page-faulted) per step."""

    def __init__(self, num_rows: int, dim: int):
        self.slot_of = np.full(num_rows, -1, dtype=np.int32)
        self.sums = np.empty((0, dim), dtype=np.float32)

    def sums_for(self, num_slots: int) -> np.ndarray:
        if self.sums.shape[0] < num_slots:
            self.sums = np.empty((max(num_slots, 2 * self.sums.shape[0]), self.sums.shape[1]), dtype=np.float32)
        return self.sums


def preload_cpu_kernels() -> threading.Thread:
    """Load the compiled CPU update in a background thread. Its first call in a process
    loads numba's cached machine code, ~0.4 s (mostly LLVM's set-up), which the first
    training step would otherwise wait for; loaded while the trainer opens its run and
    reads the first bucket, it costs nothing. Not a daemon: exit waits for it rather than
    cutting LLVM short."""
    def load() -> None:
        rows = torch.zeros(2, 1)
        RowAdagrad(0.0).step(rows, torch.zeros(2), [torch.tensor([0, 1, 0])], [torch.zeros(3, 1)])

    thread = threading.Thread(target=load, name="bigkg-load-kernels")
    thread.start()
    return thread


def _numba_ok(table: Tensor, state: Tensor, grads: Sequence[Tensor]) -> bool:
    tensors = [table, state, *grads]
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)


def clip_row_norms(table: Tensor, max_norm: float | None) -> None:
    """Scale every row of ``table`` longer than ``max_norm`` down to that norm, in place
    (a fresh or loaded table, once; a step clips only the rows it updates)."""
    if max_norm is not None:
        table.mul_(_shrink_factors(torch.linalg.vector_norm(table, dim=1), max_norm).unsqueeze(1))


def _shrink_factors(norms: Tensor, max_norm: float) -> Tensor:
    """Per row, the factor that brings its norm within ``max_norm``: 1 where it is already."""
    return (max_norm / (norms + _RENORM_EPS)).clamp_(max=1.0)


def _step_torch(
    table: Tensor, state: Tensor, ids: Sequence[Tensor], grads: Sequence[Tensor], lr: float, eps: float, *,
    max_norm: float | None = None,
) -> None:
    """The update in torch ops that never wait for the device (the GPU path).

    ``torch.unique`` would make the host wait for the number of distinct rows before it
    can allocate. Instead the ids are sorted and every id's gradient is summed into the slot
    of the first position of its run: the other slots keep a zero sum and name their own
    position's row. Adding zero to a row changes nothing, which is why state and table are
    updated with ``index_add_`` and never with a copy; and as each zero goes to its own
    id's row, no one row collects every spare slot's (atomic, on the GPU) additions.
    """
    all_ids = ids[0] if len(ids) == 1 else torch.cat(list(ids))
    rows, order = torch.sort(all_ids)
    run_starts = torch.ones_like(rows, dtype=torch.bool)
    run_starts[1:] = rows[1:] != rows[:-1]
    # Its run's first position: a binary search per id, where a running maximum over the
    # positions would be one scan along the whole batch.
    sorted_slots = torch.searchsorted(rows, rows)
    slots = torch.empty_like(sorted_slots).scatter_(0, order, sorted_slots)
    summed = torch.zeros(rows.shape[0], table.shape[1], dtype=table.dtype, device=table.device)
    start = 0
    for grad in grads:  # piece by piece: no concatenated copy of the gradients
        summed.index_add_(0, slots[start : start + grad.shape[0]], grad)
        start += grad.shape[0]
    state.index_add_(0, rows, summed.pow(2).mean(dim=1))
    step = summed / state.index_select(0, rows).sqrt_().add_(eps).unsqueeze(1)
    table.index_add_(0, rows, step, alpha=-lr)
    if max_norm is not None:
        _clip_updated_rows(table, rows, run_starts, max_norm)


def _step_dense(table: Tensor, state: Tensor, ids: Sequence[Tensor], grads: Sequence[Tensor], lr: float,
                eps: float) -> None:
    """The update in passes over the whole table: each gradient added at its row, then every
    row stepped by its sum, a row without one by zero (its state and values unchanged).

    Cheaper than the sorted path where a step names more ids than the table has rows, as a
    small partition's on a GPU does (FB15k-237's 14,541 rows against ~210k ids a step at
    PBG's 1,000 uniform negatives): passes over the table instead of over one row per id,
    no sort, fewer operations. GPU only: a row without a gradient is written back unchanged,
    which on CPU Hogwild threads, running at once, could undo another thread's update of it;
    on one GPU the threads' kernels run one after another on the device's queue.
    """
    summed = torch.zeros_like(table)
    for i, grad in zip(ids, grads):
        summed.index_add_(0, i, grad)
    state.add_(summed.pow(2).mean(dim=1))
    table.addcdiv_(summed, state.sqrt().add_(eps).unsqueeze(1), value=-lr)


def _clip_updated_rows(table: Tensor, rows: Tensor, run_starts: Tensor, max_norm: float) -> None:
    """Scale the rows ``rows`` (sorted, ``run_starts`` marking each distinct row's first
    position) down to norm ``max_norm``, without waiting for the device. As in the update,
    the change is added, by the first position of each run only, the others adding zero."""
    current = table.index_select(0, rows)
    change = _shrink_factors(torch.linalg.vector_norm(current, dim=1), max_norm).sub_(1.0).mul_(run_starts)
    table.index_add_(0, rows, current.mul_(change.unsqueeze(1)))


def _step_numba(
    table: Tensor, state: Tensor, ids: Sequence[Tensor], grads: Sequence[Tensor], lr: float, eps: float,
    scratch: RowScratch, *, max_norm: float | None = None,
) -> None:
    """The same update in compiled passes: give each distinct row a slot (through
    ``scratch.slot_of``, so finding the distinct rows costs no sort), sum the pieces per
    slot, update each row once. On CPU this does the work of the
    unique/index_add/pow/index_copy chain without its sort and temporaries."""
    all_ids = ids[0] if len(ids) == 1 else torch.cat(list(ids))
    rows, slots = _assign_slots(scratch.slot_of, all_ids.numpy())
    try:
        summed = scratch.sums_for(rows.shape[0])
        start = filled = 0
        for grad in grads:
            filled = _accumulate(summed, slots[start : start + grad.shape[0]], grad.numpy(), filled)
            start += grad.shape[0]
        bound = math.inf if max_norm is None else max_norm  # one compiled signature, bounded or not
        _update_rows(table.numpy(), state.numpy(), rows, summed, lr, eps, bound, _RENORM_EPS)
    finally:
        scratch.slot_of[rows] = -1


# Sums may be reordered (so they vectorise); NaN and infinity keep their meaning.
_REORDER = {"reassoc", "contract"}


@numba.njit(nogil=True, cache=True)
def _assign_slots(slot_of, ids):  # pragma: no cover - compiled
    """(distinct rows in order of first appearance, the slot of each id)."""
    rows = np.empty(ids.shape[0], np.int64)
    slots = np.empty(ids.shape[0], np.int64)
    k = 0
    for i in range(ids.shape[0]):
        r = ids[i]
        s = slot_of[r]
        if s < 0:
            s = k
            slot_of[r] = k
            rows[k] = r
            k += 1
        slots[i] = s
    return rows[:k], slots


@numba.njit(nogil=True, cache=True, fastmath=_REORDER)
def _accumulate(summed, slots, grad, filled):  # pragma: no cover - compiled
    """Add each gradient row to its slot's sum; returns how many slots hold a sum now.

    Slots are numbered in order of first appearance and the pieces come in that
    order, so a slot not yet filled is the next one: it is written, not added to
    (the sums are not zeroed between steps)."""
    for i in range(slots.shape[0]):
        out = summed[slots[i]]
        src = grad[i]
        if slots[i] == filled:
            filled += 1
            for j in range(src.shape[0]):
                out[j] = src[j]
        else:
            for j in range(src.shape[0]):
                out[j] += src[j]
    return filled


@numba.njit(nogil=True, cache=True, fastmath=_REORDER)
def _update_rows(table, state, rows, summed, lr, eps, max_norm, renorm_eps):  # pragma: no cover - compiled
    """Update each row from its slot's sum, then scale it down to norm ``max_norm`` (inf: never)."""
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
        if max_norm < np.inf:
            _clip_row(row, np.float32(max_norm), np.float32(renorm_eps))


@numba.njit(nogil=True, cache=True, fastmath=_REORDER)
def _clip_row(row, max_norm, renorm_eps):  # pragma: no cover - compiled
    """Scale ``row`` down to norm ``max_norm`` if it is longer (as ``_shrink_factors``)."""
    squares = np.float32(0.0)
    for j in range(row.shape[0]):
        squares += row[j] * row[j]
    shrink = max_norm / (np.sqrt(squares) + renorm_eps)
    if shrink < np.float32(1.0):
        for j in range(row.shape[0]):
            row[j] *= shrink


def build_shared_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer | None:
    """The optimizer of the model's shared parameters; None when it has none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    lr = config.lr if config.shared_lr is None else config.shared_lr
    if config.shared_optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.Adagrad(params, lr=lr)
