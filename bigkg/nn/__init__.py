"""KGNN encoder layers: a message-passing base with quantized saved activations
and sparsified propagation underneath, and the layers built on it."""

from bigkg.nn.base import Linear, MessagePassing, segment_softmax
from bigkg.nn.encoder import ENCODERS, Encoder, EncoderSpec, build_encoder
from bigkg.nn.graph import EdgeSet, Graph, GraphError, Receivers, Subgraph
from bigkg.nn.layers import CompGCNLayer, Composition, LightGCNLayer, RGCNLayer

__all__ = [
    "ENCODERS",
    "CompGCNLayer",
    "Composition",
    "EdgeSet",
    "Encoder",
    "EncoderSpec",
    "Graph",
    "GraphError",
    "LightGCNLayer",
    "Linear",
    "MessagePassing",
    "RGCNLayer",
    "Receivers",
    "Subgraph",
    "build_encoder",
    "segment_softmax",
]
