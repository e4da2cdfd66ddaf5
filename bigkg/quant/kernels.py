"""numba kernels for quantizing and dequantizing rows on the CPU in one pass.

They compute exactly what the torch code in ``codec`` computes (same float32
arithmetic, same uniform noise, same packing order), so either path reads the
other's codes; a test checks they agree bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def quantize_rows(rows, noise, bits, codes, lo, step):  # pragma: no cover - compiled
    levels = np.float32((1 << bits) - 1)
    n, d = rows.shape
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
            c = np.floor((rows[i, k] - a) / s + noise[i, k])
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
def dequantize_rows(packed, bits, lo, step, out):  # pragma: no cover - compiled
    per = 8 // bits
    mask = (1 << bits) - 1
    n, d = out.shape
    for i in numba.prange(n):
        a = lo[i, 0]
        s = step[i, 0]
        for k in range(d):
            idx = i * d + k
            code = (packed[idx // per] >> (bits * (idx % per))) & mask
            out[i, k] = a + np.float32(code) * s
