"""``DistributedScheduler``: the ``BucketScheduler`` of a worker in a multi-worker run.

It asks the shared ``LockServer`` for buckets, polling with exponential backoff
while every free bucket is blocked by other workers, renews its leases from a
background heartbeat thread (over its own Store connection), and writes every
lock event it commits to an optional JSON-lines log, from which audits (and the
tests) check that no partition was held twice at once and every bucket was
done exactly once per pass.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from torch.distributed import Store

from bigkg.distributed.lock_server import (
    PassBusy,
    PassOver,
    Event,
    Grant,
    LeaseLostError,
    LockServer,
    LockServerError,
)
from bigkg.schedule import Bucket

log = logging.getLogger(__name__)


class SchedulerTimeout(LockServerError):
    """Waited longer than the configured timeout for a bucket or a pass."""


class DistributedScheduler:
    """Hands out buckets through the lock server in ``store``; see the module doc.

    ``on_commit`` receives the lock state right after each bucket is marked
    done (the partition exchange persists it as durable progress).
    """

    def __init__(
        self,
        store: Store,
        worker: str,
        num_partitions: int,
        *,
        lease_seconds: float = 60.0,
        heartbeat_seconds: float = 10.0,
        timeout: float = 600.0,
        seed: int = 0,
        event_log: str | Path | None = None,
        on_commit: Callable[[dict[str, Any]], None] | None = None,
        poll_min: float = 0.005,
        poll_max: float = 0.5,
    ):
        if heartbeat_seconds <= 0 or heartbeat_seconds >= lease_seconds:
            raise LockServerError(
                f"distributed.heartbeat_seconds ({heartbeat_seconds}) must be positive and below "
                f"distributed.lease_seconds ({lease_seconds})"
            )
        self.worker = worker
        self.timeout = timeout
        self.poll_min, self.poll_max = poll_min, poll_max
        self._event_log = open(event_log, "a", buffering=1) if event_log is not None else None
        self.lock = LockServer(store, worker, num_partitions, lease_seconds=lease_seconds, seed=seed, on_event=self._record)
        self.on_commit = on_commit
        self.pass_index = -1
        self.lost_buckets = 0  # buckets whose lease expired before release (work discarded)
        self._grant: Grant | None = None
        self._held: set[int] = set()
        self._payload: dict[str, Any] = {}
        self._rng = random.Random(f"backoff/{worker}")
        # The heartbeat thread gets its own connection: a Store client is not shared across threads.
        self._beat_store = store.clone()
        self._beat_lock = LockServer(self._beat_store, worker, num_partitions, lease_seconds=lease_seconds)
        self._stop = threading.Event()
        self._beat_lock.heartbeat()
        self._beats = threading.Thread(target=self._beat, args=(heartbeat_seconds,), name=f"heartbeat-{worker}", daemon=True)
        self._beats.start()

    # -- BucketScheduler ------------------------------------------------------------
    def start_pass(self, pass_index: int, finished: Iterable[Bucket] = ()) -> None:
        finished = frozenset(Bucket(*b) for b in finished)
        self._wait(lambda: self.lock.start_pass(pass_index, finished, first_pass=pass_index == 0),
                   f"the start of pass {pass_index}")
        self.pass_index = pass_index

    def acquire(self) -> Bucket | None:
        if self._grant is not None:
            raise LockServerError(f"worker {self.worker} acquires before releasing {tuple(self._grant.bucket)}")
        grant = self._wait(lambda: self.lock.try_acquire(self.pass_index, self._held), f"a free bucket in pass {self.pass_index}")
        if grant is None:
            return None
        self._grant = grant
        self._held = grant.bucket.partitions()
        return grant.bucket

    def release(self, bucket: Bucket, *, done: bool) -> None:
        grant = self._grant
        if grant is None or grant.bucket != bucket:
            raise LockServerError(f"worker {self.worker} releases {tuple(bucket)} which it does not hold")
        self._grant = None
        payload, self._payload = self._payload, {}
        try:
            state = self.lock.release(grant, done=done, payload=payload if done else None)
        except LeaseLostError as exc:
            # Presumed dead by a peer, the bucket was handed again: discard this copy's work.
            self.lost_buckets += 1
            self._held = set()
            log.warning("%s; its result is discarded and the bucket is trained by another worker", exc)
            return
        if done and self.on_commit is not None:
            self.on_commit(state)

    # -- extras ---------------------------------------------------------------------
    @property
    def grant(self) -> Grant | None:
        """The lease currently held, if any."""
        return self._grant

    def commit_with_release(self, payload: dict[str, Any]) -> None:
        """Values committed with the held bucket's ``release(done=True)`` (partition versions)."""
        if self._grant is None:
            raise LockServerError("no bucket is held; nothing to commit with")
        self._payload.update(payload)

    def close(self) -> None:
        self._stop.set()
        self._beats.join()
        if self._event_log is not None:
            self._event_log.close()
            self._event_log = None

    def __enter__(self) -> "DistributedScheduler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------
    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._beat_lock.heartbeat()
            except Exception as exc:  # the store went away: the job is ending or broken
                log.warning("heartbeat of %s failed: %s", self.worker, exc)
                return

    def _wait(self, attempt: Any, what: str) -> Any:
        """Retry ``attempt`` with jittered exponential backoff until it yields a value or the pass ends."""
        deadline = time.monotonic() + self.timeout
        delay = self.poll_min
        while True:
            try:
                result = attempt()
            except PassOver:
                return None
            except PassBusy:
                result = None
            else:
                if result is not None:
                    return result
            if time.monotonic() > deadline:
                raise SchedulerTimeout(f"worker {self.worker} waited over {self.timeout:.0f}s for {what} (distributed.timeout)")
            time.sleep(delay * (0.5 + self._rng.random()))
            delay = min(delay * 2, self.poll_max)

    def _record(self, event: Event) -> None:
        log.debug("%s %s pass %d bucket %s (v%d)", event.worker, event.kind, event.pass_index, event.bucket, event.version)
        if self._event_log is not None:
            record = {
                "t": time.time(),
                "event": event.kind,
                "worker": event.worker,
                "pass": event.pass_index,
                "version": event.version,
                "bucket": list(event.bucket) if event.bucket is not None else None,
                "holder": event.holder,
                "finished": [list(b) for b in event.finished],
            }
            self._event_log.write(json.dumps(record) + "\n")
