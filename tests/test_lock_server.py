"""The bucket lock server on a real TCPStore: rules in one process, then real worker processes."""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from bigkg.distributed.audit import AuditError, audit, read_events
from bigkg.distributed.lock_server import PassBusy, PassOver, LeaseLostError, LockServer, LockServerError
from bigkg.distributed.scheduler import DistributedScheduler, SchedulerTimeout
from bigkg.schedule import Bucket


def client(port: int, prefix: str = "run") -> dist.Store:
    tcp = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=30))
    return dist.PrefixStore(prefix, tcp)


# -- rules, one process, several handles --------------------------------------------------
def test_first_pass_rule_and_affinity(store):
    a = LockServer(client(store.port), "a", 3)
    b = LockServer(client(store.port), "b", 3)
    assert a.start_pass(0, first_pass=True) is True
    assert b.start_pass(0, first_pass=True) is False  # already open: b joins
    first = a.try_acquire(0, set())
    # nothing is trained yet and a bucket is in flight: no other bucket is anchored
    assert b.try_acquire(0, set()) is None
    a.release(first, done=True)
    second = b.try_acquire(0, set())
    assert second.bucket.partitions() & first.bucket.partitions()
    b.release(second, done=True)
    # affinity: a worker holding partition p gets a bucket with p when one is free and eligible
    held = {second.bucket.lhs}
    third = b.try_acquire(0, held)
    assert third.bucket.partitions() & held
    b.release(third, done=False)  # not done: back to the pool
    assert third.bucket not in {first.bucket, second.bucket}
    assert sum(c == "1" for c in a.snapshot()["done"]) == len({first.bucket, second.bucket})


def test_pass_lifecycle_and_no_double_grant(store):
    workers = [LockServer(client(store.port), w, 2) for w in "ab"]
    workers[0].start_pass(0, first_pass=False)
    seen = []
    while True:
        try:
            grant = workers[len(seen) % 2].try_acquire(0, set())
        except PassOver:
            break
        assert grant is not None
        workers[len(seen) % 2].release(grant, done=True)
        seen.append(grant.bucket)
    assert sorted(seen) == sorted(Bucket(p, q) for p in range(2) for q in range(2))
    with pytest.raises(PassOver):
        workers[1].try_acquire(0, set())
    # pass 1 opens only after pass 0 is complete; resumed buckets are not handed again
    workers[1].start_pass(1, {Bucket(0, 0), Bucket(1, 1)}, first_pass=False)
    got = {workers[0].try_acquire(1, set()).bucket}
    with pytest.raises(PassBusy):
        workers[1].start_pass(2, first_pass=False)
    assert got <= {Bucket(0, 1), Bucket(1, 0)}


def test_expired_lease_is_fenced(store):
    a = LockServer(client(store.port), "a", 2, lease_seconds=0.2)
    b = LockServer(client(store.port), "b", 2, lease_seconds=0.2)
    a.start_pass(0, first_pass=False)
    a.heartbeat()
    grant = a.try_acquire(0, set())
    others = [Bucket(p, q) for p in range(2) for q in range(2) if not Bucket(p, q).partitions() & grant.bucket.partitions()]
    # a stops beating; b first records a's counter, then sees it unchanged past the lease
    b_first = b.try_acquire(0, set())
    assert b_first is None or b_first.bucket in others
    if b_first is not None:
        b.release(b_first, done=True)
    time.sleep(0.3)
    taken = b.try_acquire(0, set())
    while taken is None or taken.bucket != grant.bucket:
        if taken is not None:
            b.release(taken, done=True)
        time.sleep(0.3)
        taken = b.try_acquire(0, set())
    with pytest.raises(LeaseLostError):
        a.release(grant, done=True)  # too late: its result must not count
    b.release(taken, done=True)
    assert a.snapshot()["leases"] == {}


# -- real worker processes -------------------------------------------------------------
def _worker(port: int, name: str, partitions: int, passes: int, out: str, hang_pass: int, workers: int,
            gate_pass: int) -> None:
    """Train fake buckets: a read-modify-write of each held partition's counter file.

    The files are written in place, so any overlap of two holders (a lock bug,
    or a live worker's lease expired by a peer) shows up as a lost increment;
    the lease is long enough that a loaded machine does not starve a heartbeat.
    """
    sched = DistributedScheduler(
        client(port), name, partitions, lease_seconds=3.0, heartbeat_seconds=0.2, timeout=60, event_log=f"{out}/{name}.jsonl"
    )
    rng = random.Random(name)
    # Start together: a worker slow to spawn must not find every pass already done.
    barrier = client(port)
    barrier.add("test/ready", 1)
    while barrier.add("test/ready", 0) < workers:
        time.sleep(0.01)
    for pass_index in range(passes):
        sched.start_pass(pass_index)
        if pass_index == gate_pass and hang_pass < 0:
            # Leave the worker that hangs a bucket first: otherwise its peers, quicker on a busy
            # machine, may take every bucket of every pass before it asks, and it never hangs.
            while not any(Path(out).glob("*.holding")):
                time.sleep(0.01)
        while (bucket := sched.acquire()) is not None:
            if 0 <= hang_pass <= pass_index:
                Path(out, f"{name}.holding").write_text(json.dumps([pass_index, *bucket]))
                time.sleep(600)  # the test SIGKILLs us here
            values = {p: int(Path(out, f"part_{p}").read_text()) for p in bucket.partitions()}
            time.sleep(rng.uniform(0.0, 0.02))  # widen the race window a lock bug would open
            for p, v in values.items():
                Path(out, f"part_{p}").write_text(str(v + 1))
            sched.release(bucket, done=True)
    sched.close()


def _run_workers(tmp_path: Path, port: int, partitions: int, passes: int, n: int, hang: dict[str, int]):
    for p in range(partitions):
        (tmp_path / f"part_{p}").write_text("0")
    ctx = multiprocessing.get_context("spawn")
    gate = min(hang.values(), default=-1)
    procs = {
        f"w{k}": ctx.Process(target=_worker, args=(port, f"w{k}", partitions, passes, str(tmp_path), hang.get(f"w{k}", -1), n,
                                                    gate))
        for k in range(n)
    }
    for p in procs.values():
        p.start()
    return procs


def _check_counters(tmp_path: Path, partitions: int, passes: int) -> None:
    # each bucket (p, q) increments p and q once (a diagonal bucket once): 2P - 1 per pass
    for p in range(partitions):
        assert int((tmp_path / f"part_{p}").read_text()) == passes * (2 * partitions - 1), f"lost update on partition {p}"


def test_four_workers_exclusive_and_exactly_once(store, tmp_path):
    P, E = 4, 3
    procs = _run_workers(tmp_path, store.port, P, E, 4, {})
    for p in procs.values():
        p.join(300)  # generous: four spawned interpreters import torch on a possibly busy machine
        assert p.exitcode == 0
    report = audit(sorted(tmp_path.glob("w*.jsonl")), P)
    assert report.complete
    assert report.passes == list(range(E))
    assert all(sum(c.values()) == P * P for c in report.done.values())
    trainers = {e["worker"] for e in read_events(tmp_path.glob("w*.jsonl")) if e["event"] == "done"}
    assert len(trainers) > 1  # the work was really shared
    _check_counters(tmp_path, P, E)


def test_sigkilled_worker_bucket_is_reassigned(store, tmp_path):
    P, E = 4, 3
    procs = _run_workers(tmp_path, store.port, P, E, 3, {"w0": 1})
    holding = tmp_path / "w0.holding"
    deadline = time.monotonic() + 300  # as generous as the joins below: spawning waits for torch imports
    while not holding.exists():
        assert procs["w0"].exitcode is None, f"worker w0 exited ({procs['w0'].exitcode}) before holding a bucket"
        assert time.monotonic() < deadline, "worker w0 never reached pass 1"
        time.sleep(0.05)
    os.kill(procs["w0"].pid, signal.SIGKILL)
    for name, p in procs.items():
        p.join(300)  # generous: four spawned interpreters import torch on a possibly busy machine
        assert p.exitcode == (-signal.SIGKILL if name == "w0" else 0)
    report = audit(sorted(tmp_path.glob("w*.jsonl")), P)
    assert report.complete
    assert report.expired == 1
    pass_index, *held = json.loads(holding.read_text())
    assert report.done[pass_index][tuple(held)] == 1  # the dead worker's bucket was finished by another
    assert all(sum(c.values()) == P * P for c in report.done.values())
    _check_counters(tmp_path, P, E)


def test_audit_catches_overlap_and_double_done(tmp_path):
    log = tmp_path / "bad.jsonl"
    rows = [
        {"event": "start_pass", "worker": "a", "pass": 0, "version": 1, "bucket": None, "holder": None},
        {"event": "grant", "worker": "a", "pass": 0, "version": 2, "bucket": [0, 1], "holder": None},
        {"event": "grant", "worker": "b", "pass": 0, "version": 3, "bucket": [1, 1], "holder": None},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AuditError, match="partition 1 granted to b while a holds it"):
        audit([log], 2)
    rows[2:] = [
        {"event": "done", "worker": "a", "pass": 0, "version": 3, "bucket": [0, 1], "holder": None},
        {"event": "grant", "worker": "b", "pass": 0, "version": 4, "bucket": [0, 1], "holder": None},
        {"event": "done", "worker": "b", "pass": 0, "version": 5, "bucket": [0, 1], "holder": None},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AuditError, match=r"done more than once: \[\(0, 1\)\]"):
        audit([log], 2)


def test_waiting_is_bounded_by_the_timeout(store):
    holder = LockServer(client(store.port), "a", 1, lease_seconds=60)
    holder.start_pass(0, first_pass=False)
    holder.heartbeat()
    holder.try_acquire(0, set())  # the only bucket; its holder keeps beating
    with DistributedScheduler(client(store.port), "b", 1, lease_seconds=60, heartbeat_seconds=1, timeout=0.5) as sched:
        sched.start_pass(0)
        with pytest.raises(SchedulerTimeout, match="distributed.timeout"):
            sched.acquire()


def test_heartbeat_must_be_shorter_than_the_lease(store):
    with pytest.raises(LockServerError, match="heartbeat_seconds"):
        DistributedScheduler(client(store.port), "a", 2, lease_seconds=5, heartbeat_seconds=5)
