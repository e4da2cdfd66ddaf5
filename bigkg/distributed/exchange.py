"""Partition exchange between workers through the run's storage on a shared filesystem.

Layout under ``run_dir/exchange``::

    parts/<type>/part_<i>/p<pass>-<id>.pt   one file per partition version, never rewritten
    shared/<id>.pt                          versions of the shared parameters (see shared_params)
    progress/p<pass>-n<done>.json           durable snapshots of the lock state

A worker that finishes a bucket writes the bucket's partitions as NEW version
files (temporary name, fsync, rename: a reader never sees half a file), then
marks the bucket done in the lock server, naming those files in the same
atomic compare-and-set. So the lock state always names, for every partition,
the version that includes every finished bucket, and files of a worker that
died (or lost its lease) before that step are simply never named.

After its commit the worker writes the new lock state as a progress snapshot.
Snapshots are keyed by (pass, number of done buckets), which grows with
every commit (a pass trains every bucket once; see ``bigkg.schedule``), so the largest durable key is the latest state that was
persisted; losing the very last snapshot to a crash only loses its bucket,
which is then trained again from the previous versions (still on disk).

At an epoch's end rank 0 commits a regular checkpoint version whose partition
files are hard links to the current exchange versions (``ExchangeView`` serves
as its base), then removes the versions and snapshots nobody can need.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from torch import Tensor

from bigkg.atomic import atomic_file, write_text_atomic
from bigkg.checkpoint import (
    CheckpointError,
    CheckpointVersion,
    PartitionKey,
    PartitionState,
    read_partition_file,
    write_partition_file,
)
from bigkg.schedule import Bucket

_SNAPSHOT_RE = re.compile(r"^p(\d{6})-n(\d{6})\.json$")


def partition_name(key: PartitionKey) -> str:
    """The lock server's name of a partition (its payload key)."""
    return f"{key[0]}/{key[1]}"


class ExchangeView:
    """Partitions as named by a lock-state payload; reads like a checkpoint version."""

    def __init__(self, exchange: "PartitionExchange", payload: dict[str, str]):
        self.exchange = exchange
        self.payload = payload

    def version_of(self, key: PartitionKey) -> str:
        try:
            return self.payload[partition_name(key)]
        except KeyError:
            raise CheckpointError(f"the lock state names no version of partition {key}") from None

    def partition_path(self, entity_type: str, part: int) -> Path:
        return self.exchange.root / self.version_of((entity_type, part))

    def load_partition(self, entity_type: str, part: int, mmap: bool = False) -> tuple[Tensor, Tensor]:
        return read_partition_file(self.partition_path(entity_type, part), mmap)


@dataclass(frozen=True)
class RecordedProgress:
    """A snapshot of the lock state: the pass, the edge chunks of its epoch, the pass's finished
    buckets, the partition versions after them and the shared parameters' version."""

    pass_index: int
    edge_chunks: int
    finished: list[Bucket]
    payload: dict[str, str]
    shared: str


class PartitionExchange:
    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir) / "exchange"
        self.progress_dir = self.root / "progress"

    def view(self, payload: dict[str, str]) -> ExchangeView:
        return ExchangeView(self, payload)

    def write(self, key: PartitionKey, state: PartitionState, pass_index: int) -> str:
        """Write a new version of ``key`` trained in pass ``pass_index``; returns its name (relative to the exchange root)."""
        name = f"parts/{key[0]}/part_{key[1]}/p{pass_index:06d}-{uuid.uuid4().hex}.pt"
        with atomic_file(self.root / name) as tmp:
            write_partition_file(tmp, state)
        return name

    def seed(self, version: CheckpointVersion, keys: Iterable[PartitionKey]) -> dict[str, str]:
        """Versions for every partition, hard-linked from a complete checkpoint version."""
        payload = {}
        for key in keys:
            name = f"parts/{key[0]}/part_{key[1]}/{version.name}.pt"
            target = self.root / name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                link_tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
                link_tmp.hardlink_to(version.partition_path(*key))
                link_tmp.replace(target)
            payload[partition_name(key)] = name
        return payload

    def record(self, state: dict[str, Any], shared: str, edge_chunks: int) -> None:
        """Persist a lock state just committed (after each finished bucket), with the shared
        parameters' version and the number of edge chunks of the epoch in progress."""
        done = state["done"].count("1")
        snapshot = {"pass_index": state["pass_index"], "done": state["done"], "num_partitions": state["num_partitions"],
                    "payload": state["payload"], "version": state["version"], "shared": shared,
                    "edge_chunks": edge_chunks}
        write_text_atomic(self.progress_dir / f"p{state['pass_index']:06d}-n{done:06d}.json", json.dumps(snapshot))

    def latest_progress(self, since: int) -> RecordedProgress | None:
        """The latest state recorded in pass ``since`` or later; None if none."""
        if not self.progress_dir.is_dir():
            return None
        keys = [(int(m.group(1)), int(m.group(2)), path) for path in self.progress_dir.iterdir()
                if (m := _SNAPSHOT_RE.match(path.name)) and int(m.group(1)) >= since]
        if not keys:
            return None
        snapshot = json.loads(max(keys)[2].read_text())
        p = snapshot["num_partitions"]
        finished = [Bucket(k // p, k % p) for k, flag in enumerate(snapshot["done"]) if flag == "1"]
        return RecordedProgress(snapshot["pass_index"], snapshot["edge_chunks"], finished, snapshot["payload"],
                                snapshot["shared"])

    def collect(self, keep: dict[str, str], before: int) -> None:
        """Remove versions not named in ``keep`` and snapshots of passes before ``before``.

        Only call while no worker trains (between epochs): an unnamed file may
        otherwise be a version about to be committed.
        """
        named = {self.root / name for name in keep.values()}
        parts = self.root / "parts"
        if parts.is_dir():
            for path in parts.glob("*/*/*"):
                if path not in named:
                    path.unlink(missing_ok=True)
        if self.progress_dir.is_dir():
            for path in self.progress_dir.iterdir():
                match = _SNAPSHOT_RE.match(path.name)
                if match and int(match.group(1)) < before:
                    path.unlink(missing_ok=True)
