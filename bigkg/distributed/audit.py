"""Audit of the lock servers' event logs (one JSON-lines file per worker).

Every committed change of the lock state has a version number, and versions
totally order the changes of one run. Replaying all workers' events in that
order shows exactly who held which partition when, so the audit is exact, not
a guess from wall-clock timestamps written by different processes.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bigkg.errors import BigKGError

# Within one version an expiry or release precedes the grant it made possible.
_ORDER = {"start_pass": 0, "expire": 1, "release": 1, "done": 1, "grant": 2}


class AuditError(BigKGError):
    """An event log that breaks an invariant of the lock server, or is malformed."""


@dataclass
class AuditReport:
    passes: list[int]
    done: dict[int, Counter] = field(default_factory=dict)  # pass -> bucket -> times done
    resumed: dict[int, set[tuple[int, int]]] = field(default_factory=dict)  # pass -> done before a restart
    missing: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # pass -> never done (a crash)

    @property
    def complete(self) -> bool:
        """Every pass opened was finished (false for an attempt that crashed)."""
        return not any(self.missing.values())
    grants: int = 0
    expired: int = 0
    events: int = 0


def read_events(paths: Iterable[str | Path]) -> list[dict]:
    events = []
    for path in paths:
        lines = Path(path).read_text().split("\n")
        # A worker killed mid-write may leave a torn last line (no newline): it never committed.
        for number, line in enumerate(lines[:-1], 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                event["bucket"] = tuple(event["bucket"]) if event["bucket"] is not None else None
                event["_where"] = f"{path}:{number}"
                _ORDER[event["event"]], event["version"], event["worker"]
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(f"{path}:{number}: not an event record ({exc!r})") from exc
            events.append(event)
    return sorted(events, key=lambda e: (e["version"], _ORDER[e["event"]]))


def audit(paths: Iterable[str | Path], num_partitions: int) -> AuditReport:
    """Replay the events; raise ``AuditError`` on the first broken invariant.

    Checks: no partition is leased to two workers at once; releases and
    expiries match a live lease; no bucket is done twice in a pass, nor
    trained again after a restart resumed it as finished (the worker that
    opened the pass logs those). Buckets never done (an attempt that
    crashed) are listed in ``missing``; callers check ``complete``.
    """
    events = read_events(paths)
    holder_of: dict[int, str] = {}  # partition -> worker
    lease_of: dict[str, tuple[int, int]] = {}  # worker -> bucket
    report = AuditReport(passes=[], events=len(events))
    for e in events:
        kind, worker, bucket, where = e["event"], e["worker"], e["bucket"], e["_where"]
        if kind == "start_pass":
            report.passes.append(e["pass"])
            report.done[e["pass"]] = Counter()
            report.resumed[e["pass"]] = {tuple(b) for b in e.get("finished", [])}
        elif kind == "grant":
            report.grants += 1
            if worker in lease_of:
                raise AuditError(f"{where}: {worker} granted {bucket} while holding {lease_of[worker]}")
            for p in set(bucket):
                if p in holder_of:
                    raise AuditError(f"{where}: partition {p} granted to {worker} while {holder_of[p]} holds it")
                holder_of[p] = worker
            lease_of[worker] = bucket
        else:
            owner = e["holder"] if kind == "expire" else worker
            if lease_of.get(owner) != bucket:
                raise AuditError(f"{where}: {kind} of {bucket} by {owner}, who holds {lease_of.get(owner)}")
            del lease_of[owner]
            for p in set(bucket):
                del holder_of[p]
            if kind == "expire":
                report.expired += 1
            elif kind == "done":
                report.done.setdefault(e["pass"], Counter())[bucket] += 1
    every = {(p, q) for p in range(num_partitions) for q in range(num_partitions)}
    for pass_index, counts in report.done.items():
        twice = sorted(b for b, n in counts.items() if n > 1)
        if twice:
            raise AuditError(f"pass {pass_index}: buckets done more than once: {twice}")
        before = report.resumed.get(pass_index, set())
        again = sorted(set(counts) & before)
        if again:
            raise AuditError(f"pass {pass_index}: buckets finished before the restart were trained again: {again}")
        report.missing[pass_index] = sorted(every - set(counts) - before)
    return report
