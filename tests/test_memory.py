"""release_freed_memory: a freed block that training's malloc settings keep in the heap goes
back to the OS (a fresh process, its resident pages read from /proc)."""

import subprocess
import sys
from pathlib import Path

import pytest

from bigkg.memory import _malloc_trim

REPO = Path(__file__).resolve().parents[1]

KEEP_THEN_RELEASE = """
import os, torch
from bigkg.memory import release_freed_memory
from launcher.process_settings import keep_freed_memory

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

assert keep_freed_memory()
before = resident_mib()
block = torch.ones(200 << 20 >> 2)  # 200 MiB, under the 256 MiB mmap threshold: from the heap
del block
kept = resident_mib() - before
release_freed_memory()
print(round(kept), round(resident_mib() - before))
"""


@pytest.mark.skipif(_malloc_trim() is None or not Path("/proc/self/statm").exists(), reason="needs glibc on Linux")
def test_a_freed_partition_sized_block_is_kept_by_the_heap_until_released():
    out = subprocess.run([sys.executable, "-c", KEEP_THEN_RELEASE], check=True, cwd=REPO, capture_output=True, text=True)
    kept, after = map(int, out.stdout.split())
    assert kept > 150  # training's settings keep it resident once freed...
    assert after < 50  # ...until release_freed_memory gives its pages back
