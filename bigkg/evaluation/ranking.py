"""Chunked filtered ranking over all entities of a type, across all partitions.

For each query (anchor, relation, true answer) the evaluator counts how many
candidates of the answer's entity type score strictly higher and how many score
equally, after removing every *other* known true answer (train+valid+test):

    rank = 1 + #greater + #equal / 2          ("realistic" rank: ties count half)

so a model that gives every entity the same score gets the mean rank of a
random order, not rank 1. The query's own answer is scored separately and never
competes with itself, even when the filter does not list it. Each query also
gets the number of candidates it was ranked among, for the chance-adjusted
metrics: its answer and the entities of the target type (or of the sample) that
are not known answers.

The loop is partition-major: each partition of the target type is loaded once,
and every query batch is scored against it in candidate chunks, with the batch's known
answers in that partition masked (a partitioned ``FilterIndex`` gives each partition only
its own). Each batch's relation operator is applied to its anchors once, before the
loop. Memory is the query vectors (twice: as read and as operated), one partition, and
a ``query_batch x candidate_chunk`` score block.

Sampled mode (for graphs too large for full ranking): each query batch draws
``num_sampled`` entities of the target type uniformly with replacement, keeps
the distinct ones, and ranks against those (known true answers still
filtered). The rank is then among the sample, not the whole type.

``top_k`` runs the same partition-major loop to keep each query's best
candidates (recommendation lists, the query command).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from bigkg.errors import BigKGError
from bigkg.evaluation.counting import count_above_and_tied
from bigkg.evaluation.filters import FilterIndex
from bigkg.evaluation.metrics import QueryRanks

# (side, anchor vectors [..., N, d], relation ids [..., N]) -> a function of candidate vectors
# [..., M, d] giving scores [..., N, M]; side "rhs" ranks tails for (head, rel), "lhs" ranks heads
# for (tail, rel); higher is better. What depends on the queries alone (the relation operator) is
# done once, by the outer call, for every partition and chunk of candidates (as in
# KGModel.candidate_scorer). Leading batch dimensions are required to work.
CandidateScores = Callable[[torch.Tensor], torch.Tensor]
QueryScorer = Callable[[str, torch.Tensor, torch.Tensor], CandidateScores]


class EntitySource(Protocol):
    """Where the vectors of one entity type's partitions come from."""

    def partition_offsets(self, entity_type: str) -> np.ndarray:
        """``P + 1`` cumulative row offsets of the type's partitions (global ids)."""

    def load(self, entity_type: str, part: int) -> torch.Tensor:
        """The vectors of partition ``part``, one row per local id."""

    def dimension(self, entity_type: str) -> int:
        """The length of the type's vectors."""


class NonFiniteScoreError(BigKGError):
    """The embeddings or shared parameters hold NaN/inf: no rank is meaningful."""


@dataclass
class RankingOptions:
    query_batch: int = 1000
    candidate_chunk: int = 10000
    # None: rank against every entity of the type; an int: sampled mode.
    num_sampled: int | None = None
    seed: int = 0
    device: str = "cpu"
    # (worker, workers): rank only the query batches b with b % workers == worker; the others'
    # ranks and candidate counts are 0, so summing every worker's gives the unsplit ones, bit for bit.
    shard: tuple[int, int] | None = None


# Candidates per score block where eval.candidate_chunk is 0 (the default). On the CPU a block
# of 4M scores (16 MiB) is still in cache when the count that follows its product reads it;
# a larger one goes out to memory and comes back (docs/benchmarks.md, "Evaluation: a score
# block sized for the CPU"). A GPU wants large blocks: fewer kernel launches. However large
# the query batch, a chunk keeps at least MIN_CPU_CHUNK candidates, so per-chunk work stays small.
CPU_BLOCK_SCORES = 1 << 22
MIN_CPU_CHUNK = 1024
GPU_CANDIDATE_CHUNK = 65536


def candidate_chunk(configured: int, query_batch: int, device: str) -> int:
    """``eval.candidate_chunk``, or where it is 0 the size that suits ``device``."""
    if configured:
        return configured
    if torch.device(device).type == "cpu":
        return max(MIN_CPU_CHUNK, CPU_BLOCK_SCORES // query_batch)
    return GPU_CANDIDATE_CHUNK


def gather(source: EntitySource, entity_type: str, gids: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """Rows ``gids`` of an entity type, loading each needed partition once."""
    offsets = source.partition_offsets(entity_type)
    parts = np.searchsorted(offsets, gids, side="right") - 1
    out: torch.Tensor | None = None
    for part in np.unique(parts):
        sel = np.flatnonzero(parts == part)
        vectors = source.load(entity_type, int(part))
        rows = vectors[torch.from_numpy(gids[sel] - offsets[part])]
        if out is None:
            out = torch.empty((len(gids), vectors.shape[1]), dtype=vectors.dtype)
        out[torch.from_numpy(sel)] = rows.cpu()
    if out is None:
        raise ValueError("gather of no rows")
    return out.to(device)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def pair_scores(scorer: QueryScorer, side: str, anchors: torch.Tensor, rels: torch.Tensor,
                answers: torch.Tensor) -> torch.Tensor:
    """Score of each query's own answer, through the same ``scorer`` as the candidates.

    Each query is a batch of one query and one candidate, so the cost is O(N d).
    """
    return scorer(side, anchors.unsqueeze(1), rels.unsqueeze(1))(answers.unsqueeze(1))[:, 0, 0].float()


@dataclass(frozen=True)
class MaskedCandidates:
    """The (query row, global id) pairs of a query batch that do not compete, found among one
    sorted candidate array scored in chunks: each pair's query row and candidate position,
    grouped by chunk."""

    query_rows: np.ndarray
    positions: np.ndarray
    chunk_size: int
    bounds: np.ndarray  # [chunks + 1]: chunk c's pairs are [bounds[c], bounds[c + 1])

    @staticmethod
    def among(pairs: tuple[np.ndarray, np.ndarray], candidates: np.ndarray, chunk_size: int) -> "MaskedCandidates":
        """``pairs`` (query rows, global ids) located in the sorted, non-empty ``candidates``,
        scored in chunks of ``chunk_size``."""
        qidx, ids = pairs
        if _is_range(candidates):  # positions by subtraction
            pos = ids - candidates[0]
            hit = np.flatnonzero((pos >= 0) & (pos < candidates.size))
        else:
            pos = np.minimum(np.searchsorted(candidates, ids), candidates.size - 1)
            hit = np.flatnonzero(candidates[pos] == ids)
        chunks = -(-candidates.size // chunk_size)
        if chunks == 1:
            return MaskedCandidates(qidx[hit], pos[hit], chunk_size, np.array([0, hit.size]))
        chunk_of = pos[hit] // chunk_size
        # A stable sort of 16-bit keys is a radix sort: linear, where sorting positions was not.
        key = chunk_of.astype(np.uint16) if chunks <= np.iinfo(np.uint16).max else chunk_of
        hit = hit[np.argsort(key, kind="stable")]
        bounds = np.concatenate([[0], np.cumsum(np.bincount(chunk_of, minlength=chunks))])
        return MaskedCandidates(qidx[hit], pos[hit], chunk_size, bounds)

    def chunk(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(query rows, positions within the chunk) of the pairs in chunk ``index``."""
        picked = slice(int(self.bounds[index]), int(self.bounds[index + 1]))
        return self.query_rows[picked], self.positions[picked] - index * self.chunk_size

    def per_query(self, n: int) -> np.ndarray:
        """How many candidates each of ``n`` queries has masked (the pairs are distinct)."""
        return np.bincount(self.query_rows, minlength=n)


def _is_range(candidates: np.ndarray) -> bool:
    """Whether the sorted, distinct ``candidates`` are every id from the first to the last."""
    return candidates.size > 0 and int(candidates[-1]) - int(candidates[0]) + 1 == candidates.size


def _masked_scores(
    scores_of: CandidateScores,
    vectors: torch.Tensor,
    lo: int,
    candidates: np.ndarray,
    masked: MaskedCandidates,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(candidate ids, float scores [n, m]) of a query batch per chunk of the sorted global ids
    ``candidates``, in the chunks ``masked`` was made for.

    ``vectors`` is the partition whose first row is global id ``lo``; the ``masked``
    (query row, candidate position) pairs score -inf.
    """
    contiguous = _is_range(candidates)
    for index, start in enumerate(range(0, candidates.size, masked.chunk_size)):
        chunk = candidates[start : start + masked.chunk_size]
        if contiguous:  # a view, no copy
            rows = vectors[int(chunk[0]) - lo : int(chunk[-1]) + 1 - lo]
        else:
            rows = vectors[torch.from_numpy(chunk - lo).to(vectors.device)]
        scores = scores_of(rows).float()
        query_rows, positions = masked.chunk(index)
        if query_rows.size:
            scores[torch.from_numpy(query_rows).to(scores.device), torch.from_numpy(positions).to(scores.device)] = float("-inf")
        yield chunk, scores


def _batch_scorers(scorer: QueryScorer, side: str, anchor_vecs: torch.Tensor, rel_t: torch.Tensor, batches: list[slice],
                   wanted: list[bool] | None = None) -> list[CandidateScores | None]:
    """Each query batch's candidate scorer, prepared once for every partition (None for the
    batches not ``wanted``)."""
    with torch.no_grad():
        return [scorer(side, anchor_vecs[sl], rel_t[sl]) if wanted is None or wanted[b] else None
                for b, sl in enumerate(batches)]


def _masked_pairs(filters: FilterIndex, side: str, anchors: np.ndarray, rels: np.ndarray, answers: np.ndarray,
                  part: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(query row, gid) pairs that do not compete in partition ``part`` (gids [lo, hi)), each
    pair once: the queries' known answers there, and each query's own answer also where the
    filter lacks it (it is the reference)."""
    qidx, ids = filters.known_answers(side, anchors, rels, part)
    listed = np.zeros(len(answers), dtype=bool)
    listed[qidx[ids == answers[qidx]]] = True
    own = np.flatnonzero(~listed & (answers >= lo) & (answers < hi))
    return np.concatenate([qidx, own]), np.concatenate([ids, answers[own]])


def _in_partition(candidates: np.ndarray | None, lo: int, hi: int) -> np.ndarray:
    if candidates is None:
        return np.arange(lo, hi, dtype=np.int64)
    return candidates[(candidates >= lo) & (candidates < hi)]


def rank_queries(
    side: str,
    anchors: np.ndarray,
    rels: np.ndarray,
    answers: np.ndarray,
    anchor_type: str,
    target_type: str,
    source: EntitySource,
    scorer: QueryScorer,
    filters: FilterIndex,
    options: RankingOptions,
) -> QueryRanks:
    """Filtered realistic ranks of ``answers`` among all candidates of ``target_type`` (or
    the sample), and how many candidates each was ranked among, its answer included.

    All queries share one anchor type and one target type (the caller groups
    relations by their entity types). Ids are global ids.
    """
    n = len(anchors)
    if n == 0:
        return QueryRanks(np.empty(0, dtype=np.float64), np.empty(0, dtype=np.int64))
    device = options.device
    anchor_vecs = gather(source, anchor_type, anchors, device)
    rel_t = torch.from_numpy(np.asarray(rels, dtype=np.int64)).to(device)
    with torch.no_grad():
        true_scores = pair_scores(scorer, side, anchor_vecs, rel_t, gather(source, target_type, answers, device))
    if not bool(torch.isfinite(true_scores).all()):
        raise NonFiniteScoreError(f"the model gives non-finite scores to {int((~torch.isfinite(true_scores)).sum())} {side} queries")
    greater = torch.zeros(n, dtype=torch.int64, device=device)
    equal = torch.zeros(n, dtype=torch.int64, device=device)
    competitors = np.zeros(n, dtype=np.int64)  # counted on the host: no device sync

    offsets = source.partition_offsets(target_type)
    batches = _batches(n, options.query_batch)
    mine = [options.shard is None or b % options.shard[1] == options.shard[0] for b in range(len(batches))]
    scores_of = _batch_scorers(scorer, side, anchor_vecs, rel_t, batches, mine)
    samples = None
    if options.num_sampled is not None:
        rng = np.random.default_rng(options.seed)
        samples = [np.unique(rng.integers(0, offsets[-1], options.num_sampled)) for _ in batches]

    for part in range(len(offsets) - 1):
        lo, hi = int(offsets[part]), int(offsets[part + 1])
        if hi == lo:
            continue
        vectors = source.load(target_type, part).to(device)
        for b, sl in enumerate(batches):
            if not mine[b]:
                continue
            candidates = _in_partition(None if samples is None else samples[b], lo, hi)
            if candidates.size == 0:
                continue
            # Known answers of this batch and its answers, masked wherever they are candidates.
            pairs = _masked_pairs(filters, side, anchors[sl], rels[sl], answers[sl], part, lo, hi)
            masked = MaskedCandidates.among(pairs, candidates, options.candidate_chunk)
            competitors[sl] += candidates.size - masked.per_query(sl.stop - sl.start)
            with torch.no_grad():
                for _, scores in _masked_scores(scores_of[b], vectors, lo, candidates, masked):
                    count_above_and_tied(scores, true_scores[sl], greater[sl], equal[sl])
    ranks = 1.0 + greater.cpu().numpy().astype(np.float64) + equal.cpu().numpy().astype(np.float64) / 2.0
    counts = competitors + 1
    for b, sl in enumerate(batches):
        if not mine[b]:
            ranks[sl], counts[sl] = 0.0, 0  # another worker's: summed in from its share
    return QueryRanks(ranks, counts)


def top_k(
    side: str,
    anchors: np.ndarray,
    rels: np.ndarray,
    anchor_type: str,
    target_type: str,
    source: EntitySource,
    scorer: QueryScorer,
    k: int,
    options: RankingOptions,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best candidates of ``target_type`` per query: (gids [N, k'], scores [N, k']).

    ``candidates``: sorted global ids to choose from (default: every entity of
    the type). ``exclude``: (query position, gid) pairs never returned (e.g.
    training items). ``k' = min(k, number of candidates)``; slots that only
    excluded candidates could fill have id -1. Ties are broken arbitrarily.
    """
    n = len(anchors)
    device = options.device
    offsets = source.partition_offsets(target_type)
    k = min(k, int(offsets[-1]) if candidates is None else int(candidates.size))
    best_scores = torch.full((n, k), float("-inf"), device=device)
    best_ids = torch.full((n, k), -1, dtype=torch.int64, device=device)
    if n == 0 or k == 0:
        return best_ids.cpu().numpy(), best_scores.cpu().numpy()
    anchor_vecs = gather(source, anchor_type, anchors, device)
    rel_t = torch.from_numpy(np.asarray(rels, dtype=np.int64)).to(device)
    ex_q, ex_ids = exclude if exclude is not None else (np.empty(0, np.int64), np.empty(0, np.int64))
    batches = _batches(n, options.query_batch)
    scores_of = _batch_scorers(scorer, side, anchor_vecs, rel_t, batches)
    for part in range(len(offsets) - 1):
        lo, hi = int(offsets[part]), int(offsets[part + 1])
        ids_p = _in_partition(candidates, lo, hi)
        if ids_p.size == 0:
            continue
        vectors = source.load(target_type, part).to(device)
        for b, sl in enumerate(batches):
            in_batch = (ex_q >= sl.start) & (ex_q < sl.stop)
            masked = MaskedCandidates.among((ex_q[in_batch] - sl.start, ex_ids[in_batch]), ids_p, options.candidate_chunk)
            with torch.no_grad():
                for chunk, scores in _masked_scores(scores_of[b], vectors, lo, ids_p, masked):
                    ids = torch.from_numpy(chunk).to(device).expand(scores.shape[0], -1)
                    top = torch.topk(torch.cat([best_scores[sl], scores], dim=1), k, dim=1, sorted=True)
                    best_scores[sl] = top.values
                    best_ids[sl] = torch.gather(torch.cat([best_ids[sl], ids], dim=1), 1, top.indices)
    best_ids[torch.isneginf(best_scores)] = -1
    return best_ids.cpu().numpy(), best_scores.cpu().numpy()
