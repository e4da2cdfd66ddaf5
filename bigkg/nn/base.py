"""The message-passing base: layers state ``message``, optionally ``attention``
and ``update``; the base owns gather, normalisation, attention softmax, scatter,
message pruning with edge compaction, and how activations are saved.

``bits`` picks the saving policy for everything the layer does:
0 is plain autograd (every intermediate kept in float32, including [E, d]
edge tensors); 32 routes through our Functions with exact float copies of
node-level tensors only; 1, 2, 4, 8 store those copies as b-bit codes. With
``bits`` > 0 the edge stage runs as the fused kernel when the message is
elementwise (``fused_message``), else as a recomputed torch function.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bigkg import quant
from bigkg.config import ACTIVATIONS, QUANTIZE_BITS
from bigkg.nn import kernels
from bigkg.nn.graph import EdgeSet, GraphError, Receivers
from bigkg.sparsify import MacCounter, MessagePruner, WeightPruner, feature_scale

_PROBE_ROWS = 32


def check_save_mode(bits: int) -> int:
    if bits not in QUANTIZE_BITS:
        raise GraphError(f"quantize_bits must be one of {QUANTIZE_BITS} (0 = off, 32 = exact node-level), got {bits!r}")
    return bits


class Linear(nn.Module):
    """A linear map whose saved input follows the layer's ``bits`` and whose
    weight entries may be pruned by a :class:`WeightPruner`."""

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True, pruner: WeightPruner | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim_out, dim_in))
        self.bias = nn.Parameter(torch.zeros(dim_out)) if bias else None
        nn.init.xavier_uniform_(self.weight)
        self.pruner = pruner
        self.register_buffer("mask", torch.ones(dim_out, dim_in, dtype=torch.bool), persistent=False)

    def forward(self, x: Tensor, bits: int, counter: MacCounter | None) -> Tensor:
        return quant.linear(x, self._weight([x]), self.bias, bits or quant.EXACT, counter)

    def add_rows(self, base: Tensor, x: Tensor, receivers: Receivers, bits: int, counter: MacCounter | None) -> Tensor:
        """``base`` plus this map of the full aggregate [agg_0, agg_1, ...]
        (one column block per channel), given as its compact rows ``x``: each
        channel's rows meet only its block of the weight, and a node that
        receives nothing gets the bias alone."""
        width = x.shape[1]
        parts = receivers.parts()
        weight = self._weight([x[p] for p in parts], receivers.num_nodes)
        blocks = [
            quant.linear(x[p], weight[:, c * width : (c + 1) * width], None, bits or quant.EXACT, counter)
            for c, p in enumerate(parts)
            if p.stop > p.start  # a channel that no edge reaches adds nothing
        ]
        values = torch.cat(blocks) if blocks else x.new_zeros(0, weight.shape[0])
        return receivers.add(base, values, self.bias)

    def _weight(self, inputs: list[Tensor], rows: int | None = None) -> Tensor:
        """The weight with its pruned entries zeroed. In training the mask
        follows the scale of the input features, given as column blocks
        ``inputs`` of ``rows`` rows (their missing rows are zero)."""
        if self.pruner is None:
            return self.weight
        if self.training:
            scale = torch.cat([feature_scale(x, rows) for x in inputs])
            self.mask = self.pruner.mask(self.weight, scale)
        return self.weight * self.mask

    @property
    def density(self) -> float:
        return float(self.mask.float().mean())


class MessagePassing(nn.Module):
    """Base of relation-aware message-passing layers.

    Subclasses define ``message(x_src, rel) -> [E, k]`` and
    ``update(agg, receivers, x)``, where ``agg`` holds the receiving rows only;
    optionally ``prepare(x)`` (a node-level transform before propagation),
    ``attention(x_src, x_dst, rel) -> [E]`` logits (set ``attentive``),
    ``channel(rel)`` with ``channels > 1`` (aggregate edge groups, e.g.
    directions, into separate blocks), ``message_macs`` (multiply-adds per
    message entry) and ``relation_gain(x)`` for pruning scores.
    """

    channels = 1
    attentive = False
    message_macs = 1

    def __init__(
        self,
        *,
        bits: int = 0,
        pruner: MessagePruner | None = None,
        exact_norms: bool = False,
        fused: bool = True,
        activation: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise GraphError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise GraphError(f"dropout must be in [0, 1), got {dropout}")
        self.bits = check_save_mode(bits)
        self.pruner = pruner
        self.exact_norms = exact_norms
        self.fused = fused
        self.activation = activation
        self.dropout = dropout
        self.depth = 0  # position in the encoder, for per-layer pruning thresholds
        self.counter: MacCounter | None = None

    # -- what subclasses state -------------------------------------------------
    def message(self, x_src: Tensor, rel: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, aggregated: Tensor, receivers: Receivers, x: Tensor) -> Tensor:
        raise NotImplementedError

    def prepare(self, x: Tensor) -> Tensor:
        return x

    def attention(self, x_src: Tensor, x_dst: Tensor, rel: Tensor) -> Tensor:
        raise NotImplementedError

    def channel(self, rel: Tensor) -> Tensor:
        raise NotImplementedError

    def fused_message(self) -> tuple[str, Tensor | None] | None:
        """(op, z) when the message is elementwise (``kernels.OPS``), for the fused kernel."""
        return None

    def message_params(self) -> list[Tensor]:
        """Tensors read by ``message``/``attention`` that need gradients."""
        return [p for p in self.parameters() if p.requires_grad]

    def relation_gain(self, x: Tensor) -> Tensor | None:
        """Estimated ||message(x_u, r)|| / ||x_u|| per relation (None: exactly 1).

        Measured on a fixed probe of rows of ``x`` so that pruning scores cost
        O(1) per edge; exact for norm-preserving messages.
        """
        probe = probe_rows(x)
        num_rel = self._num_relations
        rel = torch.arange(num_rel, device=x.device).repeat_interleave(probe.shape[0])
        out = self.message(probe.repeat(num_rel, 1), rel).view(num_rel, probe.shape[0], -1)
        if self.counter is not None:
            self.counter.add("propagation", out.numel() * self.message_macs)
        ratio = out.pow(2).sum((1, 2)) / probe.pow(2).sum().clamp_min(1e-30)
        return ratio.sqrt()

    # -- what the base does ----------------------------------------------------
    def forward(self, x: Tensor, edges: EdgeSet) -> tuple[Tensor, EdgeSet]:
        """The layer output for all ``edges.num_nodes`` rows, and the kept edges."""
        if x.shape[0] != edges.num_nodes:
            raise GraphError(f"layer input has {x.shape[0]} rows but the edge set has {edges.num_nodes} nodes")
        h = self.prepare(x)
        kept = self.prune(h, edges)
        aggregated, receivers = self.aggregate(h, kept)
        return self.update(aggregated, receivers, x), kept

    def prune(self, h: Tensor, edges: EdgeSet) -> EdgeSet:
        if self.pruner is None or len(edges) == 0:
            return edges
        with torch.no_grad():
            norms = self.message_norms(h, edges)
        return edges.select(self.pruner.keep(norms, self.depth))

    def message_norms(self, h: Tensor, edges: EdgeSet) -> Tensor:
        """||a_uv m_uv|| per edge: exact (computing every message) or estimated
        as a_uv * ||h_u|| * gain(r) at O(1) per edge."""
        if self.exact_norms:
            m = self.message(h[edges.src], edges.rel)
            self._count(len(edges) * m.shape[1] * (self.message_macs + 1))
            return m.norm(dim=1) * edges.weight.abs()
        node = h.norm(dim=1)
        self._count(h.numel() + 2 * len(edges))
        score = node[edges.src] * edges.weight.abs()
        gain = self.relation_gain(h)
        return score if gain is None else score * gain[edges.rel]

    def aggregate(self, h: Tensor, edges: EdgeSet) -> tuple[Tensor, Receivers]:
        """Sum of a_uv * message over the (compacted) edges into each
        destination and channel, for the receiving rows only (``Receivers``)."""
        k = self._message_dim(h)
        per_entry = self.message_macs + 2 + (2 if self.attentive else 0)
        self._count(len(edges) * k * per_entry)
        channel = self.channel(edges.rel) if self.channels > 1 else None
        receivers = edges.receivers(channel, self.channels)
        tensors = (*edges.tensors(), receivers.slot)
        stage = functools.partial(self._edge_stage, rows=len(receivers))
        if self.bits == 0:
            return stage(h, *tensors), receivers
        fused = self.fused_message() if self.fused and not self.attentive and kernels.fusable(h) else None
        if fused is not None:
            op, z = fused
            return kernels.fused_edge_stage(h, z, edges, channel, receivers, op, self.bits), receivers
        return quant.recompute(stage, h, tensors, self.message_params(), self.bits), receivers

    def _edge_stage(self, h: Tensor, src: Tensor, dst: Tensor, rel: Tensor, weight: Tensor, slot: Tensor, *, rows: int) -> Tensor:
        """Messages of ``src`` rows summed into aggregate row ``slot`` of each
        edge (``dst`` is the destination in ``h``, read by attention)."""
        x_src = h[src]
        m = self.message(x_src, rel)
        coef = weight
        if self.attentive:
            coef = segment_softmax(self.attention(x_src, h[dst], rel), slot, rows)
        m = m * coef.unsqueeze(1)
        return m.new_zeros(rows, m.shape[1]).scatter_add(0, slot.unsqueeze(1).expand_as(m), m)

    def activate(self, x: Tensor) -> Tensor:
        if self.activation == "relu":
            x = quant.relu(x) if self.bits else torch.relu(x)
        elif self.activation == "tanh":
            x = quant.tanh(x, self.bits) if self.bits else torch.tanh(x)
        if self.bits:
            return quant.dropout(x, self.dropout, self.training)
        return F.dropout(x, self.dropout, self.training)

    def _count(self, macs: int) -> None:
        if self.counter is not None:
            self.counter.add("propagation", macs)

    def _message_dim(self, h: Tensor) -> int:
        return h.shape[1]

    @property
    def _num_relations(self) -> int:
        raise NotImplementedError


def probe_rows(x: Tensor) -> Tensor:
    """The fixed rows on which relation gains are measured."""
    return x[: min(_PROBE_ROWS, x.shape[0])]


def segment_softmax(logits: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """Softmax of ``logits`` within each group of equal ``segment`` ids."""
    top = logits.new_full((num_segments,), -math.inf)
    top = top.scatter_reduce(0, segment, logits.detach(), reduce="amax", include_self=True)
    e = (logits - top[segment]).exp()
    total = e.new_zeros(num_segments).scatter_add(0, segment, e)
    return e / total[segment]
