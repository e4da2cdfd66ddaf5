"""KGModel: the shared parameters (relation operators, encoder) and the scoring functions.

Entity embeddings are not in this module: they live in partition storage and
are passed in as tensors, so a model of any size fits the same code.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor, nn

from bigkg.config import Config, ConfigError, ModelConfig
from bigkg.format import Manifest
from bigkg.model.comparators import Comparator, build_comparator
from bigkg.model.encoder import Encoder, EncoderContext, build_encoder
from bigkg.model.operators import OPERATORS
from bigkg.model.regularizers import regularization, regularization_gradient

# The name of KGModel's global embeddings in its state_dict (model.init_from treats them apart).
GLOBAL_EMBEDDINGS = "global_embeddings"


class KGModel(nn.Module):
    """Scores ``comparator(op_r(head), tail)``.

    Relation ids are 0..R-1; with ``reciprocal`` the ids R..2R-1 are the
    reciprocal relations, used to score heads given a tail as
    ``comparator(op_{r+R}(tail), head)``. Without it, head ranking moves the
    operator to the tail side (see ``bigkg.model.operators``), or, for the few
    operator/comparator pairs where no exact rewrite exists, applies the
    operator to the candidates once per distinct relation.
    """

    def __init__(self, config: ModelConfig, relation_names: list[str], encoder: Encoder,
                 entity_types: list[str] | None = None):
        """``entity_types``: the dataset's, in order; required with ``config.global_embedding``."""
        super().__init__()
        unknown = sorted(set(config.relation_operators) - set(relation_names))
        if unknown:
            raise ConfigError(f"model.relation_operators: {unknown[0]!r} is not a relation of the dataset")
        self.dim = config.dim
        self.num_relations = len(relation_names)
        self.reciprocal = config.reciprocal
        self.regularizer = config.regularizer
        self.regularization_weight = config.regularization_weight
        names = [config.relation_operators.get(r, config.operator) for r in relation_names]
        if self.reciprocal:
            names = names + names
        kinds = sorted(set(names))
        total = len(names)
        self.operators = nn.ModuleList([OPERATORS[k](total, config.dim) for k in kinds])
        self.register_buffer("operator_of", torch.tensor([kinds.index(n) for n in names], dtype=torch.long), persistent=False)
        self.comparator: Comparator = build_comparator(config.comparator, config.bias)
        self.encoder = encoder
        # Registered last: the shared optimizer's state lists the other parameters first in
        # any model, with or without it (model.init_from relies on that).
        self._type_index = {name: k for k, name in enumerate(entity_types or [])}
        if config.global_embedding and not self._type_index:
            raise ValueError("model.global_embedding needs the dataset's entity types")
        self.global_embeddings = nn.Parameter(torch.zeros(len(self._type_index), config.dim)) \
            if config.global_embedding else None
        self.is_complex = all(op.is_complex for op in self.operators)
        # Every relation (and its reciprocal) leaves its anchor as it is: a score is a comparison of two rows.
        self.rows_compared_directly = all(op.name == "none" for op in self.operators)
        self._head_ranking = self._choose_head_ranking()

    # -- operators over mixed relations ------------------------------------------
    def _per_operator(self, method: str, x: Tensor, rel: Tensor) -> Tensor:
        if len(self.operators) == 1:
            return getattr(self.operators[0], method)(x, rel)
        which = self.operator_of[rel]
        out = torch.zeros_like(x)
        for k, op in enumerate(self.operators):
            mask = which == k
            out = torch.where(mask.unsqueeze(-1), getattr(op, method)(x, rel), out)
        return out

    def operate(self, x: Tensor, rel: Tensor) -> Tensor:
        return self._per_operator("forward", x, rel)

    def _dot_bias(self, x: Tensor, rel: Tensor) -> Tensor | None:
        biases = []
        for k, op in enumerate(self.operators):
            bias = op.dot_bias(x, rel)
            if bias is not None:
                biases.append(bias if len(self.operators) == 1 else bias * (self.operator_of[rel] == k))
        return sum(biases) if biases else None  # type: ignore[return-value]

    def _choose_head_ranking(self) -> str:
        if self.reciprocal:
            return "reciprocal"
        name = self.comparator.name
        if name == "dot":
            return "adjoint"
        if name in ("l2", "squared_l2") and all(op.distance_inverse for op in self.operators):
            return "inverse"
        if name == "cos" and all(op.distance_inverse and op.norm_preserving for op in self.operators):
            return "inverse"
        return "per_relation"

    # -- representations -------------------------------------------------------------
    def encode(self, entity_embeddings: Tensor, context: EncoderContext) -> Tensor:
        """The representations scored: the encoder's output for the rows, plus the entity
        type's global embedding when the model has them."""
        return self.add_global_embedding(context.entity_type, self.encoder.encode(entity_embeddings, context))

    def add_global_embedding(self, entity_type: str, vectors: Tensor) -> Tensor:
        """``vectors`` of entities of ``entity_type`` plus that type's global embedding (as they are without one)."""
        if self.global_embeddings is None:
            return vectors
        return vectors + self.global_embeddings[self._type_index[entity_type]]

    # -- scoring -------------------------------------------------------------------
    def score_pairs(self, lhs: Tensor, rhs: Tensor, rel: Tensor) -> Tensor:
        """Score of each edge (lhs[k], rel[k], rhs[k]) -> [...]."""
        return self.comparator.pairs(self.operate(lhs, rel), rhs)

    def score_candidates(self, side: str, anchor: Tensor, rel: Tensor, candidates: Tensor) -> Tensor:
        """Scores [..., N, M] of every candidate for every (anchor, rel) query.

        side "rhs": anchor = heads, candidates = tails; side "lhs": anchor =
        tails, candidates = heads. Leading batch dimensions are allowed
        (anchor [..., N, d], rel [..., N], candidates [..., M, d]).
        """
        return self.candidate_scorer(side, anchor, rel)(candidates)

    def candidate_scorer(self, side: str, anchor: Tensor, rel: Tensor) -> Callable[[Tensor], Tensor]:
        """``score_candidates`` for these queries as a function of the candidates: the relation
        operator is applied to the anchors once, however many candidate sets are scored."""
        if side not in ("lhs", "rhs"):
            raise ValueError(f"side must be 'lhs' or 'rhs', got {side!r}")
        if side == "lhs" and self._head_ranking == "per_relation":
            return functools.partial(self._score_heads_per_relation, anchor, rel)
        queries = self.query_vectors(side, anchor, rel)
        bias = self._dot_bias(anchor, rel) if side == "lhs" and self._head_ranking == "adjoint" else None
        if bias is None:
            return functools.partial(self.comparator.candidates, queries)
        return lambda candidates: self.comparator.candidates(queries, candidates) + bias.unsqueeze(-1)

    def query_vectors(self, side: str, anchor: Tensor, rel: Tensor) -> Tensor:
        """The vectors the comparator compares with the candidates of ``side`` for the queries
        (``anchor``, ``rel``): the anchors under the relation's operator (heads ranked: its
        reciprocal's, its adjoint's, or its inverse's). Under the adjoint the scores lack a
        term constant per query (``Operator.dot_bias``), to which a ranking, a softmax and
        a margin are blind; ``candidate_scorer`` adds it. Not defined for the per-relation
        fallback of head ranking."""
        if side == "rhs":
            return self.operate(anchor, rel)
        mode = self._head_ranking
        if mode == "reciprocal":
            return self.operate(anchor, rel + self.num_relations)
        if mode in ("adjoint", "inverse"):
            return self._per_operator(mode, anchor, rel)
        raise ValueError(f"heads are ranked per relation under this model ({self.comparator.name} comparator): "
                         "they have no query vectors")

    def _score_heads_per_relation(self, anchor: Tensor, rel: Tensor, candidates: Tensor) -> Tensor:
        """Exact fallback: op_r applied to every candidate, once per distinct r."""
        out = None
        for r in torch.unique(rel).tolist():
            rel_r = torch.full(candidates.shape[:-1], r, dtype=torch.long, device=candidates.device)
            scores = self.comparator.candidates(self.operate(candidates, rel_r), anchor).transpose(-1, -2)
            out = scores if out is None else torch.where((rel == r).unsqueeze(-1), scores, out)
        assert out is not None, "no queries to score"
        return out

    # -- regularisation --------------------------------------------------------------
    @property
    def regularized(self) -> bool:
        return self.regularizer != "none" and self.regularization_weight != 0

    def regularization(self, entity_rows: list[Tensor], rel: Tensor) -> Tensor | None:
        """Weighted regulariser of the entity rows and relation parameters a batch used."""
        if not self.regularized:
            return None
        rows = self.regularization_weight * regularization(self.regularizer, entity_rows, self.is_complex)
        relations = self.relation_regularization(rel)
        return rows if relations is None else rows + relations

    def relation_regularization(self, rel: Tensor) -> Tensor | None:
        """The weighted regulariser of the parameters of relations ``rel`` (and of their
        reciprocals); None when the model has no regulariser or its operators no parameters."""
        if not self.regularized:
            return None
        rel_ids = torch.cat([rel, rel + self.num_relations]) if self.reciprocal else rel
        tensors = []
        for k, op in enumerate(self.operators):
            ids = rel_ids if len(self.operators) == 1 else rel_ids[self.operator_of[rel_ids] == k]
            rows = op.relation_rows(ids)
            if rows is not None:
                tensors.append(rows)
        if not tensors:
            return None
        return self.regularization_weight * regularization(self.regularizer, tensors, self.is_complex)

    def regularization_gradient(self, entity_rows: Tensor) -> Tensor | None:
        """The gradient of the weighted regulariser with respect to ``entity_rows`` (a
        batch's rows, each counted once per use); None when the model has no regulariser."""
        if not self.regularized:
            return None
        return self.regularization_weight * regularization_gradient(self.regularizer, entity_rows, self.is_complex)


def build_model(config: Config, manifest: Manifest) -> KGModel:
    """The model of ``config`` for the relations of ``manifest`` (shared parameters only)."""
    return KGModel(config.model, [r.name for r in manifest.relations], build_encoder(config, manifest),
                   [et.name for et in manifest.entity_types])
