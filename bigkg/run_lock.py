"""One trainer per run directory.

Two trainers on one run_dir would interleave their checkpoint versions and
metrics records, and ``--fresh`` in one would delete the other's checkpoints.
``bigkg train`` therefore holds an exclusive ``flock`` on ``run_dir/train.lock``
while it trains. The kernel drops the lock when the process ends, SIGKILL
included, so a killed run leaves nothing stale behind. (flock is advisory and
may not reach across machines on a network file system; distributed workers
share their run_dir and are coordinated by the lock server instead.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from bigkg.atomic import OutputError, write_problem
from bigkg.errors import BigKGError


class RunDirInUse(BigKGError):
    """Another process is training in this run directory."""


def lock_run_dir(run_dir: Path) -> IO[str]:
    """Take ``run_dir``'s training lock; the returned file holds it until closed."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / "train.lock", "a+")
    except OSError as exc:  # a read-only or missing place: the config's run_dir is at fault
        raise OutputError(f"run_dir {run_dir}: cannot create it: {write_problem(exc)}") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunDirInUse(f"run_dir {run_dir} is being trained by {holder}: wait for it to end, or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle
