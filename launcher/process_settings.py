"""Process settings of the training entry points (``bigkg train``, the torchrun worker).

Set there only, not by the library (whose users own their process) nor by the
partitioner (whose memory budget counts resident bytes).

Freed tensor memory stays in the heap. torch's CPU tensors come from malloc;
under glibc's defaults a large block is mmapped and unmapped when freed, and the
heap's top is trimmed, so a training step that allocates the same few megabytes
of scores, gradients and gathered rows every batch page-faults them in again
each time. Raising the mmap and trim thresholds keeps those pages for reuse:
training on CPU runs 6-18% more edges/s (docs/benchmarks.md), at the price of up
to ``trim_threshold`` bytes of freed memory kept by the process.

Objects made while importing are frozen: torch's import alone leaves some
hundreds of thousands of container objects that live as long as the process,
and every full collection, the interpreter's last one at exit included, walks
them all again. Frozen, they are skipped: a process that imported torch exits
in 0.24 s instead of 0.67 s on the benchmark machine, and training's own
full collections (~0.1 s each, GIL held) find only the objects made since.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
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


def freeze_imported_objects() -> None:
    """Move every object the collector tracks now to its permanent generation
    (call once the modules are imported; later garbage is collected as usual)."""
    gc.collect()  # what is garbage already is freed rather than kept for good
    gc.freeze()


def prepare_training_process() -> None:
    """Both settings; called by ``bigkg train`` and the torchrun worker after their imports."""
    keep_freed_memory()
    freeze_imported_objects()
