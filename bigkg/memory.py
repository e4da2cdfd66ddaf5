"""Giving freed heap memory back to the operating system.

`bigkg train` keeps freed blocks below 256 MiB in the heap for reuse
(``launcher.process_settings``): a step's scores and gathered rows are allocated again
every batch. A partition below that size comes from the heap too, so once dropped its
pages stayed resident, in the arena of whichever thread loaded it (the prefetcher's or
the trainer's): on a 2M-entity graph at P=4 the process held ~460 MiB more than the
partitions it kept (docs/benchmarks.md, "Training memory by the number of partitions").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> None:
    """Return the free pages of every malloc arena to the OS (glibc's ``malloc_trim``); a
    no-op where malloc is not glibc's. Costs a walk over the free blocks, so call it when
    something large was freed (a bucket's partitions), not every batch."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
