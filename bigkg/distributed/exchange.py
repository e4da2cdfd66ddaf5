"""Partition exchange between workers through the run's storage on a shared filesystem.

Layout under ``run_dir/exchange``::

    parts/<type>/part_<i>/<epoch>-<id>.pt   one file per partition version, never rewritten
    shared/<id>.pt                          versions of the shared parameters (see shared_params)
    progress/e<epoch>-n<done>.json          durable snapshots of the lock state

A worker that finishes a bucket writes the bucket's partitions as NEW version
files (temporary name, fsync, rename: a reader never sees half a file), then
marks the bucket done in the lock server, naming those files in the same
atomic compare-and-set. So the lock state always names, for every partition,
the version that includes every finished bucket, and files of a worker that
died (or lost its lease) before that step are simply never named.

After its commit the worker writes the new lock state as a progress snapshot.
Snapshots are keyed by (epoch, number of done buckets), which grows by one
with every commit, so the largest durable key is the latest state that was
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

_SNAPSHOT_RE = re.compile(r"^e(\d{6})-n(\d{6})\.json$")


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


class PartitionExchange:
    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir) / "exchange"
        self.progress_dir = self.root / "progress"

    def view(self, payload: dict[str, str]) -> ExchangeView:
        return ExchangeView(self, payload)

    def write(self, key: PartitionKey, state: PartitionState, epoch: int) -> str:
        """Write a new version of ``key``; returns its name (relative to the exchange root)."""
        name = f"parts/{key[0]}/part_{key[1]}/e{epoch:06d}-{uuid.uuid4().hex}.pt"
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

    def record(self, state: dict[str, Any], shared: str) -> None:
        """Persist a lock state just committed (after each finished bucket), with the shared parameters' version."""
        done = state["done"].count("1")
        snapshot = {"epoch": state["epoch"], "done": state["done"], "num_partitions": state["num_partitions"],
                    "payload": state["payload"], "version": state["version"], "shared": shared}
        write_text_atomic(self.progress_dir / f"e{state['epoch']:06d}-n{done:06d}.json", json.dumps(snapshot))

    def latest_progress(self, epoch: int) -> tuple[list[Bucket], dict[str, str], str] | None:
        """The finished buckets of ``epoch``, the partition versions after them and the
        shared parameters' version, if any were recorded."""
        if not self.progress_dir.is_dir():
            return None
        best: tuple[int, Path] | None = None
        for path in self.progress_dir.iterdir():
            match = _SNAPSHOT_RE.match(path.name)
            if match and int(match.group(1)) == epoch and (best is None or int(match.group(2)) > best[0]):
                best = (int(match.group(2)), path)
        if best is None:
            return None
        snapshot = json.loads(best[1].read_text())
        p = snapshot["num_partitions"]
        finished = [Bucket(k // p, k % p) for k, flag in enumerate(snapshot["done"]) if flag == "1"]
        return finished, snapshot["payload"], snapshot["shared"]

    def collect(self, keep: dict[str, str], epoch: int) -> None:
        """Remove versions not named in ``keep`` and snapshots of epochs before ``epoch``.

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
                if match and int(match.group(1)) < epoch:
                    path.unlink(missing_ok=True)
