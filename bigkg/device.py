"""Which torch device a config asks for, and how many CPU threads a trainer uses;
shared by training and evaluation."""

from __future__ import annotations

import numba
import torch

from bigkg.config import Config, ConfigError


def build_device(config: Config) -> torch.device:
    """``auto`` is the GPU when there is one; an explicit ``cuda`` without CUDA is an error.
    Also sets this process's float32 matmul precision (``matmul_precision``), which
    training and evaluation share."""
    torch.set_float32_matmul_precision(config.matmul_precision)
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {config.device!r} was asked for but CUDA is not available here")
    return device


def set_cpu_threads(threads: int) -> None:
    """Run torch's intra-op work and numba's parallel kernels (the encoder's edge
    stage and quantizer) on ``threads`` threads in the calling thread.

    numba otherwise uses a thread per core in every process, so two trainers on a
    2-core machine with ``training.threads: 1`` each ran four busy threads, and
    each parallel kernel waited for its descheduled half. numba's count is per
    calling thread and at most NUMBA_NUM_THREADS.

    numba first: its OpenMP pool shares torch's libgomp, and starting the pool
    sets the calling thread's OpenMP count to NUMBA_NUM_THREADS, undoing an
    earlier ``torch.set_num_threads``. Set the other way round, a trainer with
    ``threads: 1`` ran torch's sorts and products on two threads, whose idle
    half spun on a core another process needed (docs/benchmarks.md).
    """
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
