"""Where a run's training stands: saved in every checkpoint's meta, so a resumed run goes on
from there (the epoch, its finished buckets, its sums, validations and early stopping)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bigkg.schedule import Bucket


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint's meta."""

    epoch: int = 0
    finished: list[Bucket] = field(default_factory=list)
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

    def next_epoch(self) -> None:
        """The epoch's buckets are done: start the next one's counts."""
        self.epoch, self.finished = self.epoch + 1, []
        self.epoch_loss, self.epoch_edges, self.epoch_seconds = 0.0, 0, 0.0
        self.restored_from = None  # trained on: the last weights are no longer the restored ones

    def to_meta(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["finished"] = [list(b) for b in self.finished]
        return data

    @classmethod
    def from_meta(cls, data: dict[str, Any]) -> "Progress":
        """The progress saved by ``to_meta``; fields added since an older checkpoint take their defaults."""
        data = dict(data)
        data["finished"] = [Bucket(*b) for b in data["finished"]]
        return cls(**data)
