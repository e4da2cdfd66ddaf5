"""Compressed copies of activations: per-row min/max, stochastic rounding to
b-bit codes (b in 1, 2, 4, 8), codes bit-packed into uint8, and 1-bit masks.

Stochastic rounding makes the dequantized value unbiased: for u = (x - lo) / s,
the code is floor(u) + 1 with probability frac(u), so E[code] = u and
E[dequantize(quantize(x))] = x. Each entry's variance is at most s^2 / 4 with
s = R / (2^b - 1), so a row of d entries and range R has total variance at most
d * R^2 / (4 (2^b - 1)^2).

On the CPU the per-row work runs as numba kernels (``kernels``), which draw
the noise themselves: a counter-based hash (splitmix64) of the entry's index
and a seed taken from torch's generator, so runs are as reproducible as with
torch.rand. The torch versions (``quantize_reference``, ``dequantize_reference``)
compute the same codes from the same noise and serve other devices (with
torch.rand noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bigkg.errors import BigKGError
from bigkg.quant import kernels

BITS = (1, 2, 4, 8)


class QuantizationError(BigKGError):
    """An unsupported bit width or tensor shape for quantization."""


def check_bits(bits: int) -> int:
    if bits not in BITS:
        raise QuantizationError(f"quantize bits must be one of {BITS}, got {bits!r}")
    return bits


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack integer codes in [0, 2^bits) into a flat uint8 tensor, 8 // bits per byte."""
    check_bits(bits)
    flat = codes.reshape(-1).to(torch.uint8)
    if bits == 8:
        return flat.clone()
    per_byte = 8 // bits
    pad = (-flat.numel()) % per_byte
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    groups = flat.view(-1, per_byte)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=codes.device)
    return (groups << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` codes as uint8."""
    check_bits(bits)
    if bits == 8:
        return packed[:numel]
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    mask = (1 << bits) - 1
    return ((packed.unsqueeze(1) >> shifts) & mask).reshape(-1)[:numel]


def pack_mask(mask: Tensor) -> Tensor:
    """A boolean mask as 1 bit per entry."""
    return pack_bits(mask, 1)


def unpack_mask(packed: Tensor, shape: torch.Size) -> Tensor:
    numel = 1
    for n in shape:
        numel *= n
    return unpack_bits(packed, 1, numel).view(shape).bool()


@dataclass
class Quantized:
    """A b-bit copy of a 2-D float tensor: packed codes plus per-row lo and step."""

    packed: Tensor  # uint8, flat
    lo: Tensor  # float32 [rows, 1]
    step: Tensor  # float32 [rows, 1]
    shape: torch.Size
    bits: int
    dtype: torch.dtype

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.packed, self.lo, self.step

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


def quantize(x: Tensor, bits: int, generator: torch.Generator | None = None) -> Quantized:
    """Stochastically round each row of ``x`` (viewed as [rows, last dim]) to b bits."""
    check_bits(bits)
    if x.dim() == 0:
        raise QuantizationError("cannot quantize a scalar")
    rows = x.detach().reshape(-1, x.shape[-1]) if x.dim() > 1 else x.detach().reshape(1, -1)
    rows = rows.float().contiguous()
    if _on_cpu(rows):
        # The kernel draws the noise itself from a seed of torch's generator:
        # filling a noise tensor with torch.rand costs several times the quantization.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        packed, lo, step = _quantize_kernel(rows, bits, seed=seed)
    else:
        noise = torch.rand(rows.shape, generator=generator, device=x.device, dtype=rows.dtype)
        packed, lo, step = quantize_reference(rows, noise, bits)
    return Quantized(packed, lo, step, x.shape, bits, x.dtype)


def quantize_reference(rows: Tensor, noise: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """(packed codes, lo, step) of float32 ``rows`` with uniform ``noise``, in torch."""
    levels = (1 << bits) - 1
    lo = rows.amin(dim=1, keepdim=True)
    hi = rows.amax(dim=1, keepdim=True)
    step = (hi - lo) / levels
    # A constant row has zero range: any step reproduces it exactly.
    step = torch.where(step > 0, step, torch.ones_like(step))
    codes = torch.floor((rows - lo) / step + noise).clamp_(0, levels)
    return pack_bits(codes, bits), lo, step


def _quantize_kernel(rows: Tensor, bits: int, noise: Tensor | None = None, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`quantize_reference` on the CPU, with ``noise`` or, without it, the noise drawn from ``seed``."""
    n, d = rows.shape
    codes = torch.empty(n * d, dtype=torch.uint8)
    lo = torch.empty(n, 1)
    step = torch.empty(n, 1)
    given = torch.empty(0, d) if noise is None else noise
    kernels.quantize_rows(rows.numpy(), given.numpy(), seed, bits, codes.numpy(), lo.numpy(), step.numpy())
    if bits == 8:
        return codes, lo, step
    packed = torch.empty((n * d * bits + 7) // 8, dtype=torch.uint8)
    kernels.pack(codes.numpy(), bits, packed.numpy())
    return packed, lo, step


def dequantize(q: Quantized, rows: Tensor | None = None) -> Tensor:
    """The values of ``q``; given ``rows`` (indices into its rows), only those, as [len(rows), width]."""
    count = q.lo.shape[0]
    width = (q.shape[-1] if len(q.shape) > 1 else q.shape[0]) if count else 0
    if _on_cpu(q.lo) and count:
        index = torch.arange(count) if rows is None else rows.contiguous()
        out = torch.empty(index.numel(), width)
        kernels.dequantize_rows(q.packed.numpy(), q.bits, q.lo.numpy(), q.step.numpy(), index.numpy(), out.numpy())
        out = out.to(q.dtype)
        return out if rows is not None else out.view(q.shape)
    return dequantize_reference(q, rows)


def dequantize_reference(q: Quantized, rows: Tensor | None = None) -> Tensor:
    """:func:`dequantize` in torch."""
    count = q.lo.shape[0]
    width = q.shape[-1] if len(q.shape) > 1 else q.shape[0]
    codes = unpack_bits(q.packed, q.bits, count * width).view(count, width)
    if rows is not None:
        return (q.lo[rows] + codes[rows].float() * q.step[rows]).to(q.dtype)
    return (q.lo + codes.float() * q.step).to(q.dtype).view(q.shape)


def _on_cpu(t: Tensor) -> bool:
    return t.device.type == "cpu"


def variance_bound(x: Tensor, bits: int) -> Tensor:
    """Per-row bound d * R^2 / (4 (2^b - 1)^2) on the summed variance of dequantization."""
    rows = x.reshape(-1, x.shape[-1]).float()
    rng = rows.amax(dim=1) - rows.amin(dim=1)
    levels = (1 << check_bits(bits)) - 1
    return rows.shape[1] * rng.pow(2) / (4 * levels**2)
