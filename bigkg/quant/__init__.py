"""Quantized saved activations (TinyKG / EXACT): exact forward, compressed backward state."""

from bigkg.quant.accounting import SavedBytes, SavedBytesReport
from bigkg.quant.codec import (
    BITS,
    Quantized,
    QuantizationError,
    dequantize,
    pack_bits,
    pack_mask,
    quantize,
    unpack_bits,
    unpack_mask,
    variance_bound,
)
from bigkg.quant.functions import EXACT, dropout, linear, recompute, relu, tanh

__all__ = [
    "BITS",
    "EXACT",
    "Quantized",
    "QuantizationError",
    "SavedBytes",
    "SavedBytesReport",
    "dequantize",
    "dropout",
    "linear",
    "pack_bits",
    "pack_mask",
    "quantize",
    "recompute",
    "relu",
    "tanh",
    "unpack_bits",
    "unpack_mask",
    "variance_bound",
]
