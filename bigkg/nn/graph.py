"""Edge sets for message passing: reciprocal edges, normalisation, compaction,
and L-hop neighbourhoods of a batch's entities with per-hop fan-out sampling.

Messages flow from ``src`` to ``dst``. A triple (h, r, t) gives the edge
h -> t with relation r and, with reciprocal relations, t -> h with relation
r + R, so every entity hears from both its heads and its tails.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from bigkg.errors import BigKGError

NORMS = ("sym", "mean", "none")


class GraphError(BigKGError):
    """Edges or neighbourhood settings that do not fit the graph."""


@dataclass(frozen=True)
class EdgeSet:
    """Edges over ``num_nodes`` local nodes; ``weight`` is the coefficient a_uv."""

    src: Tensor
    dst: Tensor
    rel: Tensor
    weight: Tensor
    num_nodes: int

    def __len__(self) -> int:
        return int(self.src.numel())

    def select(self, index: Tensor) -> "EdgeSet":
        """The compacted subset of edges at ``index``."""
        return EdgeSet(self.src[index], self.dst[index], self.rel[index], self.weight[index], self.num_nodes)

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.src, self.dst, self.rel, self.weight

    def receivers(self, channel: Tensor | None = None, channels: int = 1) -> "Receivers":
        """The aggregate rows these edges write to: one per destination and
        channel (``channel``: each edge's, in [0, channels)) with an edge."""
        n = self.num_nodes
        keys = receiver_keys(self.dst, channel, n)
        present, position = compact_ids(keys, channels * n)
        slot = positions(keys, position)
        if present is None:
            if channels == 1:
                return Receivers(None, slot, position, n, (0, n))
            present = torch.arange(channels * n, device=keys.device)
        bounds = torch.searchsorted(present, torch.arange(channels + 1, device=keys.device) * n)
        return Receivers(present % n, slot, position, n, tuple(bounds.tolist()))


def receiver_keys(dst: Tensor, channel: Tensor | None, num_nodes: int) -> Tensor:
    """Each edge's (channel, destination) as one id, channel-major."""
    return dst if channel is None else channel.long() * num_nodes + dst


def positions(ids: Tensor, position: Tensor | None) -> Tensor:
    """``ids`` mapped through a ``compact_ids`` position map (None: the identity)."""
    return ids if position is None else position[ids]


def compact_ids(ids: Tensor, n: int) -> tuple[Tensor | None, Tensor | None]:
    """The distinct values of ``ids`` (in [0, n)) in order, and the position
    of each value in [0, n) among them; (None, None) when all n occur."""
    present = torch.bincount(ids, minlength=n) > 0
    values = torch.nonzero(present).squeeze(1)  # its size is the one host sync
    if values.numel() == n:
        return None, None
    return values, torch.cumsum(present, 0) - 1


@dataclass(frozen=True)
class Receivers:
    """The rows of a compact aggregate: one per (channel, destination) that
    receives at least one edge, channel by channel, destinations in order.
    Aggregation writes only these rows, so node-level work on the aggregate
    (a neighbour transform) runs on them alone: after message pruning, a node
    none of whose messages in a channel were kept has a zero aggregate there."""

    rows: Tensor | None  # the node of each aggregate row; None: row i is node i (one channel, every node receives)
    slot: Tensor  # per edge, its aggregate row
    position: Tensor | None  # the aggregate row of each receiver key (``slot`` without the edges); None: the key itself
    num_nodes: int
    bounds: tuple[int, ...]  # channel c's aggregate rows are bounds[c]:bounds[c + 1]

    def __len__(self) -> int:
        return self.bounds[-1]

    def parts(self) -> list[slice]:
        """The aggregate rows of each channel."""
        return [slice(a, b) for a, b in zip(self.bounds, self.bounds[1:])]

    def add(self, base: Tensor, values: Tensor, bias: Tensor | None = None) -> Tensor:
        """``base`` [num_nodes, k] plus each compact row of ``values`` at its
        node's row (a node's channels add up), plus ``bias`` on every row."""
        if self.rows is None:
            out = base + values
            return out if bias is None else out + bias
        return _AddRows.apply(base, self.rows, values, bias)

    def expand(self, values: Tensor) -> Tensor:
        """The compact ``values`` as all ``num_nodes`` rows, zero where nothing is received."""
        return self.add(values.new_zeros(self.num_nodes, values.shape[1]), values)


class _AddRows(torch.autograd.Function):
    """(base + bias).index_add(0, rows, values) in one new tensor, saving only
    ``rows`` (torch's index_add also keeps ``values``, and is slower out of place)."""

    @staticmethod
    def forward(ctx, base, rows, values, bias):  # type: ignore[override]
        ctx.save_for_backward(rows)
        out = base.clone() if bias is None else base + bias
        return out.index_add_(0, rows, values)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        grad_bias = grad.sum(0) if ctx.needs_input_grad[3] else None
        return grad, None, grad.index_select(0, rows), grad_bias


@dataclass(frozen=True)
class Subgraph:
    """A neighbourhood: ``nodes`` (global ids; row k of the layer input is node
    ``nodes[k]``; the distinct requested nodes come first, ascending), its edges
    in local ids, and the local row of each requested node."""

    nodes: Tensor
    edges: EdgeSet
    index: Tensor


class Graph:
    """A bucket's edges, sorted by destination for neighbourhood extraction."""

    def __init__(
        self,
        heads: Tensor,
        rels: Tensor,
        tails: Tensor,
        num_nodes: int,
        num_relations: int,
        *,
        reciprocal: bool = True,
        norm: str = "sym",
    ) -> None:
        if norm not in NORMS:
            raise GraphError(f"edge norm must be one of {NORMS}, got {norm!r}")
        heads, rels, tails = (t.reshape(-1).long() for t in (heads, rels, tails))
        if not heads.numel() == rels.numel() == tails.numel():
            raise GraphError("heads, relations and tails must have the same length")
        for name, ids, bound in (("head", heads, num_nodes), ("tail", tails, num_nodes), ("relation", rels, num_relations)):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= bound):
                raise GraphError(f"{name} ids must lie in [0, {bound}), got range [{int(ids.min())}, {int(ids.max())}]")
        self.num_nodes = num_nodes
        self.base_relations = num_relations
        self.num_relations = 2 * num_relations if reciprocal else num_relations
        if reciprocal:
            src = torch.cat([heads, tails])
            dst = torch.cat([tails, heads])
            rel = torch.cat([rels, rels + num_relations])
        else:
            src, dst, rel = heads, tails, rels
        order = torch.argsort(dst, stable=True)
        self.src, self.dst, self.rel = src[order], dst[order], rel[order]
        in_degree = torch.bincount(self.dst, minlength=num_nodes)
        # On the edges' device: ``to`` keeps a graph that is already there as it is.
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=self.dst.device)
        self.rowptr[1:] = torch.cumsum(in_degree, 0)
        deg = in_degree.clamp_min(1).float()
        if norm == "sym":
            self.weight = (deg[self.src] * deg[self.dst]).rsqrt()
        elif norm == "mean":
            self.weight = deg[self.dst].reciprocal()
        else:
            self.weight = torch.ones(self.src.numel(), device=self.src.device)

    def __len__(self) -> int:
        return int(self.src.numel())

    def edges(self) -> EdgeSet:
        """Every edge, for full-graph propagation."""
        return EdgeSet(self.src, self.dst, self.rel, self.weight, self.num_nodes)

    @property
    def device(self) -> torch.device:
        return self.src.device

    def to(self, device: torch.device | str) -> "Graph":
        """This graph with its tensors on ``device`` (itself when already there):
        propagation and neighbourhoods run where the embeddings are."""
        device = torch.device(device)
        if self.device == device:
            return self
        moved = copy.copy(self)
        for name in ("src", "dst", "rel", "weight", "rowptr"):
            setattr(moved, name, getattr(self, name).to(device))
        return moved

    def neighbourhood(
        self,
        seeds: Tensor,
        hops: int,
        fanouts: Sequence[int | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> Subgraph:
        """The ``hops``-hop in-neighbourhood of ``seeds``.

        Hop h keeps at most ``fanouts[h]`` incoming edges per node (None: all),
        sampled uniformly. With no sampling, the encoder's output for the seeds
        equals full-graph propagation, since every edge that can reach a seed
        within ``hops`` layers is included.
        """
        if fanouts is not None and len(fanouts) != hops:
            raise GraphError(f"fanouts has {len(fanouts)} entries but the encoder has {hops} layers")
        seeds = seeds.reshape(-1).long()
        # Checked on the CPU only: on a GPU the check would cost a host sync per batch,
        # and indexing ``local`` below asserts the range on the device anyway.
        if seeds.device.type == "cpu" and seeds.numel() and (int(seeds.min()) < 0 or int(seeds.max()) >= self.num_nodes):
            raise GraphError(f"node ids must lie in [0, {self.num_nodes})")
        unique, inverse = torch.unique(seeds, return_inverse=True)
        dev = self.device
        local = torch.full((self.num_nodes,), -1, dtype=torch.long, device=dev)
        local[unique] = torch.arange(unique.numel(), device=dev)
        nodes = [unique]
        count = unique.numel()
        frontier = unique
        picked = []
        reached = torch.empty(self.num_nodes, dtype=torch.bool, device=dev)
        for hop in range(hops):
            if frontier.numel() == 0:
                break
            eids = self._incoming(frontier, None if fanouts is None else fanouts[hop], generator)
            picked.append(eids)
            # The sources not yet numbered, ascending: a flag per node and one nonzero
            # (one host sync; a unique and a mask took two, and sorted the sources).
            reached.zero_()[self.src[eids]] = True
            new = torch.nonzero(reached.logical_and_(local < 0)).squeeze(1)
            local[new] = torch.arange(count, count + new.numel(), device=dev)
            count += new.numel()
            nodes.append(new)
            frontier = new
        eids = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long, device=dev)
        edges = EdgeSet(local[self.src[eids]], local[self.dst[eids]], self.rel[eids], self.weight[eids], count)
        return Subgraph(torch.cat(nodes), edges, inverse)

    def _incoming(self, nodes: Tensor, fanout: int | None, generator: torch.Generator | None) -> Tensor:
        starts = self.rowptr[nodes]
        counts = self.rowptr[nodes + 1] - starts
        dev = self.device
        group = torch.repeat_interleave(torch.arange(nodes.numel(), device=dev), counts)
        group_start = torch.cumsum(counts, 0) - counts
        eids = starts[group] + torch.arange(group.numel(), device=dev) - group_start[group]
        if fanout is None or group.numel() == 0 or int(counts.max()) <= fanout:
            return eids
        # Random order inside each node's group; keep the first `fanout`.
        key = group.double() + torch.rand(group.numel(), generator=generator, dtype=torch.float64, device=dev)
        order = torch.argsort(key)
        rank = torch.arange(group.numel(), device=dev) - group_start[group[order]]
        return eids[order[rank < fanout]]
