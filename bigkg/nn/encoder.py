"""An encoder stacks L message-passing layers over a bucket's edges.

``forward`` propagates over a whole edge set; ``encode`` gives representations
for a batch's entities, propagating over their L-hop neighbourhood (optionally
fan-out sampled), or over the whole graph when it is small. Kept edges of
layer l (after message pruning) are the input edges of layer l + 1.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bigkg.config import COMBINES, GRAPH_ENCODERS, EncoderConfig
from bigkg.nn.base import Linear, MessagePassing, check_save_mode
from bigkg.nn.graph import EdgeSet, Graph, GraphError
from bigkg.nn.layers import CompGCNLayer, Compose, LightGCNLayer, RGCNLayer
from bigkg.sparsify import MacCounter, MessagePruner, WeightPruner

ENCODERS = GRAPH_ENCODERS


class Encoder(nn.Module):
    def __init__(
        self,
        layers: Sequence[MessagePassing],
        *,
        residual: bool = False,
        combine: str = "last",
        full_graph_max_nodes: int = 50_000,
        fanouts: Sequence[int | None] | None = None,
    ) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise GraphError(f"combine must be one of {COMBINES}, got {combine!r}")
        if fanouts is not None and len(fanouts) != len(layers):
            raise GraphError(f"fanouts has {len(fanouts)} entries for {len(layers)} layers")
        self.layers = nn.ModuleList(layers)
        for depth, layer in enumerate(self.layers):
            layer.depth = depth
        self.residual = residual
        self.combine = combine
        self.full_graph_max_nodes = full_graph_max_nodes
        self.fanouts = None if fanouts is None else list(fanouts)
        self.counter = MacCounter()
        for layer in self.layers:
            layer.counter = self.counter
        self.kept_edges: list[int] = []  # edges each layer aggregated over, last call
        # set every step: found once (layers share a pruner between their maps)
        self._weight_pruners = list({id(m.pruner): m.pruner for m in self.modules()
                                     if isinstance(m, Linear) and m.pruner is not None}.values())

    def forward(self, x: Tensor, edges: EdgeSet) -> Tensor:
        """Representations of all ``edges.num_nodes`` rows of ``x``."""
        outputs = [x]
        h = x
        self.kept_edges = []
        for layer in self.layers:
            out, edges = layer(h, edges)
            self.kept_edges.append(len(edges))
            h = out + h if self.residual and out.shape == h.shape else out
            outputs.append(h)
        if self.combine == "mean":
            return torch.stack(outputs).mean(0)
        return h

    def set_training_step(self, step: int) -> None:
        """Every weight pruner's schedule is at training step ``step``."""
        for pruner in self._weight_pruners:
            pruner.steps = step

    def encode(
        self,
        embeddings: Tensor,
        graph: Graph,
        nodes: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Representations of ``nodes`` (all nodes if None) from the graph's
        entity ``embeddings`` [num_nodes, d]: full-graph propagation when the
        graph has at most ``full_graph_max_nodes`` nodes, else over the nodes'
        L-hop neighbourhood with the encoder's fan-outs."""
        if embeddings.shape[0] != graph.num_nodes:
            raise GraphError(f"{embeddings.shape[0]} embedding rows for a graph of {graph.num_nodes} nodes")
        if embeddings.device != graph.device:
            raise GraphError(f"embeddings on {embeddings.device} but the graph on {graph.device}: move the graph with Graph.to")
        if nodes is None or graph.num_nodes <= self.full_graph_max_nodes:
            out = self(embeddings, graph.edges())
            return out if nodes is None else out[nodes]
        sub = graph.neighbourhood(nodes, len(self.layers), self.fanouts, generator)
        return self(embeddings[sub.nodes], sub.edges)[sub.index]

    def encode_rows(
        self,
        table: Tensor,
        nodes: Tensor,
        rows: Tensor,
        graph: Graph,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Representations of the distinct ``nodes`` (ascending) whose inputs are
        ``rows`` (differentiable); every other node's input is its row of
        ``table`` (a constant). Over a neighbourhood, only the table rows the
        neighbourhood reaches are read: no copy of the table is made."""
        # Checked on the CPU only: on a GPU it would cost a host sync per batch.
        if nodes.device.type == "cpu" and nodes.numel() > 1 and not bool((nodes[1:] > nodes[:-1]).all()):
            raise GraphError("encode_rows needs distinct nodes in ascending order (torch.unique gives them)")
        if graph.num_nodes <= self.full_graph_max_nodes:
            return self(table.index_copy(0, nodes, rows), graph.edges())[nodes]
        sub = graph.neighbourhood(nodes, len(self.layers), self.fanouts, generator)
        # A neighbourhood lists its distinct seeds first, in ascending order: ``nodes`` itself.
        x = torch.cat([rows, table[sub.nodes[nodes.numel():]]])
        return self(x, sub.edges)[: nodes.numel()]


# The spec is the config section itself: one definition of the options, their
# defaults and their checks (``bigkg/config.py``); its default name is "none",
# so a spec built here names its encoder.
EncoderSpec = EncoderConfig


def build_encoder(spec: EncoderSpec, dim: int, num_relations: int, compose: Compose | None = None) -> Encoder:
    """An encoder over ``num_relations`` base relations (reciprocals added) at width ``dim``."""
    if spec.name not in ENCODERS:
        raise GraphError(f"model.encoder.name must be one of {ENCODERS}, got {spec.name!r}")
    if spec.layers < 1:
        raise GraphError(f"model.encoder.layers must be >= 1, got {spec.layers}")
    check_save_mode(spec.quantize_bits)
    pruner = None
    if spec.message_thresholds or spec.message_targets:
        pruner = MessagePruner(deltas=spec.message_thresholds, targets=spec.message_targets)
    common = dict(bits=spec.quantize_bits, pruner=pruner, exact_norms=spec.exact_message_norms, fused=spec.fused_kernels, dropout=spec.dropout)
    if spec.activation is not None:
        common["activation"] = spec.activation
    layers: list[MessagePassing] = []
    for _ in range(spec.layers):
        weights = None
        if spec.weight_threshold > 0 or spec.weight_target > 0:
            weights = WeightPruner(spec.weight_threshold, spec.weight_target, spec.weight_ramp_steps)
        if spec.name == "compgcn":
            layers.append(CompGCNLayer(dim, dim, num_relations, compose=compose, op=spec.composition, weight_pruner=weights, **common))
        elif spec.name == "rgcn":
            layers.append(RGCNLayer(dim, dim, num_relations, num_bases=spec.num_bases, weight_pruner=weights, **common))
        else:
            layers.append(LightGCNLayer(dim, num_relations, attentive=spec.name == "kgat", **common))
    combine = spec.combine or ("mean" if spec.name in ("lightgcn", "kgat") else "last")
    return Encoder(
        layers,
        residual=spec.residual,
        combine=combine,
        full_graph_max_nodes=spec.full_graph_max_nodes,
        fanouts=spec.fanouts,
    )
