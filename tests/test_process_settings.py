"""launcher.process_settings: after keep_freed_memory, a freed 96 MiB tensor's pages stay with the
process (ready for the next one), while under glibc's defaults they go back to the system; after
freeze_imported_objects, the objects of the imports are out of the collector's generations
while automatic collection stays on."""

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import os, sys, torch
from launcher.process_settings import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else True
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss()
t = torch.ones(24 << 20)  # 96 MiB, every page touched
del t
print(applied, (rss() - before) >> 20)
"""


def probe(code: str, mode: str) -> list[str]:
    """The words a fresh interpreter running ``code`` with argument ``mode`` prints."""
    return subprocess.run([sys.executable, "-c", code, mode], check=True, cwd=REPO, capture_output=True, text=True).stdout.split()


def retained_mib(mode: str) -> tuple[bool, int]:
    applied, mib = probe(PROBE, mode)
    return applied == "True", int(mib)


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
                    reason="glibc malloc only")
def test_freed_tensor_memory_is_kept_only_with_the_training_settings():
    applied, kept = retained_mib("keep")
    assert applied
    assert kept >= 90
    _, default = retained_mib("default")
    assert default < 16


FREEZE_PROBE = """
import gc, sys, torch
from launcher.process_settings import freeze_imported_objects
if sys.argv[1] == "freeze":
    freeze_imported_objects()
print(gc.get_freeze_count(), gc.isenabled())
"""


def test_imported_objects_are_frozen_and_collection_stays_on():
    frozen, enabled = probe(FREEZE_PROBE, "freeze")
    assert int(frozen) > 100_000  # torch's import graph
    assert enabled == "True"  # garbage made later is still collected automatically
    assert int(probe(FREEZE_PROBE, "default")[0]) == 0
