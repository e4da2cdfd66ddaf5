"""Top-k answers of (head, relation, ?) or (?, relation, tail) queries given by names: one
query, or a file of anchors answered in batches into Parquet; and an entity's nearest
neighbours by the cosine of their vectors."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from bigkg.atomic import atomic_file
from bigkg.evaluation.filters import FilterIndex, QueryKeys, entity_offsets, filter_stride
from bigkg.evaluation.ranking import RankingOptions, candidate_chunk, top_k
from bigkg.evaluation.source import EvaluationError, TrainedRun
from bigkg.format import DatasetError, Manifest, read_entity_names

ANSWER_SCHEMA = pa.schema(
    [("anchor", pa.string()), ("rank", pa.int32()), ("answer", pa.string()), ("score", pa.float32()), ("known", pa.bool_())]
)


def find_entities(root: str | Path, manifest: Manifest, entity_type: str, names: pa.Array) -> np.ndarray:
    """Global ids of ``names`` (-1 for a name the type does not have); reads each name table once."""
    offsets = entity_offsets(manifest)[entity_type]
    gids = np.full(len(names), -1, dtype=np.int64)
    for part in range(len(offsets) - 1):
        local = pc.index_in(names, value_set=read_entity_names(Path(root), entity_type, part))
        local = local.fill_null(-1).to_numpy(zero_copy_only=False)
        gids[local >= 0] = offsets[part] + local[local >= 0]
    return gids


def entity_ids(root: str | Path, manifest: Manifest, entity_type: str, names: list[str],
               line: Callable[[int], str]) -> np.ndarray:
    """Global ids of ``names``; a name the type lacks is an error prefixed by ``line(position)``."""
    gids = find_entities(root, manifest, entity_type, pa.array(names, pa.string()))
    if (gids < 0).any():
        bad = int(np.flatnonzero(gids < 0)[0])
        raise EvaluationError(f"{line(bad)}no entity named {names[bad]!r} of type {entity_type!r} in {root}")
    return gids


def entity_names(root: str | Path, manifest: Manifest, entity_type: str, gids: np.ndarray) -> list[str]:
    """Names of global ids, reading only the partitions they fall in."""
    offsets = entity_offsets(manifest)[entity_type]
    parts = np.searchsorted(offsets, gids, side="right") - 1
    out = [""] * len(gids)
    for part in np.unique(parts):
        sel = np.flatnonzero(parts == part)
        names = read_entity_names(Path(root), entity_type, int(part))
        for k, name in zip(sel, names.take(gids[sel] - offsets[part]).to_pylist()):
            out[k] = name
    return out


@dataclass
class Answer:
    name: str
    score: float
    known: bool  # a true triple of train/valid/test


@dataclass
class AnswerBatch:
    """The answers of consecutive anchors: row q holds anchor q's answers, best first."""

    anchors: list[str]
    names: list[list[str]]
    scores: np.ndarray  # [n, k]
    known: np.ndarray  # [n, k] bool


def answer(run: TrainedRun, relation: str, side: str, anchors: Iterable[str], k: int, *, exclude_known: bool = False,
           batch: int = 65536, where: str = "") -> Iterator[AnswerBatch]:
    """The ``k`` best tails (``side`` "rhs": anchors are heads) or heads ("lhs": anchors are
    tails) of ``relation`` for every anchor name, ``batch`` anchors at a time; ``where``
    names the anchors' origin in errors. Memory holds one batch's anchors and answers, their
    known answers and one or two partitions of candidates."""
    if k < 1:
        raise EvaluationError(f"-k must be at least 1, got {k}")
    anchors = iter(anchors)
    manifest, root = run.manifest, run.config.dataset
    try:
        rel_id = manifest.relation_index(relation)
    except DatasetError as exc:
        raise EvaluationError(str(exc)) from exc
    rel = manifest.relations[rel_id]
    anchor_type, target_type = (rel.lhs_type, rel.rhs_type) if side == "rhs" else (rel.rhs_type, rel.lhs_type)
    options = _options(run)
    stride = filter_stride(manifest)
    targets = int(entity_offsets(manifest)[target_type][-1])  # (query, answer) pairs as one int64 each
    start = 0
    while names := list(itertools.islice(anchors, batch)):
        gids = entity_ids(root, manifest, anchor_type, names,
                          lambda k: f"{where}, line {start + k + 1}: " if where else "")
        rels = np.full(len(gids), rel_id, dtype=np.int64)
        keys = QueryKeys.of_anchors(side, gids, rels, stride)
        known_q, known_ids = FilterIndex.for_queries(root, manifest, keys).known_answers(side, gids, rels)
        exclude = (known_q, known_ids) if exclude_known else None
        ids, scores = top_k(side, gids, rels, anchor_type, target_type, run.source, run.model.candidate_scorer, k, options,
                            exclude)
        pair = np.arange(len(gids), dtype=np.int64)[:, None] * targets + ids
        is_known = np.isin(pair, known_q * targets + known_ids) & (ids >= 0)
        answer_names = entity_names(root, manifest, target_type, ids[ids >= 0])
        rows, taken = [], 0
        for row in ids:  # -1: a slot only excluded candidates could fill
            valid = int((row >= 0).sum())
            rows.append(answer_names[taken : taken + valid])
            taken += valid
        yield AnswerBatch(names, rows, scores, is_known)
        start += len(names)


@dataclass
class Neighbour:
    name: str
    similarity: float  # cosine of the two vectors


def similar(run: TrainedRun, name: str, k: int, entity_type: str | None = None) -> tuple[str, list[Neighbour]]:
    """The ``k`` entities of ``name``'s type whose vectors (through the encoder, if any) have the
    highest cosine with ``name``'s, ``name`` left out; with the type (needed only when several
    types have an entity of that name)."""
    if k < 1:
        raise EvaluationError(f"-k must be at least 1, got {k}")
    manifest, root = run.manifest, run.config.dataset
    types = [et.name for et in manifest.entity_types]
    if entity_type is not None and entity_type not in types:
        raise EvaluationError(f"no entity type {entity_type!r} in {root}; its types: {', '.join(types)}")
    found = {t: int(find_entities(root, manifest, t, pa.array([name], pa.string()))[0])
             for t in ([entity_type] if entity_type else types)}
    found = {t: gid for t, gid in found.items() if gid >= 0}
    if not found:
        raise EvaluationError(f"no entity named {name!r}{f' of type {entity_type!r}' if entity_type else ''} in {root}")
    if len(found) > 1:
        raise EvaluationError(f"entity types {', '.join(sorted(found))} all have an entity named {name!r}: "
                              "choose one with --entity-type")
    ((kind, gid),) = found.items()
    anchor = np.array([gid], dtype=np.int64)
    options = _options(run)
    # With model.bias, coordinate 0 is a popularity term, not a direction: left out of the cosine.
    cosine = functools.partial(_cosine, skip=1 if run.config.model.bias else 0)
    ids, scores = top_k("rhs", anchor, np.zeros(1, np.int64), kind, kind, run.source, cosine, k, options,
                        exclude=(np.zeros(1, np.int64), anchor))
    valid = ids[0] >= 0
    names = entity_names(root, manifest, kind, ids[0][valid])
    return kind, [Neighbour(n, float(score)) for n, score in zip(names, scores[0][valid])]


def _options(run: TrainedRun) -> RankingOptions:
    """Ranking for queries: every candidate, the run's query batch, candidate chunk and device."""
    e = run.config.eval
    chunk = candidate_chunk(e.candidate_chunk, e.query_batch, run.device)
    return RankingOptions(query_batch=e.query_batch, candidate_chunk=chunk, device=run.device)


def _cosine(side: str, anchors: torch.Tensor, rels: torch.Tensor, skip: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ranking scorer of [n, d] anchors: against [m, d] candidates, the cosines [n, m] of
    their coordinates from ``skip`` on."""
    directions = F.normalize(anchors[:, skip:], dim=-1)
    return lambda candidates: directions @ F.normalize(candidates[:, skip:], dim=-1).T


def query(run: TrainedRun, relation: str, k: int, *, head: str | None = None, tail: str | None = None,
          exclude_known: bool = False) -> list[Answer]:
    """The ``k`` best tails of (head, relation) — or heads of (relation, tail) when ``tail`` is given."""
    if (head is None) == (tail is None):
        raise EvaluationError("give exactly one of a head or a tail")
    side, anchor = ("rhs", head) if head is not None else ("lhs", tail)
    (batch,) = answer(run, relation, side, [anchor], k, exclude_known=exclude_known)  # type: ignore[list-item]
    return [Answer(name, float(batch.scores[0, r]), bool(batch.known[0, r])) for r, name in enumerate(batch.names[0])]


def decoded_lines(lines: Iterable[bytes], path: Path) -> Iterator[str]:
    """Each line as text without its line break; bytes that are not UTF-8 are an error naming the line."""
    for number, raw in enumerate(lines, 1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise EvaluationError(f"{path}, line {number}: not valid UTF-8 text") from exc


def answer_file(run: TrainedRun, relation: str, side: str, anchors_path: str | Path, k: int, out: str | Path, *,
                exclude_known: bool = False, batch: int = 65536) -> dict[str, int | str]:
    """Answer every anchor named in ``anchors_path`` (one name per line) into Parquet at ``out``:
    a row per anchor and answer (``anchor``, ``rank`` from 1, ``answer``, ``score``, ``known``),
    written under a temporary name and renamed when complete."""
    anchors_path = Path(anchors_path)
    if not anchors_path.is_file():
        raise EvaluationError(f"the anchors file {anchors_path} does not exist")
    rows = anchors = 0
    with open(anchors_path, "rb") as lines, atomic_file(Path(out)) as tmp, \
            pq.ParquetWriter(tmp, ANSWER_SCHEMA) as writer:
        anchor_names = decoded_lines(lines, anchors_path)
        for part in answer(run, relation, side, anchor_names, k, exclude_known=exclude_known, batch=batch,
                           where=str(anchors_path)):
            anchors += len(part.anchors)
            counts = [len(row) for row in part.names]
            valid = np.arange(part.scores.shape[1]) < np.array(counts)[:, None]
            writer.write_table(pa.table({
                "anchor": np.repeat(part.anchors, counts).tolist(),
                "rank": np.concatenate([np.arange(1, c + 1) for c in counts]).astype(np.int32),
                "answer": [name for row in part.names for name in row],
                "score": part.scores[valid].astype(np.float32),
                "known": part.known[valid],
            }, schema=ANSWER_SCHEMA))
            rows += sum(counts)
    return {"path": str(out), "anchors": anchors, "rows": rows}
