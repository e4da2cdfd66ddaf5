"""Entity encoders: what turns entity embeddings into the representations that are scored.

The shallow model's encoder is the identity ("none"). A KGNN encoder uses the
context — the bucket's partition tables and edges — to propagate messages and
returns new representations of the requested rows. ``model.encoder.name``
chooses the encoder: "none", or one of the graph encoders of ``bigkg.nn``,
built from the rest of the ``model.encoder`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from bigkg.config import Config
    from bigkg.format import Manifest


@dataclass
class EncoderContext:
    """What an encoder may use besides the embedding rows it is given.

    ``rows`` are the local ids (in ``table``) of the rows passed to ``encode``;
    ``table`` is the whole partition of ``entity_type`` (no gradient);
    ``edges`` = (lhs, rhs, rel) local ids of the current bucket's training edges
    when training, None at evaluation.
    """

    entity_type: str
    partition: int
    rows: Tensor
    table: Tensor
    edges: tuple[Tensor, Tensor, Tensor] | None = None

    def rows_are_the_table(self) -> bool:
        """Whether ``rows`` are every row of ``table``, in order (a whole-partition request)."""
        n = self.table.shape[0]
        return self.rows.numel() == n and bool(torch.equal(self.rows, torch.arange(n, device=self.rows.device)))


class Encoder(nn.Module):
    name = ""

    def encode(self, entity_embeddings: Tensor, context: EncoderContext) -> Tensor:
        raise NotImplementedError

    def set_training_step(self, step: int) -> None:
        """Training is at optimizer step ``step`` (from 0, counted across resumes), for
        schedules that follow it; called before each step's forward pass."""

    def whole_partition(self, entity_type: str, partition: int) -> bool:
        """Whether a training step should encode this partition once per batch,
        as one leaf of all its rows, and index the requested rows from it
        (an encoder that propagates over the whole partition anyway); False:
        each request is its own leaf and its own ``encode``."""
        return False


class IdentityEncoder(Encoder):
    """Shallow embeddings: the representation is the embedding itself."""

    name = "none"

    def encode(self, entity_embeddings: Tensor, context: EncoderContext) -> Tensor:
        return entity_embeddings


def build_encoder(config: "Config", manifest: "Manifest") -> Encoder:
    """The encoder ``config.model.encoder`` describes (its values are checked when the config loads)."""
    if config.model.encoder.name == "none":
        return IdentityEncoder()
    from bigkg.nn.model_encoder import GraphEncoder  # here: bigkg.nn builds on this module

    return GraphEncoder(config.model.encoder, Path(config.dataset), manifest, config.model.dim)
