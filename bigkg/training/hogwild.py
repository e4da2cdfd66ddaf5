"""Hogwild workers: the batches of one bucket trained by several workers at once.

Every worker takes the next untrained batch of the bucket's shuffled edges when
it finishes one, and all of them update the same partitions in place without
locks, as PBG's workers do. Taking batches in turn instead (k, k+W, ... for
worker k) left the faster worker idle for a median 13 ms at the end of each
bucket, ~10% of a P=4 run's training time on 2 cores.

Two kinds of workers:

- ``ProcessWorkers``, on CPU for models whose only trained state is the entity
  rows (no relation or encoder parameters): processes forked when the trainer
  starts. Each partition is copied into reused shared memory once per load,
  the shuffled edges once per bucket; a shared block reaches each worker once
  and is named by reference after that. Each process has its own copy of the
  step, sums its own loss and its own foreign-row gradients, and sends them
  back at the bucket's end. Threads share one interpreter: every tensor
  operation of a step releases the GIL and takes it back. On 2 cores two
  threads ran an isolated step loop 14-21% slower than two processes, and a
  bucket of the trainer 8-11% slower (docs/benchmarks.md).
- ``ThreadWorkers`` everywhere else: shared parameters and their optimizer state
  stay in one process, where the step updates them under a lock; a GPU's work is
  queued by one thread; and a distributed worker's process, whose
  communication threads are running, is not forked.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import itertools
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable

import torch
import torch.multiprocessing  # registers how tensors in shared memory are sent between processes
from torch import Tensor

from bigkg.checkpoint import PartitionKey, PartitionState, Side
from bigkg.optim import preload_cpu_kernels
from bigkg.training.foreign import ForeignSample
from bigkg.training.step import Batch, BatchStep

SHARED_MEMORY = "/dev/shm"  # where torch puts the tensors it shares between processes


class WorkerError(RuntimeError):
    """A worker process failed or died while training a bucket."""


@dataclass
class GroupWork:
    """One relation group of a bucket: its edges in training order and what their steps read and update."""

    lhs: Tensor
    rhs: Tensor
    rel: Tensor
    weight: Tensor | None
    batch_size: int
    sides: tuple[Side, Side]
    edges: tuple[Tensor, Tensor, Tensor]  # the group's edges in stored order, for encoders' neighbourhoods
    foreign: tuple[ForeignSample, ForeignSample] | None

    @property
    def num_batches(self) -> int:
        return -(-len(self.lhs) // self.batch_size)

    def batch(self, index: int) -> Batch:
        s = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return Batch(self.lhs[s], self.rhs[s], self.rel[s], None if self.weight is None else self.weight[s])

    def edge_arrays(self) -> dict[str, Tensor]:
        """The edge tensors by name (``edges`` as ``edges.0`` ...), for copies with ``with_edge_arrays``."""
        arrays = {"lhs": self.lhs, "rhs": self.rhs, "rel": self.rel, **{f"edges.{k}": t for k, t in enumerate(self.edges)}}
        return arrays if self.weight is None else {**arrays, "weight": self.weight}

    def with_edge_arrays(self, arrays: dict[str, Tensor]) -> "GroupWork":
        return dataclasses.replace(
            self, lhs=arrays["lhs"], rhs=arrays["rhs"], rel=arrays["rel"], weight=arrays.get("weight"),
            edges=tuple(arrays[f"edges.{k}"] for k in range(len(self.edges))),
        )


def train_batches(step: BatchStep, work: GroupWork, take: Callable[[], int | None], generator: torch.Generator,
                  done: Callable[[int], None]) -> Tensor:
    """Train the batches ``take`` hands out until it returns None; returns their summed loss.
    ``done`` is told each batch's edge count."""
    total = torch.zeros((), device=work.lhs.device)
    while (index := take()) is not None:
        batch = work.batch(index)
        total += step(batch, *work.sides, edges=work.edges, generator=generator, foreign=work.foreign)
        done(batch.lhs.shape[0])
    return total


class ThreadWorkers:
    """Workers as threads of this process (one worker: the calling thread itself)."""

    def __init__(self, step: BatchStep, generators: list[torch.Generator], initializer: Callable[[], None] | None):
        self.step = step
        self.generators = generators
        self.pool = (
            concurrent.futures.ThreadPoolExecutor(len(generators), initializer=initializer) if len(generators) > 1 else None
        )

    def train(self, work: GroupWork, progress: Callable[[int], None]) -> Tensor:
        batches = iter(range(work.num_batches))  # next() on a range iterator is atomic under the GIL

        def run(worker: int) -> Tensor:
            return train_batches(self.step, work, lambda: next(batches, None), self.generators[worker], progress)

        if self.pool is None:
            return run(0)
        return torch.stack([f.result() for f in [self.pool.submit(run, k) for k in range(len(self.generators))]]).sum()

    def place(self, held: dict[PartitionKey, PartitionState]) -> dict[PartitionKey, PartitionState]:
        """The held partitions where the workers can update them: threads share this process's memory."""
        return held

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class ProcessWorkers:
    """Workers as forked processes training on shared memory.

    Fork them before the process starts threads of its own (a lock held by
    another thread at the fork stays held in the child forever).
    """

    SPARE_BLOCKS = 2  # shared-memory blocks of partitions no longer held, kept for the next loads

    @classmethod
    def shared_memory(cls, bucket_rows: int, largest_partition: int, dim: int) -> tuple[int, int]:
        """(bytes needed, bytes free) in SHARED_MEMORY for the blocks of a bucket's partitions
        (``bucket_rows`` rows at most) and the spare ones (of ``largest_partition`` rows at
        most). A worker touching shared memory that is not there dies of SIGBUS."""
        needed = (bucket_rows + cls.SPARE_BLOCKS * largest_partition) * (dim + 1) * 4
        free = shutil.disk_usage(SHARED_MEMORY).free if os.path.isdir(SHARED_MEMORY) else 0
        return needed, free

    def __init__(self, step: BatchStep, generators: list[torch.Generator], threads: int):
        context = torch.multiprocessing.get_context("fork")
        self._next = context.Value("q", 0)  # the next batch to hand out
        self._edges_done = context.Value("q", 0)
        self._connections: list[multiprocessing.connection.Connection] = []
        self._processes = []
        # Shared memory, reused from bucket to bucket: a new block's every page is faulted
        # in by the copy into it and again by each worker, ~5 ms per 10 MB partition.
        self._placed: dict[PartitionKey, PartitionState] = {}  # the copies place() returned
        self._free: list[PartitionState] = []
        self._edge_buffers: dict[str, Tensor] = {}
        self._sent = _SentTensors()
        for k, generator in enumerate(generators):
            mine, theirs = context.Pipe()
            inherited = [*self._connections, mine]  # the trainer's ends: the child closes its copies
            process = context.Process(target=self._serve, args=(step, generator, threads, theirs, inherited),
                                      name=f"bigkg-worker-{k}", daemon=True)
            process.start()
            theirs.close()
            self._connections.append(mine)
            self._processes.append(process)

    def place(self, held: dict[PartitionKey, PartitionState]) -> dict[PartitionKey, PartitionState]:
        """The held partitions copied into shared memory (each once: a partition placed at an
        earlier bucket and still held is returned as it is); blocks of partitions no longer
        held are reused."""
        kept = {key: copy for key, copy in self._placed.items() if held.get(key) is copy}
        self._free += [copy for key, copy in self._placed.items() if key not in kept]
        self._placed = kept
        for key, state in held.items():
            if key not in kept:
                copy = self._placed[key] = self._block(state.embeddings.shape)
                copy.embeddings.copy_(state.embeddings)
                copy.adagrad.copy_(state.adagrad)
        surplus = max(len(self._free) - self.SPARE_BLOCKS, 0)  # not one block per partition ever held
        for block in self._free[:surplus]:
            self._sent.release(block.embeddings, block.adagrad)
        del self._free[:surplus]
        return {key: self._placed[key] for key in held}

    def _block(self, shape: torch.Size) -> PartitionState:
        """A free shared-memory block of a partition's shape (exact: a checkpoint of a view
        would store the whole block)."""
        for k, block in enumerate(self._free):
            if block.embeddings.shape == shape:
                return self._free.pop(k)
        return PartitionState(*self._sent.add(torch.empty(shape).share_memory_(), torch.empty(shape[0]).share_memory_()))

    def _shared_edges(self, work: GroupWork) -> GroupWork:
        """``work`` with its edge arrays copied into shared buffers, grown as needed."""
        arrays = {}
        for name, array in work.edge_arrays().items():
            buffer = self._edge_buffers.get(name)
            if buffer is None or buffer.shape[0] < array.shape[0] or buffer.dtype != array.dtype:
                if buffer is not None:
                    self._sent.release(buffer)
                buffer = torch.empty(array.shape[0], dtype=array.dtype).share_memory_()
                self._edge_buffers[name] = self._sent.add(buffer)[0]
            arrays[name] = buffer[: array.shape[0]].copy_(array)
        return work.with_edge_arrays(arrays)

    def train(self, work: GroupWork, progress: Callable[[int], None]) -> Tensor:
        """Train ``work``, whose partitions are ``place``d, in the worker processes."""
        for key, state in work.sides:
            if not state.embeddings.is_shared():
                raise ValueError(f"partition {key} is not in shared memory: pass the held partitions through place()")
        # The bucket's foreign pools are new: sent whole with this work, dropped with the next.
        foreign = [tensor.share_memory_() for sample in work.foreign or () for tensor in (sample.rows, *sample.origin.values())]
        self._sent.add(*foreign)
        work = self._shared_edges(work)
        self._next.value = self._edges_done.value = 0
        message = self._sent.message(work)
        for connection in self._connections:
            connection.send(message)
        self._sent.release(*foreign)
        reported, losses, pending = 0, [], dict(enumerate(self._connections))
        while pending:
            for connection in multiprocessing.connection.wait(list(pending.values()), timeout=0.1):
                k = next(k for k, c in pending.items() if c is connection)
                losses.append(self._result(k, connection, work))
                del pending[k]
            done = self._edges_done.value
            progress(done - reported)
            reported = done
        return torch.stack(losses).sum()

    def close(self) -> None:
        for connection in self._connections:
            try:
                connection.send(None)
            except OSError:
                pass  # that worker is gone already
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        for connection in self._connections:
            connection.close()

    def _result(self, k: int, connection: multiprocessing.connection.Connection, work: GroupWork) -> Tensor:
        """Worker k's summed loss; its foreign-row gradients are added to the bucket's samples."""
        try:
            kind, loss, payload = connection.recv()
        except EOFError:
            self._processes[k].join(timeout=10)
            raise WorkerError(f"training worker process {k} (pid {self._processes[k].pid}) died with exit code "
                              f"{self._processes[k].exitcode} while training a bucket") from None
        if kind == "error":
            raise WorkerError(f"training worker process {k} failed:\n{payload}")
        for sample, grad in zip(work.foreign or (), payload):
            sample.grad += grad
        return torch.tensor(loss)

    def _serve(self, step: BatchStep, generator: torch.Generator, threads: int,
               connection: multiprocessing.connection.Connection,
               inherited: list[multiprocessing.connection.Connection]) -> None:
        """A worker process: train each bucket's share of batches until told to stop."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the trainer, which stops the workers
        torch.set_num_threads(threads)  # numba's count is left alone: the row update's kernels are serial
        preload_cpu_kernels()  # loaded while the trainer opens its run, not in the first step (~0.4 s)
        for other in inherited:
            other.close()  # else the trainer's death would not end this worker's recv
        held: dict[int, Tensor] = {}  # the shared tensors received so far, by reference
        while True:
            try:
                message = connection.recv()
            except EOFError:  # the trainer is gone
                return
            if message is None:
                return
            try:
                work = _SentTensors.receive(message, held)
                loss = train_batches(step, work, lambda: self._take(work.num_batches), generator, self._count)
                result = ("done", float(loss), [sample.grad for sample in work.foreign or ()])
            except BaseException:
                result = ("error", None, traceback.format_exc())
            try:
                connection.send(result)
            except OSError:  # the trainer is gone
                return
            if result[0] == "error":
                return

    def _take(self, batches: int) -> int | None:
        with self._next.get_lock():
            index = self._next.value
            self._next.value = index + 1
        return index if index < batches else None

    def _count(self, edges: int) -> None:
        with self._edges_done.get_lock():
            self._edges_done.value += edges


class _SentTensors:
    """The shared-memory tensors the worker processes hold, so that a bucket's work names
    them by reference instead of sending them again.

    A shared tensor sent whole goes through the sender's resource-sharing thread
    (a socket round trip per tensor) and is mapped anew by the receiver: ~15 ms
    of each bucket's start on 2 cores, before any batch was trained. Each block
    is therefore sent whole once, with the first work that follows its creation,
    and a worker keeps it until the trainer releases it.
    """

    def __init__(self) -> None:
        self._ids = itertools.count()
        self._known: dict[int, tuple[int, Tensor]] = {}  # storage address -> (id, the whole tensor, kept alive)
        self._new: dict[int, Tensor] = {}  # id -> tensor, not sent yet
        self._released: list[int] = []  # ids the workers can drop

    def add(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Register shared tensors, each the whole of its storage (once: a storage already
        known keeps its id); returns them."""
        for tensor in tensors:
            address = tensor.untyped_storage().data_ptr()
            if tensor.untyped_storage().nbytes() and address not in self._known:  # empty: no address of its own
                ident = next(self._ids)
                self._known[address] = (ident, tensor)
                self._new[ident] = tensor
        return tensors

    def release(self, *tensors: Tensor) -> None:
        for tensor in tensors:
            entry = self._known.pop(tensor.untyped_storage().data_ptr(), None)
            if entry is not None and self._new.pop(entry[0], None) is None:
                self._released.append(entry[0])

    def message(self, obj: Any) -> tuple[dict[int, Tensor], list[int], bytes]:
        """What a worker needs to rebuild ``obj``: the tensors it does not hold yet (pickled
        whole by each send, which hands their shared memory to that receiver), those it may
        drop, and ``obj`` pickled with references to the known ones. Every worker is sent
        the same message."""
        buffer = io.BytesIO()
        _ReferencingPickler(buffer, self._known).dump(obj)
        message = (self._new, self._released, buffer.getvalue())
        self._new, self._released = {}, []
        return message

    @staticmethod
    def receive(message: tuple[dict[int, Tensor], list[int], bytes], held: dict[int, Tensor]) -> Any:
        """A worker's side of ``message``: ``held`` brought up to date, the object rebuilt."""
        new, released, payload = message
        held.update(new)
        for ident in released:
            del held[ident]
        return _ReferenceUnpickler(io.BytesIO(payload), held).load()


class _ReferencingPickler(ForkingPickler):
    """Pickles a view of a known tensor as (id, size, stride, offset), anything else as usual."""

    def __init__(self, file: io.BytesIO, known: dict[int, tuple[int, Tensor]]):
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._known = known

    def persistent_id(self, obj: Any) -> tuple[int, tuple[int, ...], tuple[int, ...], int] | None:
        if not isinstance(obj, Tensor) or not obj.untyped_storage().nbytes():
            return None
        entry = self._known.get(obj.untyped_storage().data_ptr())
        if entry is None:
            return None
        return entry[0], tuple(obj.shape), tuple(obj.stride()), obj.storage_offset()


class _ReferenceUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, held: dict[int, Tensor]):
        super().__init__(file)
        self._held = held

    def persistent_load(self, ref: tuple[int, tuple[int, ...], tuple[int, ...], int]) -> Tensor:
        ident, size, stride, offset = ref
        return self._held[ident].as_strided(size, stride, offset)
