"""The worker entry outside torchrun, and what it reads from torchrun's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bigkg.checkpoint import CheckpointStore
from bigkg.distributed.process_group import DistributedSetupError, WorkerEnv, in_torchrun

REPO = Path(__file__).resolve().parents[1]


def test_worker_env_from_torchrun_variables():
    env = WorkerEnv.from_environ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "head",
                                  "MASTER_PORT": "29500", "TORCHELASTIC_RESTART_COUNT": "2", "TORCHELASTIC_RUN_ID": "job"})
    assert env == WorkerEnv(3, 4, 1, "head", 29500, 2, "job")
    assert in_torchrun({"WORLD_SIZE": "4"}) and not in_torchrun({}) and not in_torchrun({"WORLD_SIZE": "1"})


@pytest.mark.parametrize("environ, message", [
    ({"WORLD_SIZE": "2", "MASTER_PORT": "1"}, "RANK is not set"),
    ({"RANK": "x", "WORLD_SIZE": "2", "MASTER_PORT": "1"}, "RANK='x' is not an integer"),
])
def test_worker_env_errors_name_the_variable(environ, message):
    with pytest.raises(DistributedSetupError, match=message):
        WorkerEnv.from_environ(environ)


# A worker's life in one fresh interpreter: join a gloo group of one, build the shared
# optimizer as the trainer does (torch.optim's first optimizer imports torch._dynamo), leave.
WORKER_LIFE = """
import os, torch, torch.distributed as dist
from bigkg.distributed.process_group import WorkerEnv, init_process_group
init_process_group(WorkerEnv.from_environ(), torch.device("cpu"), timeout=30)
torch.optim.Adagrad([torch.zeros(1, requires_grad=True)])
dist.destroy_process_group()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(",".join(n for n in names if "gloo" in n))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through Linux's /proc")
def test_destroying_the_process_group_stops_gloos_threads():
    """Left running, gloo's threads are torn down at interpreter exit, which now and then
    aborts a finished worker ("terminate called without an active exception")."""
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"}
    env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    done = subprocess.run([sys.executable, "-c", WORKER_LIFE], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"gloo threads still running: {done.stdout.strip()}"


def test_launcher_alone_is_bigkg_train(tmp_path):
    data = REPO / "data" / "codex-s"
    dataset = tmp_path / "codex"
    subprocess.run([sys.executable, "-m", "launcher.cli", "partition", str(data / "train.txt"), "--valid", str(data / "valid.txt"),
                    "--test", str(data / "test.txt"), "--out", str(dataset), "--no-progress"],
                   check=True, cwd=REPO, capture_output=True)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": str(dataset), "run_dir": str(tmp_path / "run"),
                                      "model": {"dim": 8}, "training": {"epochs": 1, "threads": 1},
                                      "eval": {"valid_every": 0}}))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    done = subprocess.run([sys.executable, "-m", "launcher", str(config), "--json", str(tmp_path / "s.json")],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["epochs_completed"] == 1
    assert CheckpointStore(tmp_path / "run").latest().meta["epoch"] == 1
    assert "[rank" not in done.stderr  # one process: no rank prefix


def test_launcher_reports_bad_config_in_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("training:\n  epochz: 1\n")
    done = subprocess.run([sys.executable, "-m", "launcher", str(config)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2
    assert "epochz" in done.stderr and "Traceback" not in done.stderr
