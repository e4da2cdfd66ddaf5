"""The model: relation operators, comparators, regularisers, encoders and KGModel."""

from bigkg.model.encoder import Encoder, EncoderContext, IdentityEncoder, build_encoder
from bigkg.model.model import KGModel, build_model

__all__ = [
    "Encoder",
    "EncoderContext",
    "IdentityEncoder",
    "KGModel",
    "build_encoder",
    "build_model",
]
