"""Run a benchmark script the way its docstring does, at a test's small size, and read its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str, tmp_path: Path, timeout: int = 600) -> Any:
    """``benchmarks/<script> ARGS --work TMP/work --json TMP/result.json``; returns the JSON it wrote."""
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--work", str(tmp_path / "work"),
                    "--json", str(out)], check=True, cwd=REPO, capture_output=True, timeout=timeout)
    return json.loads(out.read_text())
