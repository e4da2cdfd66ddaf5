"""Relation-aware layers on the message-passing base: CompGCN-style
composition, R-GCN with basis decomposition, and LightGCN/KGAT-style
weight-free or attentive aggregation for user-item graphs.

Relation ids run over [0, 2R) with reciprocal edges: r + R is the inverse of r.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from bigkg.config import COMPOSITIONS
from bigkg.indexing import gather_rows
from bigkg.nn.base import Linear, MessagePassing, probe_rows
from bigkg.nn.graph import GraphError, Receivers
from bigkg.sparsify import WeightPruner

Compose = Callable[[Tensor, Tensor], Tensor]


class Composition(nn.Module):
    """phi(x, z_r): ``mult`` (x * z_r, DistMult-like) or ``sub`` (x - z_r, TransE-like)."""

    def __init__(self, num_relations: int, dim: int, op: str = "mult") -> None:
        super().__init__()
        if op not in COMPOSITIONS:
            raise GraphError(f"composition must be one of {COMPOSITIONS}, got {op!r}")
        self.op = op
        init = torch.ones if op == "mult" else torch.zeros
        self.rel = nn.Parameter(init(num_relations, dim) + 0.1 * torch.randn(num_relations, dim))

    def forward(self, x: Tensor, rel_ids: Tensor) -> Tensor:
        z = gather_rows(self.rel, rel_ids)
        return x * z if self.op == "mult" else x - z

    def gain(self, probe: Tensor) -> Tensor:
        """sqrt(sum_p ||phi(x_p, z_r)||^2 / sum_p ||x_p||^2) per relation over the
        ``probe`` rows, in closed form: O(R d) instead of composing every pair."""
        z = self.rel.detach()
        total = probe.pow(2).sum()
        if self.op == "mult":
            energy = z.pow(2) @ probe.pow(2).sum(0)
        else:
            energy = total - 2 * (z @ probe.sum(0)) + probe.shape[0] * z.pow(2).sum(1)
        return (energy.clamp_min(0) / total.clamp_min(1e-30)).sqrt()


class CompGCNLayer(MessagePassing):
    """h_v = act(W_in sum_{in} a phi(x_u, r) + W_out sum_{out} a phi(x_u, r) + W_self x_v).

    ``compose`` is any callable ``compose(x_src, rel_ids)`` over [0, 2R) relation
    ids (a relation operator module of the decoder can be passed); by default a
    :class:`Composition` of its own. W_in and W_out (one parameter, the blocks
    of a linear map over [agg_in, agg_out]) are applied after aggregation,
    which is the same sum since each weight is shared by all edges of its
    direction. Each runs on the rows that receive messages of its direction
    only: with message pruning the others' aggregate is zero, so they get the
    bias alone. W_self is separate so that a leaf input (the embedding table)
    is saved by reference, not quantized.
    """

    channels = 2

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        num_relations: int,
        *,
        compose: Compose | None = None,
        op: str = "mult",
        weight_pruner: WeightPruner | None = None,
        activation: str = "tanh",
        **options: Any,
    ) -> None:
        super().__init__(activation=activation, **options)
        self.base_relations = num_relations
        self.compose = compose if compose is not None else Composition(2 * num_relations, dim_in, op)
        self.transform = Linear(2 * dim_in, dim_out, pruner=weight_pruner)
        self.self_loop = Linear(dim_in, dim_out, bias=False, pruner=weight_pruner)

    @property
    def _num_relations(self) -> int:
        return 2 * self.base_relations

    def message(self, x_src: Tensor, rel: Tensor) -> Tensor:
        return self.compose(x_src, rel)

    def channel(self, rel: Tensor) -> Tensor:
        return (rel >= self.base_relations).to(torch.int8)

    def fused_message(self) -> tuple[str, Tensor | None] | None:
        return (self.compose.op, self.compose.rel) if isinstance(self.compose, Composition) else None

    def relation_gain(self, x: Tensor) -> Tensor | None:
        if not isinstance(self.compose, Composition):
            return super().relation_gain(x)
        self._count(2 * self.compose.rel.numel())
        return self.compose.gain(probe_rows(x))

    def message_params(self) -> list[Tensor]:
        if isinstance(self.compose, nn.Module):
            return [p for p in self.compose.parameters() if p.requires_grad]
        return []

    def update(self, aggregated: Tensor, receivers: Receivers, x: Tensor) -> Tensor:
        own = self.self_loop(x, self.bits, self.counter)
        return self.activate(self.transform.add_rows(own, aggregated, receivers, self.bits, self.counter))


class RGCNLayer(MessagePassing):
    """h_v = act(sum_r sum_u a W_r x_u + W_0 x_v) with W_r = sum_b c_rb V_b.

    The bases are applied to nodes first (x V_b, node-level), so each message
    is a mix of B precomputed rows: B multiply-adds per entry.
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        num_relations: int,
        *,
        num_bases: int = 4,
        weight_pruner: WeightPruner | None = None,
        activation: str = "relu",
        **options: Any,
    ) -> None:
        super().__init__(activation=activation, **options)
        if num_bases < 1:
            raise GraphError(f"num_bases must be >= 1, got {num_bases}")
        self.base_relations = num_relations
        self.num_bases = num_bases
        self.dim_out = dim_out
        self.message_macs = num_bases
        self.bases = Linear(dim_in, num_bases * dim_out, bias=False, pruner=weight_pruner)
        self.coeff = nn.Parameter(torch.randn(2 * num_relations, num_bases) / math.sqrt(num_bases))
        self.self_loop = Linear(dim_in, dim_out, pruner=weight_pruner)

    @property
    def _num_relations(self) -> int:
        return 2 * self.base_relations

    def prepare(self, x: Tensor) -> Tensor:
        return self.bases(x, self.bits, self.counter)

    def message(self, x_src: Tensor, rel: Tensor) -> Tensor:
        mixed = x_src.view(-1, self.num_bases, self.dim_out)
        return torch.einsum("eb,ebk->ek", gather_rows(self.coeff, rel), mixed)

    def message_params(self) -> list[Tensor]:
        return [self.coeff]

    def _message_dim(self, h: Tensor) -> int:
        return self.dim_out

    def update(self, aggregated: Tensor, receivers: Receivers, x: Tensor) -> Tensor:
        return self.activate(receivers.add(self.self_loop(x, self.bits, self.counter), aggregated))


class LightGCNLayer(MessagePassing):
    """h_v = sum_u a_uv x_u with no weights (LightGCN), or with KGAT-style
    attention a_uv = softmax_u(<x_u * z_r, x_v> / sqrt(d)) when ``attentive``."""

    def __init__(self, dim: int, num_relations: int, *, attentive: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.attentive = attentive
        self.base_relations = num_relations
        self.scale = 1.0 / math.sqrt(dim)
        self.rel = nn.Parameter(torch.ones(2 * num_relations, dim) + 0.1 * torch.randn(2 * num_relations, dim)) if attentive else None

    @property
    def _num_relations(self) -> int:
        return 2 * self.base_relations

    def message(self, x_src: Tensor, rel: Tensor) -> Tensor:
        return x_src

    def fused_message(self) -> tuple[str, Tensor | None] | None:
        return ("copy", None)

    def attention(self, x_src: Tensor, x_dst: Tensor, rel: Tensor) -> Tensor:
        return (x_src * gather_rows(self.rel, rel) * x_dst).sum(1) * self.scale

    def relation_gain(self, x: Tensor) -> Tensor | None:
        return None

    def update(self, aggregated: Tensor, receivers: Receivers, x: Tensor) -> Tensor:
        return self.activate(receivers.expand(aggregated))
