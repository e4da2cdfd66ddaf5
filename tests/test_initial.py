"""A fresh run's first checkpoint is written one partition at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bigkg.checkpoint import CheckpointStore
from bigkg.format import EntityType, Manifest, Relation, write_entity_names, write_manifest

REPO = Path(__file__).resolve().parents[1]


PEAK_RSS_SCRIPT = """
import resource, sys
from bigkg.config import config_from_dict
from bigkg.training.trainer import Trainer
def fresh_run(dataset, run_dir, dim):
    config = config_from_dict({"dataset": dataset, "run_dir": run_dir, "model": {"dim": dim},
                               "training": {"epochs": 0, "threads": 1}, "eval": {"valid_every": 0}})
    with Trainer(config):
        pass
fresh_run(sys.argv[1], sys.argv[2] + "_warm_up", 1)  # what any trainer loads (kernels, buffers) is in the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fresh_run(sys.argv[1], sys.argv[2], 256)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_fresh_runs_first_checkpoint_holds_one_partition_in_memory_at_a_time(tmp_path):
    """16 partitions of 25,000 rows of 256 floats are 410 MB; writing the first version may
    not raise the peak resident memory by more than a quarter of that (measured: about 65 MB,
    and 440 MB when every partition is made before the first is written)."""
    root, parts, rows = tmp_path / "wide", 16, 25_000
    for p in range(parts):
        write_entity_names(root, "entity", p, [f"e{p}_{k}" for k in range(rows)])
    write_manifest(root, Manifest(parts, [EntityType("entity", [rows] * parts)], [Relation("r", "entity", "entity")], {"train": {}}))
    # A fixed mmap threshold hands freed partitions back to the kernel at once, so the peak
    # counts what is alive, not what glibc's sliding threshold happens to keep.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(root), str(tmp_path / "run")],
                         capture_output=True, text=True, check=True, cwd=REPO, env=env)
    table_bytes = parts * rows * 256 * 4
    assert int(out.stdout.split()[-1]) < table_bytes / 4, out.stdout
    assert CheckpointStore(tmp_path / "run").latest().load_partition("entity", parts - 1)[0].shape == (rows, 256)
