"""A tally of the forward multiply-adds the encoder actually executed, by category.

Backward work is proportional (about twice the forward per category), so
forward counts compare configurations without double bookkeeping.
"""

from __future__ import annotations


class MacCounter:
    """Categories used by the encoder: ``propagation`` (per-edge work: messages,
    attention, scatter, and the scores that decide pruning) and ``transform``
    (dense products with layer weights)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, category: str, macs: int) -> None:
        self.counts[category] = self.counts.get(category, 0) + int(macs)

    def __getitem__(self, category: str) -> int:
        return self.counts.get(category, 0)

    def reset(self) -> None:
        self.counts.clear()

    @property
    def total(self) -> int:
        return sum(self.counts.values())
