"""``evaluate(config, split)``: filtered link prediction (and recommendation) metrics of a run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bigkg.checkpoint import CheckpointStore
from bigkg.config import Config
from bigkg.evaluation.breakdown import breakdown, relation_categories
from bigkg.evaluation.filters import (FilterIndex, QueryKeys, Triples, by_entity_type, concatenate, filter_stride,
                                     iter_split)
from bigkg.evaluation.metrics import QueryRanks, both_directions, mean_recall_ndcg, recall_ndcg_per_user
from bigkg.evaluation.ranking import RankingOptions, candidate_chunk, rank_queries, top_k
from bigkg.evaluation.source import EvaluationError, TrainedRun, open_run
from bigkg.format import SPLITS, DatasetError, Manifest, manifest_path

RANK_DEFINITION = "filtered realistic rank: 1 + #higher + #tied/2, other known true triples (train+valid+test) removed"

@dataclass
class RecommendationEdges:
    """The ``eval.rec_relation`` edges evaluation needs: every item, and per split the edges
    of the users of the evaluated split."""

    relation: int
    items: np.ndarray  # sorted: every tail of a rec-relation edge in any split
    edges: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (users, items)


@dataclass
class DatasetIndex:
    """What evaluating one split reads from a dataset, once: the split, the known answers of its
    queries, who was trained, and the recommendation edges when asked for. Built bucket by bucket:
    memory holds the split, those answers and one bucket, not every edge of the graph."""

    triples: Triples
    filters: FilterIndex
    seen: dict[str, np.ndarray]  # per entity type: does the entity occur in a training edge
    rec: RecommendationEdges | None

    def unseen_in_training(self, manifest: Manifest, triples: Triples) -> np.ndarray:
        """Mask of the triples whose head or tail never occurs in a training edge."""
        unseen = np.zeros(len(triples), dtype=bool)
        for name, heads, tails in by_entity_type(manifest, triples):
            unseen[heads] |= ~self.seen[name][triples.heads[heads]]
            unseen[tails] |= ~self.seen[name][triples.tails[tails]]
        return unseen


# The index of the last split evaluated, reused by the validations of a training run.
_INDEX_CACHE: dict[tuple[str, int, str, int | None], DatasetIndex] = {}


def dataset_index(root: str | Path, manifest: Manifest, split: str, rec_relation: int | None = None) -> DatasetIndex:
    """The index of ``split`` (and of ``rec_relation``'s edges), from one pass over every bucket."""
    path = manifest_path(Path(root)).resolve()
    key = (str(path), path.stat().st_mtime_ns, split, rec_relation)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = _build_index(root, manifest, split, rec_relation)
    return _INDEX_CACHE[key]


def _build_index(root: str | Path, manifest: Manifest, split: str, rec_relation: int | None) -> DatasetIndex:
    evaluated = list(iter_split(root, manifest, split))
    triples = concatenate(evaluated)
    keys = QueryKeys.of_triples(triples, filter_stride(manifest))
    seen = {et.name: np.zeros(et.count, dtype=bool) for et in manifest.entity_types}
    rec = None if rec_relation is None else _RecommendationCollector(rec_relation, triples)
    answering = []
    for s in SPLITS:
        # The evaluated split is read once, above: each of its triples answers its own queries.
        is_evaluated = s == split
        for part in evaluated if is_evaluated else iter_split(root, manifest, s):
            answering.append(part if is_evaluated else keys.answering(part))
            if s == "train":
                for name, heads, tails in by_entity_type(manifest, part):
                    seen[name][part.heads[heads]] = True
                    seen[name][part.tails[tails]] = True
            if rec is not None:
                rec.add(s, part)
    filters = FilterIndex(concatenate(answering), keys.stride, manifest)
    return DatasetIndex(triples, filters, seen, None if rec is None else rec.finish())


class _RecommendationCollector:
    """Gathers ``RecommendationEdges`` from the buckets: every item, and the edges of the
    evaluated split's users."""

    def __init__(self, relation: int, evaluated: Triples):
        self.relation = relation
        self.users = np.unique(evaluated.heads[evaluated.rels == relation])
        self.items: list[np.ndarray] = []
        self.parts: dict[str, list[Triples]] = {s: [] for s in SPLITS}

    def add(self, split: str, part: Triples) -> None:
        edges = part.select(part.rels == self.relation)
        self.items.append(np.unique(edges.tails))
        self.parts[split].append(edges.select(np.isin(edges.heads, self.users)))

    def finish(self) -> RecommendationEdges:
        items = np.unique(np.concatenate([np.empty(0, np.int64), *self.items]))
        edges = {s: concatenate(parts) for s, parts in self.parts.items()}
        return RecommendationEdges(self.relation, items, {s: (e.heads, e.tails) for s, e in edges.items()})


def ranking_options(config: Config, device: str, shard: tuple[int, int] | None = None) -> RankingOptions:
    """The ``eval`` section as ``RankingOptions``, ranking the query batches of ``shard`` only."""
    e = config.eval
    return RankingOptions(
        query_batch=e.query_batch,
        candidate_chunk=candidate_chunk(e.candidate_chunk, e.query_batch, device),
        num_sampled=e.num_sampled if e.mode == "sampled" else None,
        seed=config.seed,
        device=device,
        shard=shard,
    )


def link_prediction_ranks(run: TrainedRun, triples: Triples, filters: FilterIndex,
                          options: RankingOptions) -> dict[str, QueryRanks]:
    """Ranks (and candidate counts) of every triple's tail ("rhs") and head ("lhs"), in the triples' order."""
    rels = run.manifest.relations
    out = {}
    for side in ("rhs", "lhs"):
        ranks = np.empty(len(triples), dtype=np.float64)
        candidates = np.empty(len(triples), dtype=np.int64)
        # One ranking pass per (anchor type, target type): candidates must be of the answer's type.
        groups: dict[tuple[str, str], list[int]] = {}
        for r, rel in enumerate(rels):
            types = (rel.lhs_type, rel.rhs_type) if side == "rhs" else (rel.rhs_type, rel.lhs_type)
            groups.setdefault(types, []).append(r)
        for (anchor_type, target_type), rel_ids in groups.items():
            sel = np.flatnonzero(np.isin(triples.rels, rel_ids))
            anchors, answers = (triples.heads, triples.tails) if side == "rhs" else (triples.tails, triples.heads)
            ranked = rank_queries(
                side, anchors[sel], triples.rels[sel], answers[sel], anchor_type, target_type,
                run.source, run.model.candidate_scorer, filters, options,
            )
            ranks[sel], candidates[sel] = ranked.ranks, ranked.candidates
        out[side] = QueryRanks(ranks, candidates)
    return out


def recommendation_metrics(run: TrainedRun, rec: RecommendationEdges, split: str, ks: list[int], options: RankingOptions,
                           sum_over_workers: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
    """Recall@K and NDCG@K of the ``eval.rec_relation`` user->item relation.

    The items are the entities that are the tail of a rec-relation edge in any
    split; each user's candidates are all items except the user's items in the
    earlier splits (training items; when evaluating test, also validation items).
    With ``options.shard`` (worker, workers) this worker ranks every workers-th user,
    and ``sum_over_workers`` gathers the per-user metrics of all.
    """
    name = run.config.eval.rec_relation
    rel = run.manifest.relations[rec.relation]
    held_users, held_items = rec.edges[split]
    users, user_row = np.unique(held_users, return_inverse=True)
    if users.size == 0:
        raise EvaluationError(f"the {split} split has no {name!r} edges for recall/ndcg")
    mine = np.ones(users.size, dtype=bool) if options.shard is None else np.arange(users.size) % options.shard[1] == options.shard[0]
    position = np.cumsum(mine) - 1  # of each of my users among them
    known = [rec.edges[s] for s in SPLITS[: SPLITS.index(split)]]
    ku = np.concatenate([np.empty(0, np.int64)] + [u for u, _ in known])
    ki = np.concatenate([np.empty(0, np.int64)] + [i for _, i in known])
    row = np.searchsorted(users, ku)  # every known edge's user is one of the split's
    ranked = mine[row]
    top_mine, _ = top_k("rhs", users[mine], np.full(int(mine.sum()), rec.relation), rel.lhs_type, rel.rhs_type, run.source,
                        run.model.candidate_scorer, max(ks), options, exclude=(position[row[ranked]], ki[ranked]),
                        candidates=rec.items)
    top = np.full((users.size, top_mine.shape[1]), -1, dtype=np.int64)
    top[mine] = top_mine
    out: dict[str, Any] = {"rec_relation": name, "rec_items": int(rec.items.size)}
    for k in ks:
        recall, ndcg, has_relevant = recall_ndcg_per_user(top, user_row, held_items, k)
        if sum_over_workers is not None:  # each user's metrics come from the worker that ranked it
            recall, ndcg = sum_over_workers(np.where(mine, recall, 0.0)), sum_over_workers(np.where(mine, ndcg, 0.0))
        out.update(mean_recall_ndcg(recall, ndcg, has_relevant, k))
    return out


def evaluate(config: Config, split: str = "test", *, store: CheckpointStore | None = None,
             shard: tuple[int, int] | None = None,
             sum_over_workers: Callable[[np.ndarray], np.ndarray] | None = None,
             by_relation: bool = False) -> dict[str, Any]:
    """Filtered MRR, MR, Hits@k of ``split`` (both directions) and their chance-adjusted AMR,
    AMRI and AMRRI (``ranking_metrics``), from the run's latest checkpoint.

    Test triples whose entities never occur in training are kept and ranked
    like the others; ``unseen_entity_triples`` says how many there were.
    ``by_relation`` adds the metrics per relation and per relation category (one more
    pass over the training edges).

    Split across workers, each calls this with its ``shard`` (worker, workers) and a
    ``sum_over_workers`` that adds an array over all of them (a collective): each ranks its
    share of the query batches, and every worker gets the whole result.
    """
    if split not in SPLITS:
        raise EvaluationError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    started = time.perf_counter()
    run = open_run(config, store)
    rec_relation = None
    if config.eval.rec_relation:
        try:
            rec_relation = run.manifest.relation_index(config.eval.rec_relation)
        except DatasetError as exc:
            raise EvaluationError(f"eval.rec_relation: {exc}") from exc
    index = dataset_index(config.dataset, run.manifest, split, rec_relation)
    triples = index.triples
    if len(triples) == 0:
        raise EvaluationError(f"dataset {config.dataset} has no {split} edges to evaluate")
    ranks = link_prediction_ranks(run, triples, index.filters, ranking_options(config, run.device, shard))
    if sum_over_workers is not None:
        ranks = {side: ranked.summed(sum_over_workers) for side, ranked in ranks.items()}
    hits = config.eval.hits
    result: dict[str, Any] = {
        "split": split,
        "checkpoint": run.version.name,
        "epoch": run.version.meta.get("epoch"),
        "mode": config.eval.mode,
        **both_directions(ranks["rhs"], ranks["lhs"], hits),
        "triples": len(triples),
        "unseen_entity_triples": int(index.unseen_in_training(run.manifest, triples).sum()),
        "rank": RANK_DEFINITION,
    }
    if by_relation:
        names = [r.name for r in run.manifest.relations]
        result.update(breakdown(triples, ranks, names, relation_categories(config.dataset, run.manifest), hits))
    if config.eval.mode == "sampled":
        result["sampling"] = (
            f"{config.eval.num_sampled} uniform draws (with replacement, duplicates dropped) of the answer's "
            "entity type per query batch, known true answers filtered"
        )
    if index.rec is not None:
        result.update(recommendation_metrics(run, index.rec, split, config.eval.rec_k,
                                             ranking_options(config, run.device, shard), sum_over_workers))
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result
