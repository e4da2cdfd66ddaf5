"""The bucket lock server, kept in the c10d Store that torchrun's rendezvous provides.

There is no server process and no socket of our own: the lock server is one
small JSON document under one key of the Store (a TCPStore, or a PrefixStore
over it), and every worker updates it with ``compare_set`` (optimistic
concurrency). An update reads the document, computes the next one and swaps
it in only if nobody changed it meanwhile; otherwise it retries on the value
the failed swap returned. No mutex is ever held, so a worker killed at any
instant leaves a consistent document behind: either its swap happened or it
did not.

The document holds, for the current pass: which buckets are done, which
partitions were trained (PBG's first-epoch rule), the leases (worker -> bucket,
grant token) and a per-partition payload committed together with a finished
bucket (the partition exchange stores the partitions' file versions there, so
"bucket done" and "new partition versions visible" are one atomic step).

Leases: each worker bumps its heartbeat counter (``add``) from a background
thread. A worker that sees another's counter unchanged for ``lease_seconds``
of its own monotonic clock expires that lease; no clocks are compared across
machines. Every grant carries a fresh token, and a release swaps only if the
token is still the holder's, so a worker whose lease was expired cannot mark
its (re-handed) bucket done: its work is discarded, never counted twice.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from torch.distributed import Store

from bigkg.errors import BigKGError
from bigkg.schedule import Bucket, affinity_choice, is_eligible


class LockServerError(BigKGError):
    """The lock server's state disagrees with a worker's request."""


class LeaseLostError(LockServerError):
    """A worker's lease was expired (it was presumed dead) before it released its bucket."""


class PassOver(Exception):
    """Every bucket of the pass is done (or a later pass began)."""


class PassBusy(Exception):
    """The previous pass still has buckets to train; opening the next must wait."""


STATE_KEY = "lock/state"
HEARTBEAT_KEY = "lock/heartbeat/"


@dataclass(frozen=True)
class Grant:
    """A bucket handed to a worker; ``version`` is the state version of the grant."""

    bucket: Bucket
    pass_index: int
    token: str
    version: int


@dataclass(frozen=True)
class Event:
    """One committed change of the lock state, for logs and audits."""

    kind: str  # "start_pass", "grant", "release", "done", "expire"
    worker: str
    pass_index: int
    version: int
    bucket: Bucket | None = None
    holder: str | None = None  # for "expire": whose lease was expired
    finished: tuple[Bucket, ...] = ()  # for "start_pass": buckets already done before a restart


@dataclass
class _State:
    version: int
    pass_index: int
    num_partitions: int
    first_pass: bool
    done: str  # one '0'/'1' per bucket, row-major (lhs * P + rhs)
    trained: list[int]
    leases: dict[str, dict[str, Any]]  # worker -> {"bucket": [lhs, rhs], "token": str}
    payload: dict[str, Any] = field(default_factory=dict)  # partition name -> committed value
    by: str = ""

    @classmethod
    def decode(cls, raw: bytes) -> "_State":
        data = json.loads(raw)
        return cls(**data)

    def encode(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))

    def is_done(self, b: Bucket) -> bool:
        return self.done[b.lhs * self.num_partitions + b.rhs] == "1"

    def mark_done(self, b: Bucket) -> None:
        k = b.lhs * self.num_partitions + b.rhs
        self.done = self.done[:k] + "1" + self.done[k + 1 :]

    def all_done(self) -> bool:
        return "0" not in self.done

    def held_partitions(self) -> set[int]:
        return {p for lease in self.leases.values() for p in lease["bucket"]}


def _empty_state(num_partitions: int) -> _State:
    # pass -1: no pass started yet; everything "done" so that pass 0 may begin.
    return _State(0, -1, num_partitions, False, "1" * num_partitions**2, [], {}, {})


class LockServer:
    """One worker's handle on the shared bucket lock state in ``store``.

    ``store`` should be a PrefixStore naming this run (and, under torchrun,
    this restart attempt); ``worker`` a name unique among live workers.
    """

    def __init__(
        self,
        store: Store,
        worker: str,
        num_partitions: int,
        *,
        lease_seconds: float = 60.0,
        seed: int = 0,
        on_event: Callable[[Event], None] | None = None,
    ):
        if num_partitions < 1:
            raise LockServerError(f"num_partitions must be at least 1, got {num_partitions}")
        self.store = store
        self.worker = worker
        self.num_partitions = num_partitions
        self.lease_seconds = lease_seconds
        self._rng = random.Random(f"{seed}/{worker}")
        self._on_event = on_event or (lambda event: None)
        # worker -> (heartbeat value, local monotonic time it was first seen)
        self._seen_beats: dict[str, tuple[int, float]] = {}
        self._empty = _empty_state(num_partitions).encode()

    # -- the optimistic update loop ------------------------------------------------
    def _read(self) -> tuple[bytes, _State]:
        # compare_set with expected "" creates a missing key and returns the current value.
        raw = self.store.compare_set(STATE_KEY, "", self._empty)
        state = _State.decode(raw)
        if state.num_partitions != self.num_partitions:
            raise LockServerError(
                f"lock state has {state.num_partitions} partitions but this worker has {self.num_partitions}"
            )
        return raw, state

    def _update(self, change: Callable[[_State], Any]) -> tuple[_State, Any]:
        """Apply ``change`` (which edits the state in place, returning a result) atomically.

        ``change`` returns ``(result, changed)``; an unchanged state is not written.
        """
        raw, state = self._read()
        while True:
            result, changed = change(state)
            if not changed:
                return state, result
            state.version += 1
            state.by = self.worker
            new_raw = state.encode()
            current = self.store.compare_set(STATE_KEY, raw, new_raw)
            if current == new_raw.encode():
                return state, result
            raw, state = current, _State.decode(current)

    # -- heartbeats and leases -----------------------------------------------------
    def heartbeat(self) -> None:
        """Renew this worker's leases (called periodically from a background thread)."""
        self.store.add(HEARTBEAT_KEY + self.worker, 1)

    def _expired_holders(self, state: _State) -> set[str]:
        now = time.monotonic()
        expired = set()
        for holder in state.leases:
            if holder == self.worker:
                continue
            beat = self.store.add(HEARTBEAT_KEY + holder, 0)  # reads without blocking
            seen = self._seen_beats.get(holder)
            if seen is None or seen[0] != beat:
                self._seen_beats[holder] = (beat, now)
            elif now - seen[1] > self.lease_seconds:
                expired.add(holder)
        return expired

    # -- passes ---------------------------------------------------------------------
    def start_pass(self, pass_index: int, finished: set[Bucket] | frozenset[Bucket] = frozenset(), *, first_pass: bool) -> bool:
        """Open pass ``pass_index`` unless a peer already did; True when this call opened it.

        A pass opens only once the previous one is complete; ``finished`` are
        buckets of the pass already trained before a restart.
        """

        def change(state: _State) -> tuple[str, bool]:
            if state.pass_index >= pass_index:
                return "joined", False
            if not state.all_done() or state.leases:
                return "wait", False
            state.pass_index = pass_index
            state.first_pass = first_pass
            state.done = "0" * self.num_partitions**2
            for b in finished:
                state.mark_done(Bucket(*b))
            state.trained = sorted({p for b in finished for p in b})
            return "opened", True

        state, outcome = self._update(change)
        if outcome == "wait":
            raise PassBusy(f"pass {state.pass_index} is not finished")
        if outcome == "opened":
            self._on_event(Event("start_pass", self.worker, pass_index, state.version, finished=tuple(sorted(finished))))
        return outcome == "opened"

    # -- buckets --------------------------------------------------------------------
    def try_acquire(self, pass_index: int, held: set[int]) -> Grant | None:
        """A free eligible bucket of pass ``pass_index`` for this worker, or None if none is free now.

        Raises ``PassOver`` when every bucket of the pass is done (or a later
        pass began). Expires the leases of workers whose heartbeats stopped.
        """
        raw, state = self._read()
        expired = self._expired_holders(state) if state.leases else set()
        expired_leases: dict[str, dict[str, Any]] = {}
        token = uuid.uuid4().hex

        def change(state: _State) -> tuple[Bucket | str | None, bool]:
            if state.pass_index != pass_index:
                if state.pass_index > pass_index:
                    return "over", False
                raise LockServerError(f"pass {pass_index} was not started (lock state is at pass {state.pass_index})")
            changed = False
            expired_leases.clear()
            for holder in expired:
                lease = state.leases.get(holder)
                if lease is not None:
                    expired_leases[holder] = state.leases.pop(holder)
                    changed = True
            if state.all_done():
                return "over", changed
            if self.worker in state.leases:
                raise LockServerError(f"worker {self.worker} already holds bucket {state.leases[self.worker]['bucket']}")
            busy = state.held_partitions()
            trained = set(state.trained)
            candidates = [
                b
                for p in range(self.num_partitions)
                for q in range(self.num_partitions)
                if not state.is_done(b := Bucket(p, q))
                and not (b.partitions() & busy)
                and is_eligible(b, trained, state.first_pass)
                # first pass: while the very first bucket trains, nothing else is anchored yet
                and not (state.first_pass and not trained and busy)
            ]
            if not candidates:
                return None, changed
            chosen = affinity_choice(candidates, held, self._rng)
            state.leases[self.worker] = {"bucket": list(chosen), "token": token}
            return chosen, True

        state, result = self._update(change)
        for holder, lease in expired_leases.items():
            self._seen_beats.pop(holder, None)
            self._on_event(Event("expire", self.worker, pass_index, state.version, Bucket(*lease["bucket"]), holder))
        if result == "over":
            raise PassOver(pass_index)
        if result is None:
            return None
        grant = Grant(result, pass_index, token, state.version)
        self._on_event(Event("grant", self.worker, pass_index, state.version, result))
        return grant

    def release(self, grant: Grant, *, done: bool, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Give ``grant`` back; ``done`` marks its bucket trained and commits ``payload``.

        ``payload`` maps names of the bucket's partitions to values stored in
        the state in the same atomic step (see ``payload``). Returns the new state.
        Raises ``LeaseLostError`` if the lease was expired meanwhile.
        """
        def change(state: _State) -> tuple[None, bool]:
            lease = state.leases.get(self.worker)
            if state.pass_index != grant.pass_index or lease is None or lease["token"] != grant.token:
                raise LeaseLostError(
                    f"worker {self.worker} lost its lease on bucket {tuple(grant.bucket)} of pass {grant.pass_index}"
                )
            del state.leases[self.worker]
            if done:
                state.mark_done(grant.bucket)
                state.trained = sorted(set(state.trained) | grant.bucket.partitions())
                for part, value in (payload or {}).items():
                    state.payload[part] = value
            return None, True

        state, _ = self._update(change)
        self._on_event(Event("done" if done else "release", self.worker, grant.pass_index, state.version, grant.bucket))
        return json.loads(state.encode())

    def payload(self) -> dict[str, Any]:
        """The committed per-partition values (kept across passes)."""
        return dict(self._read()[1].payload)

    def set_payload(self, payload: dict[str, Any]) -> None:
        """Seed the per-partition values (e.g. from a checkpoint) while no lease is held."""

        def change(state: _State) -> tuple[None, bool]:
            if state.leases:
                raise LockServerError("the partition payload can only be seeded while no bucket is leased")
            if all(state.payload.get(k) == v for k, v in payload.items()):
                return None, False
            state.payload.update(payload)
            return None, True

        self._update(change)

    def snapshot(self) -> dict[str, Any]:
        """The current state as a plain dict (for logs and tests)."""
        return json.loads(self._read()[1].encode())
