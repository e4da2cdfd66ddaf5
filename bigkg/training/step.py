"""One optimisation step on a batch of positive edges of one relation group.

Vectorised per chunk: entity rows are gathered once (deduplicated), scored with
one batched matrix product per side, and only the gathered rows are updated.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from bigkg.checkpoint import PartitionKey, PartitionState, Side
from bigkg.config import TrainingConfig
from bigkg.model import EncoderContext, IdentityEncoder, KGModel
from bigkg.negatives import ChunkPlan, chunk_positive_index, uniform_negatives
from bigkg.optim import RowAdagrad
from bigkg.training.closed_form import ChunkGradients, softmax_dot_gradients, softmax_query_gradients, supports_closed_form
from bigkg.training.foreign import ForeignSample
from bigkg.training.graphed import GraphedStep

LossFn = Callable[[Tensor, Tensor, float], Tensor]


@dataclass
class Batch:
    lhs: Tensor  # [B] local ids in the lhs partition
    rhs: Tensor  # [B] local ids in the rhs partition
    rel: Tensor  # [B]
    weight: Tensor | None  # [B]

    def __len__(self) -> int:
        return int(self.lhs.shape[0])

    def rows(self, index: slice | Tensor) -> "Batch":
        return Batch(self.lhs[index], self.rhs[index], self.rel[index], None if self.weight is None else self.weight[index])


class _Rows:
    """Embedding rows of one partition gathered for a batch, as leaves that collect gradients.

    Each request (positives, uniform negatives, or the whole partition) is its
    own leaf, so the backward pass scatters nothing; gradients of repeated rows
    are summed once, by the row optimizer. When the encoder propagates over the
    whole partition, the partition is encoded once, as one leaf, and every
    request indexes that: one propagation per side and batch, and the
    requested rows' neighbours get their gradients too.
    """

    def __init__(self, key: PartitionKey, state: PartitionState, model: KGModel, edges):
        self.key, self.state, self.model, self.edges = key, state, model, edges
        self.ids: list[Tensor] = []
        self.leaves: list[Tensor] = []
        self.whole: Tensor | None = None
        if model.encoder.whole_partition(*key):
            self.whole = self._encode(None)

    def take(self, ids: Tensor | None) -> Tensor:
        """Representations of rows ``ids`` (every row when None)."""
        if self.whole is None:
            return self._encode(ids)
        return self.whole if ids is None else self.whole.index_select(0, ids)

    def take_candidates(self, positives: Tensor, positive_ids: Tensor, negative_ids: Tensor) -> Tensor:
        """[nc, c + u, d]: each chunk's positives (rows ``positives`` [nc, c, d], ids
        ``positive_ids`` [nc, c]) followed by its negatives ``negative_ids`` [nc, u].

        Where a row costs only a lookup, the chunk's candidates are gathered anew
        as one leaf: concatenating them from the positives' rows would cost a
        copy forward, and copies and an addition of the positives' gradient
        backward. Rows encoded per request reuse the positives' encoding.
        """
        if negative_ids.shape[1] == 0:
            return positives
        if self.whole is None and not isinstance(self.model.encoder, IdentityEncoder):
            negatives = self.take(negative_ids.flatten()).view(*negative_ids.shape, -1)
            return torch.cat([positives, negatives], 1)
        ids = torch.cat([positive_ids, negative_ids], 1)
        return self.take(ids.flatten()).view(*ids.shape, -1)

    def _encode(self, ids: Tensor | None) -> Tensor:
        table = self.state.embeddings
        if ids is None:
            ids = torch.arange(table.shape[0], device=table.device)
            leaf = table.detach().requires_grad_()
        else:
            leaf = table.index_select(0, ids).requires_grad_()
        self.ids.append(ids)
        self.leaves.append(leaf)
        return self.model.encode(leaf, EncoderContext(self.key[0], self.key[1], ids, table, self.edges))


class BatchStep:
    """Forward, backward and updates for one batch; returns the detached loss.

    Gradients are taken with ``torch.autograd.grad`` (nothing accumulates in
    ``.grad``), so several threads may run steps on the same partitions
    (Hogwild); the shared optimizer step is serialised by a lock.
    """

    def __init__(
        self,
        model: KGModel,
        loss_fn: LossFn,
        config: TrainingConfig,
        row_optimizer: RowAdagrad,
        shared_optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
        side_weights: Tensor | None = None,
        *,
        all_rows: Tensor | None = None,
    ):
        """``side_weights`` [relations, 2]: per relation, the weights of its tail- and
        head-prediction losses (``bigkg.training.builders.build_side_weights``); None: 1 and 1.
        ``all_rows`` [relations] bool: the relations whose edges are scored against every row
        of the partition (``build_all_rows_relations``); None: ``config.negatives`` for all."""
        self.model = model
        self.side_weights = side_weights
        self.all_rows = all_rows
        # Whether any relation trains its tail- and its head-prediction loss: a side that none
        # trains is not scored against every row ('all') nor given uniform negatives.
        self.trains = (True, True) if side_weights is None else tuple(bool(side_weights[:, k].any()) for k in (0, 1))
        self.tail_uniform, self.head_uniform = (config.num_uniform_negatives if on else 0 for on in self.trains)
        self.loss_fn = loss_fn
        self.config = config
        self.row_optimizer = row_optimizer
        self.shared_optimizer = shared_optimizer
        self.shared_params = [p for group in shared_optimizer.param_groups for p in group["params"]] if shared_optimizer else []
        self.generator = generator
        self.shared_lock = threading.Lock()
        self.closed_form = supports_closed_form(model, config)
        # One worker only: Hogwild threads would replay one graph's buffers at once.
        self.graphs = GraphedStep(self._closed_form_step) if self.closed_form and config.cuda_graphs and config.workers == 1 else None
        self.steps = 0  # steps taken, resumed from the checkpoint's progress; the encoder's schedules follow it

    def __call__(
        self,
        batch: Batch,
        lhs: Side,
        rhs: Side,
        edges: tuple[Tensor, Tensor, Tensor] | None = None,
        generator: torch.Generator | None = None,
        foreign: tuple[ForeignSample, ForeignSample] | None = None,
    ) -> Tensor:
        """``foreign``: (head, tail) candidates from partitions not in memory, scored as
        extra negatives of every positive; their gradients are added to the samples."""
        cfg = self.config
        self.model.encoder.set_training_step(self.steps)
        self.steps += 1
        gen = generator or self.generator
        (lkey, lstate), (rkey, rstate) = lhs, rhs
        foreign_draws = [sample.draw(gen) for sample in foreign] if foreign is not None else []
        if self.closed_form:
            negatives = self._uniform_negatives(self._plan(batch).total_chunks, lstate, rstate, gen)
            if self.graphs is not None and not foreign:
                loss, shared_grads = self.graphs(batch, negatives, lhs, rhs)
            else:
                loss, shared_grads = self._closed_form_step(batch, negatives, lhs, rhs, foreign or (), foreign_draws)
            self._step_shared(shared_grads)
            return loss
        foreign_leaves = [leaf for _, leaf in foreign_draws]
        left = _Rows(lkey, lstate, self.model, edges)
        right = left if lkey == rkey else _Rows(rkey, rstate, self.model, edges)

        if self.all_rows is None:
            per_edge, h, t = self._edge_losses(batch, cfg.negatives == "all", left, right, gen, foreign_leaves)
        else:  # some relations score every row, the others their chunks: the former edges first
            on = self.all_rows.index_select(0, batch.rel)
            batch = batch.rows(torch.argsort(on.to(torch.uint8), descending=True, stable=True))
            split = int(on.sum())
            parts = [self._edge_losses(batch.rows(slice(start, end)), all_rows, left, right, gen, foreign_leaves)
                     for start, end, all_rows in ((0, split, True), (split, len(batch), False)) if end > start]
            losses, heads, tails = zip(*parts)
            per_edge, h, t = torch.cat(losses, 1), torch.cat(heads), torch.cat(tails)
        side_weights = self._side_weights(batch)
        loss = (per_edge * side_weights).sum() if side_weights is not None else per_edge.sum()
        reg = self.model.regularization([h, t], batch.rel)
        total = loss if reg is None else loss + reg

        sides = [left] if right is left else [left, right]
        leaves = [leaf for side in sides for leaf in side.leaves]
        grads = torch.autograd.grad(total, leaves + foreign_leaves + self.shared_params, allow_unused=True)
        k = 0
        for side in sides:
            n = len(side.leaves)
            used = [(i, g) for i, g in zip(side.ids, grads[k : k + n]) if g is not None]  # None: an empty request
            self.row_optimizer.step(side.state.embeddings, side.state.adagrad, [i for i, _ in used], [g for _, g in used])
            k += n
        for sample, (picks, _), grad in zip(foreign or (), foreign_draws, grads[k : k + len(foreign_leaves)]):
            sample.add_gradient(picks, grad)
        k += len(foreign_leaves)
        self._step_shared(grads[k:])
        return loss.detach()

    def _plan(self, batch: Batch) -> ChunkPlan:
        """How ``batch`` is cut into chunks."""
        return ChunkPlan(len(batch), min(self.config.chunk_size, len(batch)))

    def _uniform_negatives(self, chunks: int, lstate: PartitionState, rstate: PartitionState,
                           gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """A batch's head and tail side's uniform negatives [chunks, u], local ids of the lhs and
        the rhs partition (u = 0 for a side not trained), drawn in that order."""
        device = lstate.embeddings.device
        return (uniform_negatives(chunks, self.head_uniform, lstate.embeddings.shape[0], gen, device),
                uniform_negatives(chunks, self.tail_uniform, rstate.embeddings.shape[0], gen, device))

    def _step_shared(self, grads: Sequence[Tensor | None]) -> None:
        """The shared optimizer's step with ``grads`` of the shared parameters (None: unused)."""
        if self.shared_optimizer is not None:
            with self.shared_lock:
                for p, g in zip(self.shared_params, grads):
                    p.grad = g
                self.shared_optimizer.step()

    def _edge_losses(self, batch: Batch, all_rows: bool, left: _Rows, right: _Rows, gen: torch.Generator,
                     foreign: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Per-edge loss [2, B] of the tail and the head side, and the positives' head and tail
        rows: against every row of the partitions (``all_rows``) or the chunks' candidates."""
        if not all_rows:
            return self._chunked_loss(self._plan(batch), batch, left, right, gen, foreign)
        lhs_all, rhs_all = left.take(None), right.take(None)
        h, t = lhs_all.index_select(0, batch.lhs), rhs_all.index_select(0, batch.rhs)
        foreign_scores = self._foreign_scores(h, t, batch.rel, foreign, (left.key[0], right.key[0]))
        losses = []
        if self.trains[0]:
            losses.append(self._all_rows_loss("rhs", h, batch.rel, rhs_all, batch.rhs, foreign_scores))
        if self.trains[1]:
            losses.append(self._all_rows_loss("lhs", t, batch.rel, lhs_all, batch.lhs, foreign_scores))
        return self._both_sides(torch.stack(losses)), h, t

    def _all_rows_loss(self, side: str, queries: Tensor, rel: Tensor, rows: Tensor, targets: Tensor,
                       foreign_scores: Tensor | None) -> Tensor:
        """[B]: each query's loss against every row of the partition (then the foreign
        candidates of ``side``); the positive is its own local id."""
        scores = self.model.score_candidates(side, queries, rel, rows)
        if foreign_scores is not None:  # after the partition's rows: positives keep their local ids
            scores = torch.cat([scores, foreign_scores[0 if side == "rhs" else 1]], -1)
        return self.loss_fn(scores, targets, self.config.margin)

    def _side_weights(self, batch: Batch) -> Tensor | None:
        """[2, B]: the weights of each edge's tail- and head-prediction losses (the edge's
        weight times its relation's side weights); None when all are 1."""
        by_relation = None if self.side_weights is None else self.side_weights.index_select(0, batch.rel).T
        if batch.weight is None:
            return by_relation
        return batch.weight.expand(2, -1) if by_relation is None else by_relation * batch.weight

    def _closed_form_step(
        self, batch: Batch, negatives: tuple[Tensor, Tensor], lhs: Side,
        rhs: Side, foreign: tuple[ForeignSample, ...] = (),
        foreign_draws: Sequence[tuple[Tensor | None, Tensor]] = (),
    ) -> tuple[Tensor, list[Tensor | None]]:
        """The batched softmax step of ``_chunked_loss`` (same draws, same update) with the
        scores' gradient in closed form (``bigkg.training.closed_form``); autograd only
        takes it back through the relation operator, when there is one. ``negatives``: the
        head and the tail side's uniform negatives [chunks, u]. Updates the rows; returns the
        loss and the shared parameters' gradients, for the shared optimizer.

        Each side's candidates (the chunk's positives, then its negatives) are
        gathered in one block; the positives' rows are its first columns, so they
        are gathered once and never copied out. Nothing here waits for the device or
        draws random numbers, so on a GPU the step can be captured as a CUDA graph
        (``bigkg.training.graphed``).
        """
        (lkey, lstate), (rkey, rstate) = lhs, rhs
        left, right = lstate.embeddings, rstate.embeddings
        plan = self._plan(batch)
        sides = self._side_weights(batch)
        u_head, u_tail, d, device = self.head_uniform, self.tail_uniform, left.shape[1], batch.lhs.device
        head_negatives, tail_negatives = negatives
        # A side not trained has no candidates; its foreign rows are drawn all the same (the
        # autograd path's draws) but not scored.
        foreign_heads, foreign_tails = [rows.detach() if on else None
                                        for (_, rows), on in zip(foreign_draws, self.trains[::-1])] or [None, None]
        grad_foreign: list[Tensor | None] = [None, None]
        left_ids: list[Tensor] = []
        left_grads: list[Tensor] = []
        right_ids: list[Tensor] = []
        right_grads: list[Tensor] = []
        shared_grads: list[Tensor | None] = [None] * len(self.shared_params)
        loss, chunk = torch.zeros((), device=device), 0
        for start, nc, c in plan.blocks():
            end = start + nc * c
            weights = (None, None) if sides is None else sides[:, start:end].view(2, nc, c).unbind()
            head_ids = torch.cat([batch.lhs[start:end].view(nc, c), head_negatives[chunk : chunk + nc]], 1)
            tail_ids = torch.cat([batch.rhs[start:end].view(nc, c), tail_negatives[chunk : chunk + nc]], 1)
            head_candidates = left.index_select(0, head_ids.flatten()).view(nc, c + u_head, d)
            tail_candidates = right.index_select(0, tail_ids.flatten()).view(nc, c + u_tail, d)
            if self.model.rows_compared_directly:
                out = softmax_dot_gradients(head_candidates, tail_candidates, c, weights, foreign_heads, foreign_tails, self.trains)
                out = out._replace(heads=self._with_regularizer_gradient(head_candidates[:, :c], out.heads),
                                   tails=self._with_regularizer_gradient(tail_candidates[:, :c], out.tails))
            else:
                out = self._operator_gradients(batch.rel[start:end].view(nc, c), head_candidates, tail_candidates, weights,
                                               foreign_heads, foreign_tails, shared_grads)
            loss += out.loss.sum()
            for ids, grads, positives, candidates, rows, candidate_rows in (
                    (left_ids, left_grads, batch.lhs[start:end], head_ids, out.heads, out.head_candidates),
                    (right_ids, right_grads, batch.rhs[start:end], tail_ids, out.tails, out.tail_candidates)):
                if rows is not None:
                    ids.append(positives)
                    grads.append(rows.reshape(nc * c, d))
                if candidate_rows is not None:  # contiguous blocks: flattened, not copied
                    ids.append(candidates[:, out.first:].flatten())
                    grads.append(candidate_rows.reshape(-1, d))
            grad_foreign = [g if total is None else total + g for total, g in zip(grad_foreign, (out.foreign_heads, out.foreign_tails))]
            chunk += nc
        if lkey == rkey:
            self.row_optimizer.step(left, lstate.adagrad, left_ids + right_ids, left_grads + right_grads)
        else:
            self.row_optimizer.step(left, lstate.adagrad, left_ids, left_grads)
            self.row_optimizer.step(right, rstate.adagrad, right_ids, right_grads)
        for sample, (picks, _), grad in zip(foreign, foreign_draws, grad_foreign):
            sample.add_gradient(picks, grad)
        return loss, shared_grads

    def _operator_gradients(
        self, rel: Tensor, head_candidates: Tensor, tail_candidates: Tensor, weights: tuple[Tensor | None, Tensor | None],
        foreign_heads: Tensor | None, foreign_tails: Tensor | None, shared_grads: list[Tensor | None],
    ) -> ChunkGradients:
        """The closed-form step's block under a relation operator: the queries are the
        positives' rows under it (``KGModel.query_vectors``), the scores' gradient is
        ``softmax_query_gradients``', and autograd takes it (with the relation parameters'
        regulariser's) back through the operator to the rows and the relation parameters,
        whose gradients are added to ``shared_grads``; the rows' regulariser is added in
        closed form. ``rel`` [nc, c]; candidates as ``softmax_dot_gradients``."""
        c = rel.shape[1]
        heads, tails = head_candidates[:, :c].detach().requires_grad_(), tail_candidates[:, :c].detach().requires_grad_()
        with torch.enable_grad():
            queries = [self.model.query_vectors(side, anchor, rel) if on else None
                       for side, anchor, on in (("rhs", heads, self.trains[0]), ("lhs", tails, self.trains[1]))]
            relation_reg = self.model.relation_regularization(rel)  # the rows' part in closed form, below
        tail_queries, head_queries = (None if q is None else q.detach() for q in queries)
        out = softmax_query_gradients(tail_queries, tail_candidates, head_queries, head_candidates, c, weights,
                                      foreign_heads, foreign_tails)
        outputs = [q for q in queries if q is not None]
        grad_outputs = [g for g in (out.tail_queries, out.head_queries) if g is not None]
        if relation_reg is not None:
            outputs.append(relation_reg)
            grad_outputs.append(torch.ones_like(relation_reg))
        grads = torch.autograd.grad(outputs, [heads, tails, *self.shared_params], grad_outputs, allow_unused=True)
        for k, g in enumerate(grads[2:]):
            if g is not None:
                shared_grads[k] = g if shared_grads[k] is None else shared_grads[k] + g
        # The positives' rows: as queries (through the operator) and the regulariser's; as
        # candidates, within their side's candidate block, which the row update adds.
        return ChunkGradients(out.loss, self._with_regularizer_gradient(heads.detach(), grads[0]),
                              self._with_regularizer_gradient(tails.detach(), grads[1]),
                              out.head_candidates, out.tail_candidates, 0, out.foreign_heads, out.foreign_tails)

    def _with_regularizer_gradient(self, rows: Tensor, grad: Tensor | None) -> Tensor | None:
        """``grad`` of the positives' ``rows`` (None: none yet) plus the regulariser's gradient
        on them, in closed form (``grad`` as it is without a regulariser). The regulariser is a
        sum over rows, so a batch's is the sum of its blocks'."""
        reg = self.model.regularization_gradient(rows)
        if reg is None or grad is None:
            return grad if reg is None else reg
        return grad.add_(reg)

    def _chunked_loss(
        self, plan: ChunkPlan, batch: Batch, left: _Rows, right: _Rows, gen: torch.Generator,
        foreign: list[Tensor],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-edge loss [2, B] of the tail and the head side, and the positives' head and tail rows.

        The queries (positives' rows) and each side's candidates are separate
        leaves (``_Rows.take_candidates``); slicing one big leaf instead would
        make autograd allocate and add zero-filled copies of it for every slice.
        """
        chunks = plan.total_chunks
        device = batch.lhs.device
        h, t = left.take(batch.lhs), right.take(batch.rhs)
        head_negatives, tail_negatives = self._uniform_negatives(chunks, left.state, right.state, gen)
        blocks = plan.blocks()
        per_edge, chunk, margin = [], 0, self.config.margin
        anchors = self.config.anchor_negatives and left.key[0] == right.key[0]  # anchors of the candidates' type
        foreign_scores = self._foreign_scores(h, t, batch.rel, foreign, (left.key[0], right.key[0]))
        for start, nc, c in blocks:
            whole = len(blocks) == 1  # no slicing: keeps autograd from copying whole leaves
            end = start + nc * c
            h3 = (h if whole else h[start:end]).view(nc, c, -1)
            t3 = (t if whole else t[start:end]).view(nc, c, -1)
            r3 = (batch.rel if whole else batch.rel[start:end]).view(nc, c)
            scores = []
            if self.trains[0]:
                tails = right.take_candidates(t3, batch.rhs[start:end].view(nc, c), tail_negatives[chunk : chunk + nc])
                scores.append(self.model.score_candidates("rhs", h3, r3, tails))
            if self.trains[1]:
                heads = left.take_candidates(h3, batch.lhs[start:end].view(nc, c), head_negatives[chunk : chunk + nc])
                scores.append(self.model.score_candidates("lhs", t3, r3, heads))
            scored = torch.stack(scores)  # [sides trained, nc, c, candidates]
            if anchors:
                loops = None
                if left is right:  # a self-loop's anchor is its own positive
                    loops = (batch.lhs[start:end] == batch.rhs[start:end]).view(nc, c)
                scored = torch.cat([scored, self._trained_sides(self._anchor_scores(h3, t3, r3, loops))], -1)
            if foreign_scores is not None:
                block = (foreign_scores if whole else foreign_scores[:, start:end]).view(2, nc, c, -1)
                scored = torch.cat([scored, self._trained_sides(block)], -1)
            positive = chunk_positive_index(nc, c, device).expand(len(scores), nc, c)
            per_edge.append(self._both_sides(self.loss_fn(scored, positive, margin).flatten(1)))
            chunk += nc
        return (per_edge[0] if len(per_edge) == 1 else torch.cat(per_edge, 1)), h, t

    def _trained_sides(self, both: Tensor) -> Tensor:
        """The rows of ``both`` [2, ...] (tail side, head side) of the sides trained."""
        return both if all(self.trains) else both[0:1] if self.trains[0] else both[1:2]

    def _both_sides(self, trained: Tensor) -> Tensor:
        """[2, n]: the per-edge losses ``trained`` [sides trained, n], zero for a side not trained."""
        if all(self.trains):
            return trained
        zero = torch.zeros_like(trained)
        return torch.cat([trained, zero] if self.trains[0] else [zero, trained])

    def _foreign_scores(self, h: Tensor, t: Tensor, rel: Tensor, foreign: list[Tensor],
                        types: tuple[str, str]) -> Tensor | None:
        """[2, B, F]: every positive's (head, rel) against the foreign tails and (tail, rel)
        against the foreign heads (rows of the head and tail entity ``types``, represented
        as the model represents rows: foreign negatives need a model without an encoder);
        None without foreign candidates."""
        if not foreign:
            return None
        heads, tails = (self.model.add_global_embedding(kind, rows) for kind, rows in zip(types, foreign))
        return torch.stack([
            self.model.score_candidates("rhs", h, rel, tails),
            self.model.score_candidates("lhs", t, rel, heads),
        ])

    def _anchor_scores(self, h3: Tensor, t3: Tensor, r3: Tensor, loops: Tensor | None) -> Tensor:
        """[2, nc, c, 1]: each positive's head scored as its tail and its tail as its head.

        ``loops`` [nc, c] marks self-loops, whose anchor is the positive: masked out.
        """
        h1, t1, r1 = h3.unsqueeze(-2), t3.unsqueeze(-2), r3.unsqueeze(-1)  # one query, one candidate
        scores = torch.stack([
            self.model.score_candidates("rhs", h1, r1, h1),
            self.model.score_candidates("lhs", t1, r1, t1),
        ]).squeeze(-1)
        return scores if loops is None else scores.masked_fill(loops.unsqueeze(-1), float("-inf"))

