"""Autograd Functions whose forward is exact and whose saved state is compressed.

Each Function saves what its backward needs as a b-bit copy (see ``codec``), or
as 1-bit masks where the derivative is 0/1 (ReLU, dropout). ``bits=32`` keeps an
exact float copy; an input that autograd keeps alive anyway (a leaf such as an
embedding table) is always saved by reference, since compressing it would add
memory rather than save it.

``recompute`` runs a function of a node-level tensor (gather, edge messages,
attention softmax, scatter) without keeping any of its intermediates: backward
rebuilds them from the saved node-level input and the indices, so edge-level
[E, d] tensors are never stored.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from bigkg.quant import kernels
from bigkg.quant.codec import Quantized, check_bits, dequantize, pack_mask, quantize, unpack_mask
from bigkg.sparsify.counter import MacCounter

EXACT = 32
# Above this fraction of live gradient rows, a linear's backward runs dense.
_DENSE_LIVE_FRACTION = 0.9

Packed = tuple[list[Tensor], tuple[Any, ...]]


def saving_bits(x: Tensor, bits: int) -> int:
    """``bits`` for a Function input, or EXACT for a leaf that autograd keeps
    alive anyway (decided outside the Function, where leafness is visible)."""
    return EXACT if x.is_leaf and x.requires_grad else bits


def compress(x: Tensor, bits: int) -> Packed:
    """The tensors to save for ``x`` and how to rebuild it."""
    if bits == EXACT:
        return [x], ("raw",)
    check_bits(bits)
    q = quantize(x, bits)
    return list(q.tensors()), ("q", x.shape, q.bits, q.dtype)


def decompress(tensors: Sequence[Tensor], meta: tuple[Any, ...], rows: Tensor | None = None) -> Tensor:
    """The saved tensor; given ``rows``, only those rows of its [rows, last dim] view."""
    if meta[0] == "raw":
        x = tensors[0]
        return x if rows is None else x.reshape(-1, x.shape[-1]).index_select(0, rows)
    _, shape, bits, dtype = meta
    packed, lo, step = tensors
    q = Quantized(packed, lo, step, shape, bits, dtype)
    return dequantize(q, rows)


def live_rows(g: Tensor) -> Tensor | None:
    """Indices of the rows of a 2-D gradient that are not all zero, or None
    when nearly all are (then the dense product is as fast).

    Rows outside the loss's reach (beyond the batch's L-hop neighbourhood,
    which pruning shrinks) get exactly zero gradient, so a backward product
    may run on the live rows alone.
    """
    if not g.is_contiguous() or g.shape[0] == 0:
        return None
    if g.device.type == "cpu" and g.dtype == torch.float32:
        live = torch.empty(g.shape[0], dtype=torch.bool)
        kernels.nonzero_rows(g.numpy(), live.numpy())
    else:
        live = (g != 0).any(dim=1)
    rows = torch.nonzero(live).squeeze(1)
    return None if rows.numel() > _DENSE_LIVE_FRACTION * g.shape[0] else rows


def _live_part(g: Tensor) -> tuple[Tensor | None, Tensor]:
    """(live rows of ``g`` or None, those rows of ``g``)."""
    live = live_rows(g)
    return live, g if live is None else g.index_select(0, live)


def _all_rows(part: Tensor, live: Tensor | None, rows: int) -> Tensor:
    """``part``, computed on the ``live`` rows, as all ``rows`` rows (zero elsewhere)."""
    return part if live is None else part.new_zeros(rows, part.shape[1]).index_copy_(0, live, part)


def _count(meta: tuple[Any, ...]) -> int:
    return 1 if meta[0] == "raw" else 3


class _Recompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, bits, num_aux, x, *rest):  # type: ignore[override]
        aux = rest[:num_aux]
        out = fn(x, *aux)
        saved, meta = compress(x, bits)
        ctx.save_for_backward(*saved, *aux)
        ctx.fn, ctx.meta = fn, meta
        ctx.params = rest[num_aux:]
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        saved = ctx.saved_tensors
        n = _count(ctx.meta)
        x = decompress(saved[:n], ctx.meta).detach().requires_grad_(ctx.needs_input_grad[3])
        aux = saved[n:]
        params = ctx.params
        wanted = [x] if x.requires_grad else []
        wanted += [p for p, need in zip(params, ctx.needs_input_grad[3 + len(aux) + 1 :]) if need]
        with torch.enable_grad():
            out = ctx.fn(x, *aux)
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True)) if wanted else iter(())
        grad_x = next(grads) if x.requires_grad else None
        grad_params = [next(grads) if need else None for need in ctx.needs_input_grad[3 + len(aux) + 1 :]]
        return (None, None, None, grad_x, *([None] * len(aux)), *grad_params)


def recompute(
    fn: Callable[..., Tensor], x: Tensor, aux: Sequence[Tensor], params: Sequence[Tensor], bits: int
) -> Tensor:
    """``fn(x, *aux)`` saving only a (compressed) copy of ``x`` plus ``aux``.

    ``aux`` are tensors saved as they are (indices, edge weights); ``params``
    are every tensor ``fn`` reads that needs a gradient (it may read them from
    a module), listed so autograd routes their gradients.
    """
    return _Recompute.apply(fn, saving_bits(x, bits), len(aux), x, *aux, *params)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, bits, counter):  # type: ignore[override]
        rows = x.reshape(-1, x.shape[-1])
        out = torch.addmm(bias, rows, weight.t()) if bias is not None else rows @ weight.t()
        saved, meta = compress(rows, bits)
        ctx.save_for_backward(*saved, weight)
        ctx.meta, ctx.shape = meta, x.shape
        ctx.has_bias = bias is not None
        if counter is not None:
            counter.add("transform", rows.shape[0] * weight.numel())
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        saved = ctx.saved_tensors
        n = _count(ctx.meta)
        weight = saved[n]
        g = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        live, g = _live_part(g)
        if ctx.needs_input_grad[0]:
            grad_x = _all_rows(g @ weight, live, ctx.shape.numel() // ctx.shape[-1]).view(ctx.shape)
        if ctx.needs_input_grad[1]:
            grad_w = g.t() @ decompress(saved[:n], ctx.meta, live)
        return grad_x, grad_w, grad_b, None, None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, bits: int, counter: MacCounter | None = None) -> Tensor:
    """``x @ weight.T + bias`` saving a b-bit copy of ``x`` (the weight is a parameter).

    Pruned weights arrive here already masked; they are executed as a dense
    product because torch's CPU sparse kernels are slower than dense BLAS at
    the densities and sizes of encoder weights (docs/kgnn.md).
    """
    return _Linear.apply(x, weight, bias, saving_bits(x, bits), counter)


class _ReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        out = x.clamp_min(0)
        ctx.save_for_backward(pack_mask(out > 0))
        ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (packed,) = ctx.saved_tensors
        return grad_out * unpack_mask(packed, ctx.shape)


def relu(x: Tensor) -> Tensor:
    """ReLU saving 1 bit per entry."""
    return _ReLU.apply(x)


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bits):  # type: ignore[override]
        out = torch.tanh(x)
        # Exact: keep y itself (the next layer keeps it anyway) and derive 1 - y^2
        # in backward. Quantized: save the derivative 1 - y^2 itself, whose
        # stochastic rounding is unbiased, whereas 1 - q(y)^2 would not be
        # (computed in place: one fresh [N, d] tensor instead of two).
        ctx.from_output = bits == EXACT
        saved, meta = compress(out if ctx.from_output else (out * out).neg_().add_(1), bits)
        ctx.save_for_backward(*saved)
        ctx.meta = meta
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        g = grad_out.reshape(-1, grad_out.shape[-1])
        live, part = _live_part(g)
        saved = decompress(ctx.saved_tensors, ctx.meta, live)
        derivative = 1 - saved * saved if ctx.from_output else saved
        return _all_rows(part * derivative.view_as(part), live, g.shape[0]).view_as(grad_out), None


def tanh(x: Tensor, bits: int) -> Tensor:
    """tanh saving a b-bit copy of its derivative."""
    return _Tanh.apply(x, bits)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p, generator):  # type: ignore[override]
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
        scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(pack_mask(keep))
        ctx.shape, ctx.scale = x.shape, scale
        return x * keep * scale

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (packed,) = ctx.saved_tensors
        return grad_out * unpack_mask(packed, ctx.shape) * ctx.scale, None, None


def dropout(x: Tensor, p: float, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout saving its mask as 1 bit per entry."""
    if not training or p == 0.0:
        return x
    return _Dropout.apply(x, p, generator)
