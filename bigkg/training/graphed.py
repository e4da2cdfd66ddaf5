"""The closed-form step on a GPU, captured once as a CUDA graph and replayed per batch.

At PBG's FB15k-237 GPU settings the closed-form step is ~200 kernels a step, and
launching them took the host longer than the device took to run them (5.8 ms of
wall time for 4.3 ms of device time a step, docs/benchmarks.md, "Where a step's
time goes"). A graph launches the whole step at once: the host's cost per step
becomes copying the batch in, one launch, and the shared optimizer's step.

What is captured is ``BatchStep._closed_form_step``: the gathers, the scores, the
softmax gradients, the operator's autograd and the row update. It reads its batch
and negatives from buffers the graph owns and the partitions' tables at the
addresses it saw, so a graph belongs to one set of tables and one batch shape
(an epoch's last, shorter batch has its own). What
stays outside, per replay: drawing the negatives (the same generator and draws as
without the graph, so a graphed run is the eager run, up to the order of atomic
additions) and the shared optimizer's step (any torch optimizer, whose step
counters live on the host).

A batch shape is captured at its third batch: the first two run eagerly, on the
stream the capture uses, so what is initialised lazily (cuBLAS workspaces, the
autograd engine's streams) exists before the capture. The graphs of one set of
tables share a memory pool, which holds the step's intermediate tensors; new
tables (the next bucket's) drop them. Where a capture fails (an
operation that waits for the device, such as selecting relations by a mask for a
model with an operator per relation), the run warns once and stays eager.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Callable, Hashable

import torch
from torch import Tensor

from bigkg.checkpoint import Side

if TYPE_CHECKING:
    from bigkg.training.step import Batch

StepResult = tuple[Tensor, list[Tensor | None]]
# (batch, (head, tail) negatives, lhs side, rhs side) -> (loss, shared parameters' gradients)
StepFunction = Callable[..., StepResult]

WARMUP_STEPS = 2


@dataclasses.dataclass
class _Graph:
    """One batch shape's graph and the buffers it reads and writes."""

    seen: int = 0  # batches of this shape so far
    graph: torch.cuda.CUDAGraph | None = None
    inputs: tuple[Tensor | None, ...] = ()
    outputs: StepResult | None = None


class GraphedStep:
    """Runs ``step`` through a CUDA graph where it can (see the module's note)."""

    def __init__(self, step: StepFunction, warmup_steps: int = WARMUP_STEPS):
        self.step = step
        self.warmup_steps = warmup_steps
        self.captures = 0  # graphs captured so far
        self.replays = 0
        self.failure: str | None = None  # why capturing failed; then every step runs eagerly
        self._tables: Hashable | None = None  # the tables the graphs below read and write
        self._graphs: dict[Hashable, _Graph] = {}  # by batch shape
        self._pool: tuple[int, int] | None = None  # the graphs' shared memory (they replay one at a time)
        self._stream: torch.cuda.Stream | None = None

    def __call__(self, batch: Batch, negatives: tuple[Tensor, Tensor], lhs: Side, rhs: Side) -> StepResult:
        if not batch.lhs.is_cuda or self.failure is not None:
            return self.step(batch, negatives, lhs, rhs)
        tables = _tables_key(lhs, rhs)
        if tables != self._tables:  # a new bucket's tables: the graphs of the old ones are no use
            self._tables, self._graphs, self._pool = tables, {}, None
        entry = self._graphs.setdefault(_shape_key(batch, negatives), _Graph())
        entry.seen += 1
        if entry.graph is None:
            if entry.seen <= self.warmup_steps:
                return self._warm_up(batch, negatives, lhs, rhs)
            try:
                self._capture(entry, batch, negatives, lhs, rhs)
            except RuntimeError as error:  # nothing ran in the capture: this batch is still untrained
                self.failure = f"{type(error).__name__}: {error}"
                self._graphs, self._pool = {}, None
                warnings.warn(f"training.cuda_graphs: capturing the step failed, training without graphs ({self.failure})",
                              RuntimeWarning, stacklevel=2)
                return self.step(batch, negatives, lhs, rhs)
        else:
            for buffer, value in zip(entry.inputs, _tensors(batch, negatives)):
                if buffer is not None:
                    buffer.copy_(value)
        assert entry.graph is not None and entry.outputs is not None
        entry.graph.replay()
        self.replays += 1
        loss, shared_grads = entry.outputs
        # The loss buffer is overwritten by the next replay; the gradients are consumed before it.
        return loss.clone(), shared_grads

    def _side_stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        return self._stream

    def _warm_up(self, batch: Batch, negatives: tuple[Tensor, Tensor], lhs: Side, rhs: Side) -> StepResult:
        """An eager step on the capture stream, fenced by device synchronisations so that no
        tensor is used by two streams at once (as torch.cuda.make_graphed_callables warms up)."""
        torch.cuda.synchronize()
        with torch.cuda.stream(self._side_stream()):
            out = self.step(batch, negatives, lhs, rhs)
        torch.cuda.synchronize()
        return out

    def _capture(self, entry: _Graph, batch: Batch, negatives: tuple[Tensor, Tensor], lhs: Side, rhs: Side) -> None:
        """Capture the step into ``entry``'s new graph, its input buffers holding this batch
        (the replay that follows trains it)."""
        inputs = tuple(None if t is None else t.clone() for t in _tensors(batch, negatives))
        lhs_ids, rhs_ids, rel, weight, head_negatives, tail_negatives = inputs
        static_batch = dataclasses.replace(batch, lhs=lhs_ids, rhs=rhs_ids, rel=rel, weight=weight)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        # torch.cuda.graph's context, by hand: its exit skips restoring the stream when ending a
        # failed capture raises. thread_local: the trainer's loader thread may use CUDA meanwhile.
        with torch.cuda.stream(self._side_stream()):
            graph.capture_begin(pool=self._pool, capture_error_mode="thread_local")
            try:
                outputs = self.step(static_batch, (head_negatives, tail_negatives), lhs, rhs)
            finally:
                graph.capture_end()
        entry.graph, entry.inputs, entry.outputs = graph, inputs, outputs
        self.captures += 1


def _tensors(batch: Batch, negatives: tuple[Tensor, Tensor]) -> tuple[Tensor | None, ...]:
    """What a replay reads from outside the tables: the batch's columns and its negatives."""
    return (batch.lhs, batch.rhs, batch.rel, batch.weight, *negatives)


def _tables_key(lhs: Side, rhs: Side) -> Hashable:
    """The partitions' tables, by storage: a replay reads and writes those addresses."""
    tables = [t for _, state in (lhs, rhs) for t in (state.embeddings, state.adagrad)]
    return lhs[0], rhs[0], tuple((t.data_ptr(), t.shape) for t in tables)


def _shape_key(batch: Batch, negatives: tuple[Tensor, Tensor]) -> Hashable:
    return len(batch), batch.weight is not None, tuple(n.shape for n in negatives)
