"""The Trainer of one worker among many: the single-process loop with four parts swapped.

* buckets come from the ``DistributedScheduler`` (the lock server);
* partitions are read from, and each finished bucket's partitions written to,
  the partition exchange on the shared filesystem, committed with the bucket;
* the shared parameters (and their optimizer state) are pulled from the
  ``SharedParameterServer`` when a bucket starts and the bucket's change is pushed to it when it is done;
* at an epoch's end every worker takes the final shared parameters, the job's
  totals are summed, and rank 0 alone commits the checkpoint version and writes the epoch record
  (the whole job's edges/s); every worker ranks its share of the validation queries;
* a restarted job resumes from the latest checkpoint plus the buckets of the
  current epoch (its passes, with edge chunks) that were durably recorded since.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from bigkg.checkpoint import CheckpointVersion, PartitionKey, PartitionState
from bigkg.config import Config, ConfigError
from bigkg.distributed.exchange import ExchangeView, PartitionExchange, partition_name
from bigkg.distributed.process_group import WorkerEnv, barrier
from bigkg.distributed.scheduler import DistributedScheduler
from bigkg.distributed.shared_params import SharedParameterServer
from bigkg.edge_chunks import EdgeChunk
from bigkg.format import load_manifest
from bigkg.schedule import Bucket
from bigkg.storage import LoadedBucket, all_partition_keys
from bigkg.training.metrics import MetricsLog
from bigkg.training.builders import Validator, build_validator
from bigkg.training.progress import Progress
from bigkg.training.trainer import Trainer

log = logging.getLogger(__name__)


def job_token(store: dist.Store) -> str:
    """A name shared by all workers of this attempt, unique across invocations (ordered by start time).

    The first worker to ask sets it; the others read it. It keeps the event logs of
    separate runs in one run_dir apart, even when their attempt numbers repeat.
    """
    mine = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    return store.compare_set("job_token", "", mine).decode()


class DistributedTrainer(Trainer):
    scheduler: DistributedScheduler
    exchange: PartitionExchange
    params: SharedParameterServer
    # Each worker applies the foreign-row gradients it computed when it next loads their
    # partition; they live in that worker's memory, not in the job's checkpoints.
    deferred_in_checkpoints = False
    # The workers share run_dir; the lock server keeps them apart.
    exclusive_run_dir = False
    # Forking a process whose communication threads run could leave their locks held in the child.
    worker_processes = False

    @property
    def writes_checkpoints(self) -> bool:  # type: ignore[override]
        return self.env.rank == 0

    def __init__(self, config: Config, env: WorkerEnv, store: dist.Store, *, fresh: bool = False):
        manifest = load_manifest(config.dataset)
        if manifest.num_partitions > 1:
            shared_types = [et.name for et in manifest.entity_types if len(et.partition_counts) == 1]
            if shared_types:
                raise ConfigError(
                    f"dataset: entity types {shared_types} of {config.dataset} are not partitioned; distributed "
                    "training needs every entity type split into the same partitions (partition them too)"
                )
        self.env = env
        self._store = store
        self.exchange = PartitionExchange(config.run_dir)
        self._fresh = fresh
        self._held_versions: dict[PartitionKey, str] = {}
        self._epoch_started = time.perf_counter()
        logs = Path(config.run_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        scheduler = DistributedScheduler(
            store, f"rank{env.rank}", manifest.num_partitions,
            lease_seconds=config.distributed.lease_seconds,
            heartbeat_seconds=config.distributed.heartbeat_seconds,
            timeout=config.distributed.timeout,
            seed=config.seed,
            event_log=logs / f"buckets.{job_token(store)}.attempt{env.restart_count}.rank{env.rank}.jsonl",
            on_commit=self._record_commit,
        )
        log.info("worker rank %d of %d: pid %d, restart %d", env.rank, env.world_size, os.getpid(), env.restart_count)
        super().__init__(config, fresh=fresh and env.rank == 0, scheduler=scheduler)

    # -- resume: rank 0 prepares, the others follow ---------------------------------------
    def _resume_or_initialise(self) -> CheckpointVersion:
        rank = self.env.rank
        if rank != 0:
            # Only rank 0 keeps metrics.jsonl (the job's records); the others log their own buckets.
            self.metrics = MetricsLog(Path(self.config.run_dir) / f"metrics.rank{rank}.jsonl")
        elif self._fresh:
            shutil.rmtree(self.exchange.root, ignore_errors=True)
        version = super()._resume_or_initialise() if rank == 0 else None
        barrier(self.device)  # rank 0 has written the first version, if there was none
        if version is None:
            version = super()._resume_or_initialise()
        self.params = SharedParameterServer(self._store, self.exchange.root, self.model, self.shared_optimizer)
        # Rank 0 checkpoints at epochs' ends only: the current epoch's passes are in the exchange.
        p = self.progress
        resumed = self.exchange.latest_progress(p.pass_index)
        shared: str | None = None  # None: the checkpoint's values, just loaded
        if resumed is None:
            payload = self.exchange.seed(version, all_partition_keys(self.manifest)) if rank == 0 else {}
        else:
            p.chunk += resumed.pass_index - p.pass_index
            p.pass_index, p.edge_chunks, p.finished = resumed.pass_index, resumed.edge_chunks, resumed.finished
            payload, shared = resumed.payload, resumed.shared
            log.info("resuming %s with %d buckets finished since %s", p.where(), len(p.finished), version.path)
        if rank == 0:
            self.scheduler.lock.set_payload(payload)
            self.params.publish(shared)
        barrier(self.device)  # the lock state names every partition's version and the shared one
        self.params.pull()
        return version

    # -- partitions through the exchange -------------------------------------------------------
    def _load(self, bucket: Bucket, chunk: EdgeChunk) -> LoadedBucket:
        self.params.pull()
        view = self.exchange.view(self.scheduler.lock.payload())
        # A partition still in memory is reused only if nobody committed a newer version since.
        self.held = {k: v for k, v in self.held.items() if self._held_versions.get(k) == view.version_of(k)}
        checkpoint, self.version = self.version, view  # the loader reads partitions from ``self.version``
        try:
            data = super()._load(bucket, chunk)
        finally:
            self.version = checkpoint
        for key in data.partitions:
            self._held_versions[key] = view.version_of(key)
        return data

    def _commit(self, changed: set[PartitionKey]) -> None:
        """After a bucket: write its partitions as new versions, committed with its release."""
        if not changed:
            return
        versions = {}
        for key in changed:
            state = self.held[key]
            name = self.exchange.write(key, PartitionState(state.embeddings.cpu(), state.adagrad.cpu()),
                                       self.progress.pass_index)
            versions[partition_name(key)] = name
            self._held_versions[key] = name
        self.scheduler.commit_with_release(versions)

    def _record_commit(self, state: dict[str, Any]) -> None:
        """After a bucket is marked done: push the shared parameters, persist the progress."""
        self.exchange.record(state, self.params.push(), self.progress.edge_chunks)
        done, total = state["done"].count("1"), len(state["done"])
        log.info("pass %d: job has %d/%d buckets done", state["pass_index"] + 1, done, total)

    # -- epoch end: all workers meet -------------------------------------------------------------
    def _end_epoch(self, epoch: int) -> None:
        p = self.progress
        totals = torch.tensor([p.epoch_edges, p.epoch_loss, p.epoch_seconds], dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        wall = torch.tensor([time.perf_counter() - self._epoch_started], dtype=torch.float64, device=self.device)
        dist.all_reduce(wall, op=dist.ReduceOp.MAX)
        # Every push happened before the all-reduce above: the current version has them all.
        self.params.pull()
        if self.scheduler.lost_buckets:
            log.warning("%d of this worker's buckets were re-handed after its lease expired", self.scheduler.lost_buckets)
        if self.env.rank == 0:
            edges, loss, train_s = totals.tolist()
            record = {
                "type": "epoch", "epoch": epoch, "edges": int(edges), "loss": loss,
                "loss_per_edge": loss / max(edges, 1), "train_s": wall.item(), "worker_train_s": train_s,
                "workers": self.env.world_size, "edges_per_s": edges / max(wall.item(), 1e-9),
            }
            self.metrics.write(record)
            log.info("epoch %d: loss/edge %.4f, job %.0f edges/s over %d workers", epoch + 1,
                     record["loss_per_edge"], record["edges_per_s"], self.env.world_size)
            payload = self.scheduler.lock.payload()
            p.next_epoch()
            self._write_epoch_checkpoint(payload)
        if self.validator is not None and (epoch + 1) % self.config.eval.valid_every == 0:
            barrier(self.device)  # rank 0's version is published: every worker ranks its share of it
            if self.env.rank == 0:
                self._validate(epoch)
                self._write_epoch_checkpoint(payload)  # again, with the validation in its progress
            else:
                self.validator(self.store)
        if self.env.rank == 0:
            self.exchange.collect(payload, p.pass_index)  # the next epoch's first pass
            self.params.collect()
        # Everyone waits for rank 0's checkpoint and takes its progress (validation, early stop).
        shared = [self.progress.to_meta() if self.env.rank == 0 else None]
        dist.broadcast_object_list(shared, src=0)
        self.progress = Progress.from_meta(shared[0])
        if self.env.rank != 0:
            self.version = self.store.latest() or self.version
        self._epoch_started = time.perf_counter()

    def _build_validator(self) -> Validator | None:
        """Validation split over the workers: each ranks its share of the query batches."""
        return build_validator(self.config, self.manifest, shard=(self.env.rank, self.env.world_size),
                               sum_over_workers=self._sum_over_workers)

    def _sum_over_workers(self, values: np.ndarray) -> np.ndarray:
        total = torch.from_numpy(values).to(self.device)
        dist.all_reduce(total)
        return total.cpu().numpy()

    def _write_epoch_checkpoint(self, payload: dict[str, str]) -> None:
        """A checkpoint version whose partitions are hard links to the exchange's current versions."""
        base = ExchangeView(self.exchange, payload)  # has CheckpointVersion's partition_path, all a base needs
        self.version = self._write_version(self._shared_state(), {}, base=base)  # type: ignore[arg-type]

    def _restore_best(self) -> None:
        """Rank 0 alone writes checkpoints; the other workers read none after training."""
        if self.env.rank == 0:
            super()._restore_best()

    def train(self) -> dict[str, Any]:
        try:
            self._epoch_started = time.perf_counter()
            return super().train()
        finally:
            self.scheduler.close()

    def _committed_edges(self) -> int:
        # Rank 0's metrics hold its own bucket records but the whole job's epoch records.
        return sum(r["edges"] for r in self.metrics.read() if r["type"] == "epoch")
