"""Fused edge stage for elementwise messages (numba, CPU).

For a message x_u * z_r (``mult``), x_u - z_r (``sub``) or x_u (``copy``),
weighted by a_uv and summed into block ``chan`` of destination row v, one pass
over the edges does gather, compose, weight and scatter without materialising
any [E, d] tensor. Forward runs one destination row per iteration and the
input gradient one source row per iteration, so no two threads write the same
row; the relation gradient is summed in per-chunk buffers.

``fused_edge_stage`` wraps the kernels as an autograd Function that saves a
(compressed) copy of the node-level ``x`` only, and only for ``mult``, whose
relation gradient reads it. The layers' general torch path
(``MessagePassing._edge_stage``) computes the same thing for any message and is
used for other messages, attention, and tensors not on the CPU; tests check
that both agree.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from bigkg.quant.functions import compress, decompress, saving_bits

OPS = {"copy": 0, "mult": 1, "sub": 2}


@numba.njit(parallel=True, cache=True)
def _forward(x, z, src, rel, chan, weight, order, rowptr, channels, out, op):  # pragma: no cover - compiled
    d = x.shape[1]
    for v in numba.prange(rowptr.shape[0] - 1):
        for j in range(rowptr[v], rowptr[v + 1]):
            e = order[j]
            u, r, w = src[e], rel[e], weight[e]
            row = v * channels + chan[e]
            if op == 1:
                for k in range(d):
                    out[row, k] += w * x[u, k] * z[r, k]
            elif op == 2:
                for k in range(d):
                    out[row, k] += w * (x[u, k] - z[r, k])
            else:
                for k in range(d):
                    out[row, k] += w * x[u, k]


@numba.njit(parallel=True, cache=True)
def _grad_x(g, z, dst, rel, chan, weight, order, rowptr, channels, grad_x, op):  # pragma: no cover - compiled
    d = g.shape[1]
    for u in numba.prange(rowptr.shape[0] - 1):
        for j in range(rowptr[u], rowptr[u + 1]):
            e = order[j]
            r, w = rel[e], weight[e]
            row = dst[e] * channels + chan[e]
            if op == 1:
                for k in range(d):
                    grad_x[u, k] += w * g[row, k] * z[r, k]
            else:
                for k in range(d):
                    grad_x[u, k] += w * g[row, k]


@numba.njit(parallel=True, cache=True)
def _grad_z(g, x, src, dst, rel, chan, weight, channels, partial, op):  # pragma: no cover - compiled
    d = g.shape[1]
    chunks = partial.shape[0]
    n = src.shape[0]
    for t in numba.prange(chunks):
        for e in range(t * n // chunks, (t + 1) * n // chunks):
            u, r, w = src[e], rel[e], weight[e]
            row = dst[e] * channels + chan[e]
            if op == 1:
                for k in range(d):
                    partial[t, r, k] += w * g[row, k] * x[u, k]
            else:
                for k in range(d):
                    partial[t, r, k] -= w * g[row, k]


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


@numba.njit(cache=True)
def _counting_sort(keys, rowptr):  # pragma: no cover - compiled
    order = np.empty(keys.shape[0], dtype=np.int64)
    pos = rowptr[:-1].copy()
    for e in range(keys.shape[0]):
        k = keys[e]
        order[pos[k]] = e
        pos[k] += 1
    return order


def _grouping(keys: Tensor, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, rowptr): edges order[rowptr[i]:rowptr[i+1]] have key i (a stable counting sort)."""
    rowptr = torch.zeros(rows + 1, dtype=torch.long)
    rowptr[1:] = torch.cumsum(torch.bincount(keys, minlength=rows), 0)
    return _counting_sort(_np(keys), _np(rowptr)), _np(rowptr)


class _FusedEdgeStage(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, z, src, dst, rel, chan, weight, channels, op, bits):  # type: ignore[override]
        n, d = x.shape
        zz = z if z is not None else x.new_zeros(1, d)
        out = torch.zeros(n * channels, d)
        order, rowptr = _grouping(dst, n)
        _forward(_np(x), _np(zz), _np(src), _np(rel), _np(chan), _np(weight), order, rowptr, channels, out.numpy(), OPS[op])
        # Backward reads x only for the relation gradient of x_u * z_r: the
        # input gradient is the transposed propagation, so copy and sub save nothing.
        saved, meta = compress(x, bits) if op == "mult" else ([], None)
        ctx.save_for_backward(*saved, src, dst, rel, chan, weight, *([] if z is None else [z]))
        ctx.meta, ctx.n, ctx.op, ctx.channels, ctx.has_z = meta, len(saved), op, channels, z is not None
        ctx.shape = (n, d)
        return out.view(n, channels * d)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        saved = ctx.saved_tensors
        src, dst, rel, chan, weight = saved[ctx.n : ctx.n + 5]
        op, channels = OPS[ctx.op], ctx.channels
        n, d = ctx.shape
        z = saved[-1] if ctx.has_z else torch.zeros(1, d)
        g = _np(grad_out.reshape(-1, d))
        grad_x = grad_z = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.zeros(n, d)
            order, rowptr = _grouping(src, n)
            _grad_x(g, _np(z), _np(dst), _np(rel), _np(chan), _np(weight), order, rowptr, channels, grad_x.numpy(), op)
        if ctx.has_z and ctx.needs_input_grad[1]:
            partial = np.zeros((2 * numba.get_num_threads(), *z.shape), dtype=np.float32)
            x = decompress(saved[: ctx.n], ctx.meta) if ctx.n else torch.zeros(1, d)  # sub does not read x
            _grad_z(g, _np(x), _np(src), _np(dst), _np(rel), _np(chan), _np(weight), channels, partial, op)
            grad_z = torch.from_numpy(partial.sum(0))
        return grad_x, grad_z, None, None, None, None, None, None, None, None


def fused_edge_stage(
    x: Tensor,
    z: Tensor | None,
    src: Tensor,
    dst: Tensor,
    rel: Tensor,
    chan: Tensor | None,
    weight: Tensor,
    channels: int,
    op: str,
    bits: int,
) -> Tensor:
    """Differentiable fused edge stage, [n, channels * d], saving a b-bit copy of ``x`` (``mult`` only)."""
    if chan is None:
        chan = torch.zeros(src.shape, dtype=torch.int8)
    return _FusedEdgeStage.apply(x, z, src, dst, rel, chan, weight, channels, op, saving_bits(x, bits))


def fusable(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32
