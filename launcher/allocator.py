"""glibc malloc settings for training processes: freed tensor memory stays in the heap.

torch's CPU tensors come from malloc. Under glibc's defaults a large block is
mmapped and unmapped when freed, and the heap's top is trimmed, so a training
step that allocates the same few megabytes of scores, gradients and gathered
rows every batch page-faults them in again each time. Raising the mmap and
trim thresholds keeps those pages for reuse: training on CPU runs 6-18% more
edges/s (docs/benchmarks.md), at the price of up to ``trim_threshold`` bytes
of freed memory kept by the process. Set by the training entry points only,
not by the library (whose users own their process) nor by the partitioner
(whose memory budget counts resident bytes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Serve blocks below ``mmap_threshold`` bytes from the heap and trim it only above
    ``trim_threshold`` bytes free; False (and nothing changed) where malloc is not glibc's."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if not applied:
        log.debug("malloc thresholds not applied")
    return applied
