"""Start ``torchrun ... -m launcher CONFIG`` on this machine, as the benchmarks and the distributed
tests do: the workers' threads set, the output in a log, torchrun's scratch folder beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]

# One node on loopback; the c10d store picks a free port.
SINGLE_NODE = ("--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0")


def start_torchrun(config: Path, torchrun_args: Sequence[str], log: Path, *, threads: int = 1,
                   launcher_args: Sequence[str] = ()) -> subprocess.Popen:
    """``python -m torch.distributed.run TORCHRUN_ARGS -m launcher CONFIG LAUNCHER_ARGS``, writing to ``log``.

    torchrun's agent leaves a ``torchelastic_*`` folder in the temporary directory: it goes
    to ``log``'s folder, not /tmp."""
    command = [sys.executable, "-m", "torch.distributed.run", *torchrun_args, "-m", "launcher", str(config), *launcher_args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TMPDIR": str(log.parent)}
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)


def run_torchrun(config: Path, torchrun_args: Sequence[str], log: Path, *, threads: int = 1,
                 launcher_args: Sequence[str] = (), timeout: float | None = None) -> int:
    """``start_torchrun`` and wait for it; returns its exit status (killed on ``timeout``)."""
    proc = start_torchrun(config, torchrun_args, log, threads=threads, launcher_args=launcher_args)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
