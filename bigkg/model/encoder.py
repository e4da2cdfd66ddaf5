"""Entity encoders: what turns entity embeddings into the representations that are scored.

The shallow model's encoder is the identity ("none"). A KGNN encoder uses the
context — the bucket's partition tables and edges — to propagate messages and
returns new representations of the requested rows. Encoders register a factory
under a name with ``register_encoder`` and are chosen by ``model.encoder.name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from torch import Tensor, nn

from bigkg.config import ConfigError

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


class Encoder(nn.Module):
    name = ""

    def encode(self, entity_embeddings: Tensor, context: EncoderContext) -> Tensor:
        raise NotImplementedError


class IdentityEncoder(Encoder):
    """Shallow embeddings: the representation is the embedding itself."""

    name = "none"

    def encode(self, entity_embeddings: Tensor, context: EncoderContext) -> Tensor:
        return entity_embeddings


EncoderFactory = Callable[["Config", "Manifest"], Encoder]
_ENCODERS: dict[str, EncoderFactory] = {"none": lambda config, manifest: IdentityEncoder()}


def register_encoder(name: str, factory: EncoderFactory) -> None:
    _ENCODERS[name] = factory


def build_encoder(config: "Config", manifest: "Manifest") -> Encoder:
    name = config.model.encoder.name
    if name not in _ENCODERS:
        raise ConfigError(f"model.encoder.name: {name!r} is not allowed; choose one of {', '.join(sorted(_ENCODERS))}")
    return _ENCODERS[name](config, manifest)
