"""Where a run's training stands: saved in every checkpoint's meta, so a resumed run goes on
from there (the epoch, its edge chunk and finished buckets, its sums, validations and early stopping)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bigkg.schedule import Bucket


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint's meta."""

    epoch: int = 0
    pass_index: int = 0  # the current pass over the buckets, counted over the whole run
    edge_chunks: int = 1  # chunks the epoch's buckets are split into (bigkg.edge_chunks); one pass each
    chunk: int = 0  # the chunk the current pass trains
    finished: list[Bucket] = field(default_factory=list)  # the current pass's trained buckets
    epoch_loss: float = 0.0
    epoch_edges: int = 0
    epoch_seconds: float = 0.0
    best_valid_mrr: float | None = None
    best_version: str | None = None  # the checkpoint version that scored best_valid_mrr
    best_epoch: int | None = None  # the epoch index of that validation
    restored_from: dict[str, Any] | None = None  # the best version, once made the final checkpoint
    initialised_from: dict[str, Any] | None = None  # model.init_from's source and what took its values
    stale_validations: int = 0
    stopped_early: bool = False
    steps: int = 0  # optimizer steps this process has taken (schedules such as weight pruning's ramp follow it)
    valid: list[dict[str, Any]] = field(default_factory=list)

    def where(self) -> str:
        """The epoch (and edge chunk) in progress, for logs: 'epoch 3' or 'epoch 3, edge chunk 2/4'."""
        chunk = f", edge chunk {self.chunk + 1}/{self.edge_chunks}" if self.edge_chunks > 1 else ""
        return f"epoch {self.epoch + 1}{chunk}"

    @property
    def last_chunk(self) -> bool:
        return self.chunk + 1 >= self.edge_chunks

    def next_chunk(self) -> None:
        """The pass's buckets are done: the next pass trains the next chunk."""
        self.pass_index, self.chunk, self.finished = self.pass_index + 1, self.chunk + 1, []

    def next_epoch(self) -> None:
        """The epoch's buckets are done: start the next one's counts."""
        self.epoch, self.pass_index, self.chunk, self.finished = self.epoch + 1, self.pass_index + 1, 0, []
        self.epoch_loss, self.epoch_edges, self.epoch_seconds = 0.0, 0, 0.0
        self.restored_from = None  # trained on: the last weights are no longer the restored ones

    def to_meta(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["finished"] = [list(b) for b in self.finished]
        return data

    @classmethod
    def from_meta(cls, data: dict[str, Any]) -> "Progress":
        """The progress saved by ``to_meta``; fields added since an older checkpoint take their defaults
        (a checkpoint older than edge chunks made one pass per epoch)."""
        data = {"pass_index": data["epoch"], **data}
        data["finished"] = [Bucket(*b) for b in data["finished"]]
        return cls(**data)
