"""The Trainer: bucket-by-bucket training of one process on one device.

The parts are named up front as typed attributes and built by small
``build_*`` functions; ``train`` reads top to bottom: for each epoch, take
buckets from the scheduler, load their partitions (prefetched in the
background), train every batch, commit a checkpoint, log the bucket; at the
epoch's end log it, validate, and stop early when valid MRR stops improving;
when training ends, make the best-validated weights the final checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from bigkg.atomic import write_text_atomic
from bigkg.checkpoint import (
    CheckpointStore, CheckpointVersion, PartitionKey, PartitionState, read_partition_rows, snapshot_run,
)
from bigkg.config import Config, ConfigError, config_to_yaml
from bigkg.device import build_device, set_cpu_threads
from bigkg.edge_chunks import EdgeChunk, edge_chunk_count
from bigkg.errors import BigKGError
from bigkg.format import Manifest, load_manifest
from bigkg.memory import release_freed_memory
from bigkg.model import KGModel, build_model
from bigkg.negatives import foreign_rows
from bigkg.optim import RowAdagrad, build_shared_optimizer, preload_cpu_kernels
from bigkg.pretrained import PretrainedInit, load_relation_file
from bigkg.run_lock import lock_run_dir
from bigkg.schedule import Bucket, BucketScheduler
from bigkg.storage import BucketLoader, LoadedBucket, all_partition_keys, bucket_partition_keys, group_keys
from bigkg.training.foreign import DeferredUpdates, ForeignSample
from bigkg.training.hogwild import SHARED_MEMORY, GroupWork, ProcessWorkers, ThreadWorkers
from bigkg.training.initial import InitialPartitions
from bigkg.training.metrics import MetricsLog
from bigkg.training.builders import (
    Validator, build_all_rows_relations, build_generator, build_loss, build_relation_weights, build_scheduler,
    build_side_weights, build_validator,
)
from bigkg.training.progress import Progress
from bigkg.training.step import BatchStep, LossFn

log = logging.getLogger(__name__)

class TrainingError(BigKGError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit)."""


ValidationHook = Callable[[int, float], None]


class Trainer:
    config: Config
    manifest: Manifest
    device: torch.device
    model: KGModel
    loss_fn: LossFn
    row_optimizer: RowAdagrad
    shared_optimizer: torch.optim.Optimizer | None
    scheduler: BucketScheduler
    loader: BucketLoader
    step: BatchStep
    workers: ThreadWorkers | ProcessWorkers
    validator: Validator | None
    store: CheckpointStore
    metrics: MetricsLog
    progress: Progress
    deferred_in_checkpoints = True  # foreign rows' waiting gradients are part of each checkpoint
    worker_processes = True  # CPU Hogwild workers may be forked processes (bigkg.training.hogwild)
    exclusive_run_dir = True  # no other trainer may use run_dir meanwhile (bigkg.run_lock)
    writes_checkpoints = True  # this process writes the run's checkpoints (in distributed training, rank 0)

    def __init__(self, config: Config, *, fresh: bool = False, scheduler: BucketScheduler | None = None,
                 on_validation: ValidationHook | None = None):
        if not config.dataset:
            raise ConfigError("dataset: no dataset directory given (set it in the config or with --set dataset=DIR)")
        if not config.run_dir:
            raise ConfigError("run_dir: no run directory given (set it in the config or with --set run_dir=DIR)")
        self.config = config
        self.on_validation = on_validation
        self.manifest = load_manifest(config.dataset)
        self.device = build_device(config)
        threads = config.training.threads or max(1, (os.cpu_count() or 1) // config.training.workers)
        torch.manual_seed(config.seed)
        self.model = build_model(config, self.manifest).to(self.device)
        self.loss_fn = build_loss(config)
        self.row_optimizer = RowAdagrad(config.training.lr, max_norm=config.model.max_norm)
        self.shared_optimizer = build_shared_optimizer(self.model, config.training)
        self.step = BatchStep(
            self.model, self.loss_fn, config.training, self.row_optimizer, self.shared_optimizer,
            build_generator(config, self.device), build_side_weights(config, self.manifest, self.device),
            all_rows=build_all_rows_relations(config, self.manifest, self.device),
        )
        self.shuffle_generator = build_generator(config, self.device)
        self.workers = self._build_workers(threads)  # before this process starts threads: it may fork
        try:
            self._start(fresh, scheduler, threads)
        except BaseException:
            self.workers.close()
            raise

    def _build_workers(self, threads: int) -> ThreadWorkers | ProcessWorkers:
        """The Hogwild workers (``bigkg.training.hogwild``), each with its own negative-sampling generator."""
        config, cpu = self.config, self.device.type == "cpu"
        generators = [build_generator(config, self.device, offset=k + 1) for k in range(config.training.workers)]
        if cpu and self.worker_processes and len(generators) > 1 and not self.step.shared_params:
            types = self.manifest.entity_types
            bucket_rows = sum(min(len(et.partition_counts), 2) * max(et.partition_counts) for et in types)
            largest = max(max(et.partition_counts) for et in types)
            needed, free = ProcessWorkers.shared_memory(bucket_rows, largest, config.model.dim)
            if free >= needed:
                return ProcessWorkers(self.step, generators, threads)
            log.warning("training.workers: %d worker threads, not processes: %s has %.0f MB free, and processes "
                        "would need %.0f MB there for the partitions they share", len(generators), SHARED_MEMORY,
                        free / 1e6, needed / 1e6)
        return ThreadWorkers(self.step, generators, functools.partial(set_cpu_threads, threads) if cpu else None)

    def _start(self, fresh: bool, scheduler: BucketScheduler | None, threads: int) -> None:
        config = self.config
        if self.device.type == "cpu":
            set_cpu_threads(threads)
            preload_cpu_kernels()
        self.scheduler = scheduler or build_scheduler(config, self.manifest)
        self.loader = BucketLoader(
            config.dataset, self.manifest, pin_memory=self.device.type == "cuda", background=config.training.prefetch,
            relation_weights=build_relation_weights(config, self.manifest),
        )
        self.validator = self._build_validator()
        run_dir = Path(config.run_dir)
        self.store = CheckpointStore(run_dir)
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        self.deferred = DeferredUpdates()  # foreign rows' gradients, until their partition is loaded
        self._run_lock = lock_run_dir(run_dir) if self.exclusive_run_dir else None  # before --fresh deletes anything
        try:
            self.version = self._open_run_dir(run_dir, fresh)
        except BaseException:
            self._release_run_dir()
            raise
        self.held: dict[PartitionKey, PartitionState] = {}
        self.foreign: dict[PartitionKey, ForeignSample] = {}  # rows of other partitions, per bucket

    def _build_validator(self) -> Validator | None:
        return build_validator(self.config, self.manifest)

    def _open_run_dir(self, run_dir: Path, fresh: bool) -> CheckpointVersion:
        """Clear the run's checkpoints, snapshots and metrics if ``fresh``, record the config,
        and resume from the latest version (or write the first)."""
        if fresh:
            shutil.rmtree(self.store.root, ignore_errors=True)
            # Else an old epoch_<k> stands in for the new run's (a snapshot is never remade).
            shutil.rmtree(run_dir / "snapshots", ignore_errors=True)
            self.metrics.path.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", config_to_yaml(self.config))
        return self._resume_or_initialise()

    def _release_run_dir(self) -> None:
        if self._run_lock is not None:
            self._run_lock.close()

    # -- the loop ------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the run's summary."""
        started = time.perf_counter()
        edges_before = self._committed_edges()
        try:
            while self.progress.epoch < self.config.training.epochs and not self.progress.stopped_early:
                self._snapshot_if_due()
                epoch = self.progress.epoch
                self._split_epoch()
                with tqdm(total=self.manifest.split_count("train"), initial=self.progress.epoch_edges,
                          desc=f"epoch {epoch + 1}/{self.config.training.epochs}", unit="edge",
                          unit_scale=True, disable=None, leave=False) as bar:
                    while True:  # one pass per edge chunk
                        self.scheduler.start_pass(self.progress.pass_index, self.progress.finished)
                        while (bucket := self.scheduler.acquire()) is not None:
                            self._train_bucket(epoch, bucket, bar)
                        if self.progress.last_chunk:
                            break
                        self.progress.next_chunk()
                self._end_epoch(epoch)
            self._snapshot_if_due()
            self._restore_best()
        finally:
            self.close()
        return self._summary(time.perf_counter() - started, self._committed_edges() - edges_before)

    def close(self) -> None:
        """Stop the background loader and the Hogwild workers, wait until the last version
        is durable and named by LATEST, and release the run dir. ``train`` ends with it; a
        trainer built and not trained (to inspect it) needs it, or ``with Trainer(...)``.
        Closing twice is harmless; a closed trainer trains no more."""
        self.loader.close()
        self.workers.close()
        self.store.flush()  # before anyone reads the run
        self._release_run_dir()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _split_epoch(self) -> None:
        """At an epoch's start, the number of edge chunks its buckets are split into. An
        epoch resumed midway keeps the split it began with."""
        p, t = self.progress, self.config.training
        chunks = edge_chunk_count(self.manifest.bucket_counts.get("train", {}).values(), t.num_edge_chunks,
                                  t.max_edges_per_chunk)
        if p.chunk == 0 and not p.finished:
            p.edge_chunks = chunks
        elif chunks != p.edge_chunks:
            log.info("epoch %d goes on in the %d edge chunks it began with; %d chunks from the next epoch",
                     p.epoch + 1, p.edge_chunks, chunks)

    def _train_bucket(self, epoch: int, bucket: Bucket, bar: tqdm) -> None:
        chunk = EdgeChunk(self.progress.chunk, self.progress.edge_chunks)
        if chunk.size(self.manifest.bucket_count("train", *bucket)) == 0:
            self._skip_empty(epoch, bucket)
            return
        t0 = time.perf_counter()
        data = self._load(bucket, chunk)
        peek = getattr(self.scheduler, "peek", None)
        upcoming = peek() if peek is not None else None
        if upcoming is not None:
            self.loader.prefetch(upcoming, chunk, self.version, frozenset(self.held))
        t1 = time.perf_counter()
        bar.set_description(f"epoch {epoch + 1}/{self.config.training.epochs} bucket {tuple(bucket)}")
        loss = self._train_edges(bucket, data, bar)
        t2 = time.perf_counter()
        if not math.isfinite(loss):
            self.scheduler.release(bucket, done=False)
            raise TrainingError(
                f"the loss became {loss} in epoch {epoch + 1}, bucket {tuple(bucket)}; training stopped and the "
                f"last good checkpoint {self.version.path} is kept. Lower training.lr or model.init_scale."
            )
        edges = data.num_edges
        p = self.progress
        p.finished = p.finished + [bucket]
        p.epoch_loss += loss
        p.epoch_edges += edges
        p.steps = self.step.steps
        p.epoch_seconds += t2 - t0
        self.metrics.write({
            "type": "bucket", "epoch": epoch, "chunk": chunk.index, "bucket": list(bucket), "edges": edges, "loss": loss,
            "loss_per_edge": loss / max(edges, 1), "edges_per_s": edges / max(t2 - t1, 1e-9),
            "load_s": t1 - t0, "train_s": t2 - t1,
        })
        self._commit(changed=bucket_partition_keys(self.manifest, bucket))
        self.scheduler.release(bucket, done=True)

    def _skip_empty(self, epoch: int, bucket: Bucket) -> None:
        """A bucket without edges: nothing to load or train; the next commit records it."""
        self.progress.finished = self.progress.finished + [bucket]
        self.metrics.write({"type": "bucket", "epoch": epoch, "chunk": self.progress.chunk, "bucket": list(bucket),
                            "edges": 0, "loss": 0.0})
        self.scheduler.release(bucket, done=True)

    def _train_edges(self, bucket: Bucket, data: LoadedBucket, bar: tqdm) -> float:
        """Every batch of the bucket, in a fresh random order, trained by the Hogwild workers; returns the summed loss."""
        totals = []
        for group_edges in data.edges:
            e = group_edges.to(self.device)
            order = torch.randperm(len(e), generator=self.shuffle_generator, device=self.device)
            lkey, rkey = group_keys(self.manifest, e.group, bucket)
            foreign = (self.foreign[lkey], self.foreign[rkey]) if lkey in self.foreign and rkey in self.foreign else None
            work = GroupWork(
                e.lhs[order], e.rhs[order], e.rel[order], None if e.weight is None else e.weight[order],
                self.config.training.batch_size, ((lkey, self.held[lkey]), (rkey, self.held[rkey])),
                (e.lhs, e.rhs, e.rel), foreign,
            )
            totals.append(self.workers.train(work, bar.update))
        for sample in self.foreign.values():
            self.deferred.add(sample)
        return float(torch.stack(totals).sum().item()) if totals else 0.0

    def _end_epoch(self, epoch: int) -> None:
        p = self.progress
        record: dict[str, Any] = {
            "type": "epoch", "epoch": epoch, "edges": p.epoch_edges, "loss": p.epoch_loss,
            "loss_per_edge": p.epoch_loss / max(p.epoch_edges, 1), "train_s": p.epoch_seconds,
            "edges_per_s": p.epoch_edges / max(p.epoch_seconds, 1e-9),
        }
        self.metrics.write(record)
        log.info("epoch %d: loss/edge %.4f, %.0f edges/s", epoch + 1, record["loss_per_edge"], record["edges_per_s"])
        if self.validator is not None and (epoch + 1) % self.config.eval.valid_every == 0:
            self._validate(epoch)
        p.next_epoch()
        self._commit(changed=set())

    def _snapshot_if_due(self) -> None:
        """At an epoch's end (no bucket of the next one done yet), keep the current version
        as a snapshot when ``checkpoint.snapshot_every`` asks for this epoch and it is not
        there yet. Called before each epoch too, so a run killed between the epoch's last
        version and its snapshot takes the snapshot when it resumes."""
        every, done = self.config.checkpoint.snapshot_every, self.progress.epoch
        at_epoch_start = self.progress.chunk == 0 and not self.progress.finished
        if not (every and done and done % every == 0 and at_epoch_start and self.writes_checkpoints):
            return
        if self.progress.restored_from is not None:  # a finished run: its version holds the best epoch's weights
            return
        dest = Path(self.config.run_dir) / "snapshots" / f"epoch_{done}"
        if not dest.exists():
            # Durable first: a machine crash drops a version not yet published, and a snapshot
            # of it would then hold weights the resumed run no longer has.
            self.store.flush()
            # Its config names the snapshot as the run, so `bigkg eval snapshots/epoch_k/config.yaml` reads it.
            snapshot_run(self.version, dest, config_to_yaml(dataclasses.replace(self.config, run_dir=str(dest))))
            log.info("epoch %d: snapshot %s", done, dest)

    def _validate(self, epoch: int) -> None:
        assert self.validator is not None
        t0 = time.perf_counter()
        result = self.validator(self.store)
        record = {"type": "valid", "epoch": epoch, **result, "eval_s": time.perf_counter() - t0}
        self.metrics.write(record)
        p = self.progress
        p.valid.append(record)
        log.info("epoch %d: valid MRR %.4f", epoch + 1, result["mrr"])
        if p.best_valid_mrr is None or result["mrr"] > p.best_valid_mrr:
            p.best_valid_mrr, p.stale_validations = result["mrr"], 0
            p.best_version, p.best_epoch = result["checkpoint"], epoch
        else:
            p.stale_validations += 1
        patience = self.config.eval.early_stopping_patience
        if patience and p.stale_validations >= patience:
            log.info("valid MRR has not improved for %d validations: stopping early", patience)
            p.stopped_early = True
        if self.on_validation is not None:
            self.on_validation(epoch, result["mrr"])

    def _restore_best(self) -> None:
        """Commit the best-validated version's weights as the final version, when they are not the last ones.

        Its partitions are hard links to the best version's and its shared.pt is
        that version's; its progress is the run's final one (epochs done, early
        stop), so a resume trains nothing more.
        """
        p = self.progress
        if self.validator is None or not self.config.eval.restore_best or p.best_version is None or p.best_epoch is None:
            return  # no validation in this run, or none recorded: nothing to restore
        if p.best_epoch + 1 == p.epoch or p.restored_from is not None:
            return  # the last weights are the best, or were restored already
        if not (self.store.root / p.best_version).is_dir():
            # pruned while eval.restore_best was off in an earlier run
            log.warning("the best-validated checkpoint %s is gone: the last weights are kept", p.best_version)
            return
        best = CheckpointVersion(self.store.root / p.best_version)
        p.restored_from = {"version": best.name, "epoch": p.best_epoch, "valid_mrr": p.best_valid_mrr}
        self.version = self._write_version(best.shared_state(), {}, base=best)
        log.info("restored the weights of epoch %d (valid MRR %.4f, checkpoint %s) as the final checkpoint %s",
                 p.best_epoch + 1, p.best_valid_mrr, best.name, self.version.name)

    # -- partitions and checkpoints ---------------------------------------------------------
    def _load(self, bucket: Bucket, chunk: EdgeChunk) -> LoadedBucket:
        needed = bucket_partition_keys(self.manifest, bucket)
        kept = {k: v for k, v in self.held.items() if k in needed}
        if len(kept) < len(self.held):
            self.held = kept
            release_freed_memory()  # the partitions just dropped: memory follows the partitions held
        data = self.loader.get(bucket, chunk, self.version, frozenset(self.held))
        for key, state in data.partitions.items():
            self.held[key] = PartitionState(
                state.embeddings.to(self.device, non_blocking=True), state.adagrad.to(self.device, non_blocking=True)
            )
        self.held = self.workers.place(self.held)
        for key in needed:  # foreign-row gradients of earlier buckets, now that the rows are here
            ids, grads = self.deferred.pop(key, self.device)
            self.row_optimizer.step(self.held[key].embeddings, self.held[key].adagrad, ids, grads)
        self.foreign = self._draw_foreign(bucket, needed)
        return data

    def _draw_foreign(self, bucket: Bucket, keys: set[PartitionKey]) -> dict[PartitionKey, ForeignSample]:
        """Per partition of the bucket, a pool of rows of its entity type from the other
        partitions (``training.foreign_pool`` of them, or ``foreign_negatives``), read from
        the version the bucket was loaded from."""
        t = self.config.training
        count = t.foreign_pool or t.foreign_negatives
        if not count or self.manifest.num_partitions == 1:
            return {}
        rng = np.random.default_rng((self.config.seed, self.progress.pass_index, *bucket))
        drawn = {}
        for entity_type, part in sorted(keys):
            rows = foreign_rows(self.manifest.entity_type(entity_type).offsets, part, count, rng)
            if rows:
                paths = {p: self.version.partition_path(entity_type, p) for p in rows}
                table = torch.cat([read_partition_rows(paths[p], ids) for p, ids in rows.items()])
                per_batch = t.foreign_negatives if t.foreign_pool else 0
                drawn[(entity_type, part)] = ForeignSample(entity_type, rows, table.to(self.device), per_batch)
        return drawn

    def _commit(self, changed: set[PartitionKey]) -> None:
        """Write the partitions and progress as a new version; it is fsynced and named by
        LATEST in the background while the next bucket trains (see ``bigkg.checkpoint``)."""
        partitions = {k: PartitionState(self.held[k].embeddings.cpu(), self.held[k].adagrad.cpu()) for k in changed}
        self.version = self._write_version(self._shared_state(), partitions, base=self.version, background=True)

    def _write_version(self, shared: dict[str, Any], partitions: dict[PartitionKey, PartitionState], *,
                       base: CheckpointVersion | None, background: bool = False) -> CheckpointVersion:
        """A checkpoint version of the current progress, ``partitions`` written and the rest
        linked from ``base``; its publication also makes the metrics log durable up to the
        lines its meta counts."""
        return self.store.write(
            self._meta(), shared, partitions, all_partition_keys(self.manifest), base=base,
            keep_versions=self.config.checkpoint.keep_versions, pinned=self._pinned(), background=background,
            sync_with=[self.metrics.path],
        )

    def _pinned(self) -> set[str]:
        """Versions pruning must keep: the best-validated one, while the end of training may restore it."""
        best = self.progress.best_version
        return {best} if best is not None and self.config.eval.restore_best else set()

    def _shared_state(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.shared_optimizer.state_dict() if self.shared_optimizer is not None else None,
        }
        if self.deferred_in_checkpoints:
            state["deferred"] = self.deferred.snapshot()
        return state

    def _meta(self) -> dict[str, Any]:
        return {
            "epoch": self.progress.epoch,
            "finished_buckets": [list(b) for b in self.progress.finished],
            "dim": self.config.model.dim,
            "model": self.config.model.structure(),
            "partition_counts": {et.name: et.partition_counts for et in self.manifest.entity_types},
            "relations": [r.name for r in self.manifest.relations],
            "metrics_lines": self.metrics.lines,
            "progress": self.progress.to_meta(),
        }

    def _resume_or_initialise(self) -> CheckpointVersion:
        self.store.recover()  # a version a killed run wrote but did not get to name
        version = self.store.latest()
        if version is None:
            self.metrics.truncate(0)
            self.progress = Progress()
            pretrained = PretrainedInit(self.config) if self.config.model.init_from else None
            if pretrained is not None:
                pretrained.load_shared(self.model, self.shared_optimizer, [r.name for r in self.manifest.relations])
            relations_file = self._load_relation_file()
            partitions = InitialPartitions(self.config, self.manifest, pretrained)
            version = self._write_version(self._shared_state(), partitions, base=None)
            if pretrained is not None:
                self.progress.initialised_from = pretrained.report(self.manifest)  # in every later version's meta
            if relations_file is not None:
                self.progress.initialised_from = {**(self.progress.initialised_from or {}), "relations_file": relations_file}
            return version
        self._check_fits(version)
        for option in ("init_from", "init_relations_from"):
            if getattr(self.config.model, option):
                log.warning("model.%s is not used: the run resumes from its checkpoint %s (--fresh starts over "
                            "from %s)", option, version.path, getattr(self.config.model, option))
        shared = version.load_shared(self.model, self.shared_optimizer)
        if self.deferred_in_checkpoints:
            self.deferred.restore(shared.get("deferred", []))
        self.metrics.truncate(version.meta["metrics_lines"])
        self.progress = Progress.from_meta(version.meta["progress"])
        self.step.steps = self.progress.steps
        log.info("resuming from %s (%s, %d buckets done)", version.path, self.progress.where(), len(self.progress.finished))
        return version

    def _load_relation_file(self) -> dict[str, Any] | None:
        """``model.init_relations_from``: the relation parameters a fresh run starts from."""
        path = self.config.model.init_relations_from
        if not path:
            return None
        names = [r.name for r in self.manifest.relations]
        matched = load_relation_file(self.model, path, names, self.config.model)
        log.info("model.init_relations_from: %d of %d relations start from %s", matched, len(names), path)
        return {"path": str(path), "relations": len(names), "relations_matched": matched}

    def _check_fits(self, version: CheckpointVersion) -> None:
        """A checkpoint of another model or dataset is a clear error, not a crash later."""
        meta = version.meta
        difference = self.config.model.first_difference(meta["model"])
        if difference is not None:
            key, saved, own = difference
            raise TrainingError(
                f"the checkpoint {version.path} was trained with model.{key}={saved!r} but the "
                f"config says {own!r}; restore the option, use another run_dir, or pass --fresh to start afresh"
            )
        counts = {et.name: et.partition_counts for et in self.manifest.entity_types}
        if meta["partition_counts"] != counts or meta["relations"] != [r.name for r in self.manifest.relations]:
            raise TrainingError(
                f"the checkpoint {version.path} belongs to a dataset with other entities or relations than "
                f"{self.config.dataset}; use another run_dir or pass --fresh to start afresh"
            )

    def _committed_edges(self) -> int:
        return sum(r["edges"] for r in self.metrics.read() if r["type"] == "bucket")

    def _summary(self, seconds: float, edges: int) -> dict[str, Any]:
        p = self.progress
        records = self.metrics.read()
        epochs = [r for r in records if r["type"] == "epoch"]
        return {
            "run_dir": str(self.config.run_dir),
            "checkpoint": str(self.version.path),
            "epochs_completed": p.epoch,
            "stopped_early": p.stopped_early,
            "edges_trained_this_run": edges,
            "wall_seconds_this_run": seconds,
            "edges_per_s": (sum(r["edges"] for r in epochs) / max(sum(r["train_s"] for r in epochs), 1e-9)) if epochs else None,
            "final_loss_per_edge": epochs[-1]["loss_per_edge"] if epochs else None,
            "best_valid_mrr": p.best_valid_mrr,
            "restored_from": p.restored_from,
            "initialised_from": p.initialised_from,
            "valid": p.valid,
            "device": str(self.device),
        }


def train(config: Config, *, fresh: bool = False, on_validation: ValidationHook | None = None) -> dict[str, Any]:
    """Train ``config`` (resuming from its run_dir's latest checkpoint unless ``fresh``).

    ``on_validation(epoch, valid_mrr)`` is called after each validation; an exception it
    raises ends training there (the run keeps its last complete checkpoint)."""
    return Trainer(config, fresh=fresh, on_validation=on_validation).train()
