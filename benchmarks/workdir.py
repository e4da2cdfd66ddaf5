"""The ``--work`` and ``--json`` options the benchmark scripts share, and the work directory behind them."""

from __future__ import annotations

import argparse
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def add_work_arguments(parser: argparse.ArgumentParser, results: str) -> None:
    """``--work DIR`` (keep what the run writes) and ``--json PATH`` (write ``results`` there)."""
    parser.add_argument("--work", type=Path, help="keep datasets and runs here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help=f"write the {results} here")


@contextmanager
def work_directory(work: Path | None) -> Iterator[Path]:
    """``work``, created if needed and kept; without it a temporary directory, removed afterwards."""
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
