"""The ``bigkg`` entry point itself, in a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_output_into_a_closed_pipe_ends_quietly():
    """``bigkg ... | head`` closes the pipe early: the command stops without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "config", "--print-defaults"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command, still importing, writes its first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err
