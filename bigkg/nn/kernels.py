"""Fused edge stage for elementwise messages (numba, CPU).

For a message x_u * z_r (``mult``), x_u - z_r (``sub``) or x_u (``copy``),
weighted by a_uv and summed into its output row (the slot of the edge's
destination and channel in the compact aggregate, ``Receivers``), one pass
over the edges does gather, compose, weight and scatter without materialising
any [E, d] tensor. Forward runs one aggregate row per iteration and the
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

from bigkg.nn.graph import EdgeSet, Receivers, compact_ids, positions, receiver_keys
from bigkg.quant.functions import EXACT, compress, decompress, saving_bits

OPS = {"copy": 0, "mult": 1, "sub": 2}


@numba.njit(parallel=True, cache=True)
def _forward(x, z, src, rel, weight, order, rowptr, out, op):  # pragma: no cover - compiled
    d = x.shape[1]
    for v in numba.prange(rowptr.shape[0] - 1):
        for j in range(rowptr[v], rowptr[v + 1]):
            e = order[j]
            u, r, w = src[e], rel[e], weight[e]
            if op == 1:
                for k in range(d):
                    out[v, k] += w * x[u, k] * z[r, k]
            elif op == 2:
                for k in range(d):
                    out[v, k] += w * (x[u, k] - z[r, k])
            else:
                for k in range(d):
                    out[v, k] += w * x[u, k]


@numba.njit(parallel=True, cache=True)
def _grad_x(g, z, dst, rel, weight, order, rowptr, grad_x, op):  # pragma: no cover - compiled
    d = g.shape[1]
    for u in numba.prange(rowptr.shape[0] - 1):
        for j in range(rowptr[u], rowptr[u + 1]):
            e = order[j]
            row, r, w = dst[e], rel[e], weight[e]
            if op == 1:
                for k in range(d):
                    grad_x[u, k] += w * g[row, k] * z[r, k]
            else:
                for k in range(d):
                    grad_x[u, k] += w * g[row, k]


@numba.njit(parallel=True, cache=True)
def _grad_z(g, x, src, dst, rel, weight, partial, op):  # pragma: no cover - compiled
    """src[e] indexes the rows of x (the saved copy's rows, not the layer input's)."""
    d = g.shape[1]
    chunks = partial.shape[0]
    n = src.shape[0]
    for t in numba.prange(chunks):
        for e in range(t * n // chunks, (t + 1) * n // chunks):
            u, row, r, w = src[e], dst[e], rel[e], weight[e]
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
    def forward(ctx, x, z, src, dst, rel, weight, channel, position, slot, op, bits, rows):  # type: ignore[override]
        n, d = x.shape
        zz = z if z is not None else x.new_zeros(1, d)
        out = torch.zeros(rows, d)
        order, rowptr = _grouping(slot, rows)
        _forward(_np(x), _np(zz), _np(src), _np(rel), _np(weight), order, rowptr, out.numpy(), OPS[op])
        # Backward reads x only for the relation gradient of x_u * z_r: the
        # input gradient is the transposed propagation, so copy and sub save nothing.
        # It reads x at the edges' sources only, so a quantized copy keeps just those rows.
        saved, meta, sources = [], None, None
        if op == "mult":
            rows_read, sources = compact_ids(src, n) if bits != EXACT else (None, None)
            saved, meta = compress(x if rows_read is None else x.index_select(0, rows_read), bits)
        # Node-sized position maps are kept rather than per-edge slots; backward rebuilds those.
        ctx.save_for_backward(*saved, src, dst, rel, weight, channel, position, sources, z)
        ctx.meta, ctx.n, ctx.op = meta, len(saved), op
        ctx.shape = (n, d)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        saved = ctx.saved_tensors
        src, dst, rel, weight, channel, position, sources, z = saved[ctx.n :]
        op = OPS[ctx.op]
        n, d = ctx.shape
        slot = _np(positions(receiver_keys(dst, channel, n), position))
        g = _np(grad_out)
        grad_x = grad_z = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.zeros(n, d)
            order, rowptr = _grouping(src, n)
            zz = z if z is not None else torch.zeros(1, d)
            _grad_x(g, _np(zz), slot, _np(rel), _np(weight), order, rowptr, grad_x.numpy(), op)
        if z is not None and ctx.needs_input_grad[1]:
            partial = np.zeros((2 * numba.get_num_threads(), *z.shape), dtype=np.float32)
            x = decompress(saved[: ctx.n], ctx.meta) if ctx.n else torch.zeros(1, d)  # sub does not read x
            _grad_z(g, _np(x), _np(positions(src, sources)), slot, _np(rel), _np(weight), partial, op)
            grad_z = torch.from_numpy(partial.sum(0))
        return grad_x, grad_z, None, None, None, None, None, None, None, None, None, None


def fused_edge_stage(x: Tensor, z: Tensor | None, edges: EdgeSet, channel: Tensor | None, receivers: Receivers, op: str, bits: int) -> Tensor:
    """Differentiable fused edge stage: the compact aggregate [len(receivers), d]
    of ``edges`` (of channels ``channel``); saves a b-bit copy of ``x`` (``mult`` only)."""
    src, dst, rel, weight = edges.tensors()
    return _FusedEdgeStage.apply(
        x, z, src, dst, rel, weight, channel, receivers.position, receivers.slot, op, saving_bits(x, bits), len(receivers)
    )


def fusable(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32
