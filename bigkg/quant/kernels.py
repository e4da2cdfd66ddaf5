"""numba kernels for quantizing and dequantizing rows on the CPU in one pass,
and for finding the rows of a gradient that are not all zero.

They compute exactly what the torch code in ``codec`` computes (same float32
arithmetic, same uniform noise, same packing order), so either path reads the
other's codes; a test checks they agree bit for bit. Without a noise array,
``quantize_rows`` draws the noise itself (``uniform_noise`` gives the same
values), which saves filling and reading an array as large as the input.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always")
def _uniform(seed, index):  # pragma: no cover - compiled
    """A float32 in [0, 1) on a 2^-24 grid, like torch.rand: splitmix64 of seed + index."""
    z = np.uint64(seed) + np.uint64(index) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float32(z >> np.uint64(40)) * np.float32(1.0 / 16777216.0)


@numba.njit(parallel=True, cache=True)
def uniform_noise(seed, out):  # pragma: no cover - compiled
    """The noise ``quantize_rows`` draws from ``seed`` for rows of out's shape."""
    n, d = out.shape
    for i in numba.prange(n):
        for k in range(d):
            out[i, k] = _uniform(seed, i * d + k)


@numba.njit(parallel=True, cache=True)
def quantize_rows(rows, noise, seed, bits, codes, lo, step):  # pragma: no cover - compiled
    """Codes of each row; the rounding noise is ``noise`` when it has rows, else
    drawn here from ``seed`` (a counter-based hash: no noise tensor to fill)."""
    levels = np.float32((1 << bits) - 1)
    n, d = rows.shape
    drawn = noise.shape[0] == 0
    for i in numba.prange(n):
        a = rows[i, 0]
        b = rows[i, 0]
        for k in range(1, d):
            v = rows[i, k]
            if v < a:
                a = v
            if v > b:
                b = v
        s = (b - a) / levels
        if not s > 0:
            s = np.float32(1.0)
        lo[i, 0] = a
        step[i, 0] = s
        for k in range(d):
            u = _uniform(seed, i * d + k) if drawn else noise[i, k]
            c = np.floor((rows[i, k] - a) / s + u)
            if c < 0:
                c = np.float32(0.0)
            elif c > levels:
                c = levels
            codes[i * d + k] = np.uint8(c)


@numba.njit(parallel=True, cache=True)
def pack(codes, bits, packed):  # pragma: no cover - compiled
    per = 8 // bits
    n = codes.shape[0]
    for j in numba.prange(packed.shape[0]):
        byte = 0
        for t in range(per):
            idx = j * per + t
            if idx < n:
                byte |= codes[idx] << (bits * t)
        packed[j] = byte


@numba.njit(parallel=True, cache=True)
def dequantize_rows(packed, bits, lo, step, rows, out):  # pragma: no cover - compiled
    """out[j] = stored row rows[j]."""
    per = 8 // bits
    mask = (1 << bits) - 1
    n, d = out.shape
    for j in numba.prange(n):
        i = rows[j]
        a = lo[i, 0]
        s = step[i, 0]
        for k in range(d):
            idx = i * d + k
            code = (packed[idx // per] >> (bits * (idx % per))) & mask
            out[j, k] = a + np.float32(code) * s


@numba.njit(parallel=True, cache=True)
def nonzero_rows(x, out):  # pragma: no cover - compiled
    """out[i] = whether row i of x has a nonzero entry (NaN counts as nonzero)."""
    n, d = x.shape
    for i in numba.prange(n):
        found = False
        for k in range(d):
            if x[i, k] != 0:
                found = True
                break
        out[i] = found
