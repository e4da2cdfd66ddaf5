"""Multi-worker training with torchrun on loopback (gloo, CPU) on FB15k-237 with P=4.

Every run is audited from its bucket event logs (no partition leased twice at
once, every bucket done exactly once per epoch) and its test MRR is compared
with a single-process run of the same settings.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bigkg.checkpoint import CheckpointStore
from bigkg.config import load_config
from bigkg.distributed.audit import audit, read_events
from bigkg.evaluation import evaluate
from bigkg.training import train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the settings benchmarks/bucket_order.py measures, so its table speaks of these tests
from benchmarks.bucket_order import SETTINGS, write_config as write_settings  # noqa: E402
from benchmarks.torchrun import SINGLE_NODE, start_torchrun  # noqa: E402

P = 4
EPOCHS = SETTINGS["training"]["epochs"]


@pytest.fixture(scope="module")
def fb4(fb15k237: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fb4") / "data"
    subprocess.run(
        [sys.executable, "-m", "launcher.cli", "partition", str(fb15k237 / "train.txt"), "--valid", str(fb15k237 / "valid.txt"),
         "--test", str(fb15k237 / "test.txt"), "-P", str(P), "--out", str(out), "--no-progress"],
        check=True, cwd=REPO, capture_output=True,
    )
    return out


def write_config(fb4: Path, run_dir: Path, device: str = "cpu", **changes: object) -> Path:
    """``changes``: more options by dotted key (written with '__' for '.')."""
    # affinity: the order policy of the lock server, so the single-process run has the same settings
    changes = {"device": device, "training.bucket_order": "affinity", **{k.replace("__", "."): v for k, v in changes.items()}}
    return write_settings(run_dir.parent / f"{run_dir.name}.yaml", fb4, changes, [])


def mrr_of(config_path: Path) -> float:
    return evaluate(load_config(config_path, []), split="test")["mrr"]


def assert_close_mrr(config_path: Path, single: float, what: str, tolerance: float = 0.01) -> None:
    mrr = mrr_of(config_path)
    print(f"test MRR {what}: {mrr:.4f} (single process {single:.4f})")
    assert abs(mrr - single) < tolerance


@pytest.fixture(scope="module")
def single_mrr(fb4: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    config_path = write_config(fb4, tmp_path_factory.mktemp("single") / "run")
    train(load_config(config_path, []))
    return mrr_of(config_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert rc == 0, log.read_text()[-5000:]


def audit_run(run_dir: Path) -> dict[int, object]:
    """Audit each restart attempt's logs; return the reports by attempt."""
    groups: dict[str, list[Path]] = {}
    for path in (run_dir / "logs").glob("buckets.*.jsonl"):
        groups.setdefault(path.name.rsplit(".rank", 1)[0], []).append(path)
    # names are buckets.<start time>-<id>.attempt<A>: sorted by start time, one group per attempt
    return {k: audit(sorted(groups[name]), P) for k, name in enumerate(sorted(groups))}


def check_complete(run_dir: Path, reports: dict, chunks: int = 1) -> None:
    """Every pass's buckets (an epoch has one pass per edge chunk) were done exactly once over
    the whole job, restarts included."""
    done_by_pass: dict[int, list] = {}
    for attempt in sorted(reports):
        report = reports[attempt]
        for pass_index, counts in report.done.items():
            earlier = done_by_pass.setdefault(pass_index, [])
            # what a restart resumes with must be work an earlier attempt really finished
            assert report.resumed.get(pass_index, set()) <= set(earlier), (attempt, pass_index)
            # work of an earlier attempt that the restart does not resume with was lost with the crash
            kept = [b for b in earlier if b in report.resumed.get(pass_index, set())]
            done_by_pass[pass_index] = kept + list(counts)
    assert sorted(done_by_pass) == list(range(EPOCHS * chunks))
    for pass_index, buckets in done_by_pass.items():
        assert sorted(buckets) == sorted({(p, q) for p in range(P) for q in range(P)}), pass_index
    meta = CheckpointStore(run_dir).latest().meta
    assert meta["epoch"] == EPOCHS


# The bucket order alone moves single-process runs of these settings over 0.1862-0.1942, and
# the reference (affinity, seed 0: 0.1923) is near the top. Four workers land lowest (median
# 0.1882 over nine runs), so they get 0.015 (docs/distributed.md, benchmarks/bucket_order.py).
@pytest.mark.parametrize("workers, tolerance", [(2, 0.01), (4, 0.015)])
def test_torchrun_single_node(fb4, single_mrr, tmp_path, workers, tolerance):
    """... and rank 0 alone keeps each epoch's end as a snapshot (checkpoint.snapshot_every)."""
    run_dir = tmp_path / "run"
    config = write_config(fb4, run_dir, checkpoint__snapshot_every=1)
    log = tmp_path / "torchrun.log"
    proc = start_torchrun(config, ["--nproc-per-node", str(workers), *SINGLE_NODE], log)
    finish(proc, log)
    reports = audit_run(run_dir)
    assert list(reports) == [0] and reports[0].complete
    check_complete(run_dir, reports)
    trainers = {e["worker"] for e in read_events((run_dir / "logs").glob("*.jsonl")) if e["event"] == "done"}
    assert len(trainers) > 1
    text = log.read_text()
    assert "[rank 0]" in text and "[rank 1]" in text and "edges/s over" in text
    assert_close_mrr(config, single_mrr, f"{workers} workers", tolerance)
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == [f"epoch_{k}" for k in range(1, EPOCHS + 1)]
    for k in range(1, EPOCHS + 1):
        meta = CheckpointStore(run_dir / "snapshots" / f"epoch_{k}").latest().meta
        assert meta["epoch"] == k and meta["progress"]["finished"] == []


def test_two_nodes_on_loopback(fb4, single_mrr, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(fb4, run_dir)
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        start_torchrun(config, ["--nnodes", "2", "--node-rank", str(k), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                                "--rdzv-endpoint", endpoint, "--rdzv-id", "two-node-test"], tmp_path / f"node{k}.log")
        for k in range(2)
    ]
    for k, proc in enumerate(nodes):
        finish(proc, tmp_path / f"node{k}.log")
    check_complete(run_dir, audit_run(run_dir))
    assert_close_mrr(config, single_mrr, "two nodes")


def worker_pids(log: Path, attempt: int) -> dict[int, int]:
    pids = {}
    for line in log.read_text().splitlines():
        if "worker rank" in line and f"restart {attempt}" in line:
            words = line.split("worker rank ", 1)[1].split()
            pids[int(words[0])] = int(line.split("pid ", 1)[1].split(",")[0])
    return pids


@pytest.fixture(scope="module")
def single_mrr_two_chunks(fb4: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    config_path = write_config(fb4, tmp_path_factory.mktemp("single2") / "run", training__num_edge_chunks=2)
    train(load_config(config_path, []))
    return mrr_of(config_path)


def test_sigkilled_worker_job_completes(fb4, single_mrr_two_chunks, tmp_path):
    """With two edge chunks, killed in the second epoch's second pass: the restart resumes
    that pass from the exchange (rank 0 checkpoints only at epochs' ends)."""
    run_dir = tmp_path / "run"
    config = write_config(fb4, run_dir, training__num_edge_chunks=2)
    log = tmp_path / "torchrun.log"
    proc = start_torchrun(config, ["--nproc-per-node", "2", "--max-restarts", "2", *SINGLE_NODE], log)
    # wait until rank 1 holds a bucket of pass 3 (epoch 1, chunk 1) after some of that pass is done
    deadline = time.monotonic() + 240
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
        found = list((run_dir / "logs").glob("buckets.*.attempt0.rank1.jsonl"))
        complete = found[0].read_text().rpartition("\n")[0] if found else ""
        rows = [json.loads(x) for x in complete.splitlines()]
        if rows and rows[-1]["event"] == "grant" and rows[-1]["pass"] == 3 and any(r["event"] == "done" and r["pass"] == 3 for r in rows):
            break
        time.sleep(0.02)
    os.kill(worker_pids(log, 0)[1], signal.SIGKILL)
    finish(proc, log)
    reports = audit_run(run_dir)
    assert len(reports) == 2 and not reports[0].complete and reports[1].complete  # one restart
    assert reports[1].resumed.get(3), "the restart should resume the finished buckets of the pass it was killed in"
    assert min(reports[1].done) == 3
    check_complete(run_dir, reports, chunks=2)
    assert "resuming epoch 2, edge chunk 2/2 with" in log.read_text()
    # the final checkpoint is intact: every partition loads with finite values
    version = CheckpointStore(run_dir).latest()
    for p in range(P):
        emb, ada = version.load_partition("entity", p)
        assert torch.isfinite(emb).all() and torch.isfinite(ada).all()
    assert_close_mrr(config, single_mrr_two_chunks, "after a SIGKILL and restart")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per worker: at least 2 GPUs")
def test_torchrun_nccl_one_gpu_per_worker(fb4, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(fb4, run_dir, device="cuda")
    log = tmp_path / "torchrun.log"
    finish(start_torchrun(config, ["--nproc-per-node", "2", *SINGLE_NODE], log), log)
    text = log.read_text()
    assert "nccl, world size 2, device cuda:0" in text and "device cuda:1" in text
    check_complete(run_dir, audit_run(run_dir))
