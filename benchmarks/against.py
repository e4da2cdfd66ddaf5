"""Timing this tree's code against another checkout's, in worker processes that take turns.

A benchmark that offers ``--against DIR`` runs one worker per tree: the same script,
started with ``CODE_VARIABLE`` naming the tree whose ``bigkg`` it imports (the script puts
that tree first on ``sys.path``). A worker prepares its work, prints ``ready``, then
answers each line it reads with the seconds of one timed round. The workers alternate
round by round, so both see the same moments of a noisy host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE_VARIABLE = "BIGKG_BENCHMARK_CODE"


def code_tree() -> str:
    """The tree whose code this process imports: the worker's, else this checkout."""
    return os.environ.get(CODE_VARIABLE, str(REPO))


def checkout(path: str | Path, marker: str) -> Path:
    """``path`` resolved, refused unless it is a bigkg checkout holding ``marker``."""
    tree = Path(path).resolve()
    if not (tree / marker).is_file():
        raise SystemExit(f"--against {tree}: not a bigkg checkout (no {marker})")
    return tree


def interleaved_rounds(command: list[str], trees: dict[str, Path], rounds: int) -> dict[str, list[float]]:
    """Seconds of each of ``rounds`` rounds per tree: ``command`` runs once per tree as a
    worker importing that tree's code, and the workers take turns."""
    workers = {name: subprocess.Popen(command, env={**os.environ, CODE_VARIABLE: str(tree)}, cwd=tree,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for name, tree in trees.items()}
    try:
        for name, worker in workers.items():
            if worker.stdout.readline().strip() != "ready":
                raise SystemExit(f"the {name} worker ({trees[name]}) failed to start")
        seconds: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(rounds):
            for name, worker in workers.items():
                worker.stdin.write("round\n")
                worker.stdin.flush()
                seconds[name].append(float(worker.stdout.readline()))
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
    return seconds


def serve_rounds(run_round) -> None:  # type: ignore[no-untyped-def]
    """A worker's side: say ready, then print ``run_round()``'s seconds for each line read."""
    print("ready", flush=True)
    for _ in sys.stdin:
        print(run_round(), flush=True)
