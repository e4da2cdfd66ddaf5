"""Scores of given (head, relation, tail) triples named in a file, and entity vectors by name.

The score of a triple is the model's tail-prediction score of it, the one ``bigkg query
--head`` ranks by (a reciprocal model's head-prediction score of the same triple is
another number). Triples are read and scored ``batch`` lines at a time, so memory holds
one batch, its known triples and the partitions its entities fall in.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bigkg.atomic import atomic_file
from bigkg.evaluation.filters import FilterIndex, QueryKeys, entity_offsets, filter_stride
from bigkg.evaluation.query import decoded_lines, entity_ids
from bigkg.evaluation.ranking import gather, pair_scores
from bigkg.evaluation.source import EvaluationError, TrainedRun
from bigkg.format import DatasetError

SCORE_SCHEMA = pa.schema(
    [("head", pa.string()), ("relation", pa.string()), ("tail", pa.string()), ("score", pa.float32()), ("known", pa.bool_())]
)


@dataclass
class ScoredTriples:
    """Consecutive triples of the input with their scores."""

    heads: list[str]
    relations: list[str]
    tails: list[str]
    scores: np.ndarray  # [n] float32
    known: np.ndarray  # [n] bool: a triple of train, valid or test


def entity_vectors(run: TrainedRun, entity_type: str, names: Iterable[str]) -> torch.Tensor:
    """[n, d]: the representations (through the encoder, if any) of entities ``names`` of a type."""
    names = list(names)
    types = [et.name for et in run.manifest.entity_types]
    if entity_type not in types:
        raise EvaluationError(f"no entity type {entity_type!r} in {run.config.dataset}; its types: {', '.join(types)}")
    if not names:
        return torch.empty((0, run.source.dimension(entity_type)))
    return gather(run.source, entity_type, entity_ids(run.config.dataset, run.manifest, entity_type, names, lambda k: ""))


def score_triples(run: TrainedRun, triples: Iterable[tuple[str, str, str]], *, batch: int = 65536,
                  where: str = "") -> Iterator[ScoredTriples]:
    """The score of every (head, relation, tail) name triple, ``batch`` triples at a time;
    ``where`` names the triples' origin in errors, which give the triple's line."""
    manifest, root = run.manifest, run.config.dataset
    stride = filter_stride(manifest)
    entity_types = [et.name for et in manifest.entity_types]
    targets = max(int(o[-1]) for o in entity_offsets(manifest).values())  # (triple, tail) pairs as one int64 each
    triples, start = iter(triples), 0
    while chunk := list(itertools.islice(triples, batch)):
        heads, relations, tails = (list(column) for column in zip(*chunk))

        def line(k: int) -> str:
            return f"{where}, line {start + k + 1}: " if where else f"triple {start + k + 1}: "

        rels = _relation_ids(run, relations, line)
        lhs_types = np.array([manifest.relations[r].lhs_type for r in rels])
        rhs_types = np.array([manifest.relations[r].rhs_type for r in rels])
        head_ids, tail_ids = np.empty(len(chunk), np.int64), np.empty(len(chunk), np.int64)
        for entity_type in entity_types:
            for ids, types, names in ((head_ids, lhs_types, heads), (tail_ids, rhs_types, tails)):
                rows = np.flatnonzero(types == entity_type)
                if rows.size:
                    ids[rows] = entity_ids(root, manifest, entity_type, [names[k] for k in rows],
                                           lambda k: line(int(rows[k])))
        head_vecs, tail_vecs = _vectors(run, lhs_types, head_ids), _vectors(run, rhs_types, tail_ids)
        with torch.no_grad():
            rel_t = torch.from_numpy(rels).to(run.device)
            scores = pair_scores(run.model.candidate_scorer, "rhs", head_vecs, rel_t, tail_vecs)
        keys = QueryKeys.of_anchors("rhs", head_ids, rels, stride)
        known_at, known_tails = FilterIndex.for_queries(root, manifest, keys).known_answers("rhs", head_ids, rels)
        pairs = np.arange(len(chunk), dtype=np.int64) * targets + tail_ids
        known = np.isin(pairs, known_at * targets + known_tails)
        yield ScoredTriples(heads, relations, tails, scores.cpu().numpy().astype(np.float32), known)
        start += len(chunk)


def score_file(run: TrainedRun, triples_path: str | Path, out: str | Path, *, batch: int = 65536) -> dict[str, int | str]:
    """Score every triple of ``triples_path`` (a line per triple: head, relation and tail names
    separated by tabs) into Parquet at ``out`` (``head``, ``relation``, ``tail``, ``score``,
    ``known``; a row per line, in order), written under a temporary name and renamed when
    complete."""
    triples_path = Path(triples_path)
    if not triples_path.is_file():
        raise EvaluationError(f"the triples file {triples_path} does not exist")
    rows = 0
    with open(triples_path, "rb") as lines, atomic_file(Path(out)) as tmp, pq.ParquetWriter(tmp, SCORE_SCHEMA) as writer:
        for part in score_triples(run, _tab_separated(decoded_lines(lines, triples_path), triples_path), batch=batch,
                                  where=str(triples_path)):
            writer.write_table(pa.table({"head": part.heads, "relation": part.relations, "tail": part.tails,
                                         "score": part.scores, "known": part.known}, schema=SCORE_SCHEMA))
            rows += len(part.heads)
    return {"path": str(out), "triples": rows}


def _tab_separated(lines: Iterable[str], path: Path) -> Iterator[tuple[str, str, str]]:
    for number, text in enumerate(lines, 1):
        fields = text.split("\t")
        if len(fields) != 3:
            raise EvaluationError(f"{path}, line {number}: expected head, relation and tail separated by tabs, "
                                  f"got {len(fields)} field{'s' if len(fields) != 1 else ''}: {text[:80]!r}")
        yield fields[0], fields[1], fields[2]


def _relation_ids(run: TrainedRun, relations: list[str], line: Callable[[int], str]) -> np.ndarray:
    index: dict[str, int] = {}
    for k, name in enumerate(relations):
        if name not in index:
            try:
                index[name] = run.manifest.relation_index(name)
            except DatasetError as exc:
                raise EvaluationError(f"{line(k)}{exc}") from exc
    return np.array([index[name] for name in relations], dtype=np.int64)


def _vectors(run: TrainedRun, types: np.ndarray, gids: np.ndarray) -> torch.Tensor:
    """[n, d]: row ``gids[k]`` of entity type ``types[k]``, for every k."""
    out: torch.Tensor | None = None
    for entity_type in np.unique(types):
        rows = np.flatnonzero(types == entity_type)
        vectors = gather(run.source, str(entity_type), gids[rows], run.device)
        if out is None:
            out = vectors.new_empty((len(gids), vectors.shape[1]))
        out[torch.from_numpy(rows).to(out.device)] = vectors
    assert out is not None
    return out
