"""Top-k answers for one (head, relation, ?) or (?, relation, tail) query given by names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from bigkg.evaluation.filters import FilterIndex, QueryKeys, entity_offsets, filter_stride
from bigkg.evaluation.ranking import RankingOptions, top_k
from bigkg.evaluation.source import EvaluationError, TrainedRun
from bigkg.format import DatasetError, Manifest, read_entity_names


def find_entity(root: str | Path, manifest: Manifest, entity_type: str, name: str) -> int:
    """Global id of the entity ``name`` of ``entity_type``; reads one name table at a time."""
    offsets = entity_offsets(manifest)[entity_type]
    for part in range(len(offsets) - 1):
        index = pc.index(read_entity_names(Path(root), entity_type, part), name).as_py()
        if index >= 0:
            return int(offsets[part] + index)
    raise EvaluationError(f"no entity named {name!r} of type {entity_type!r} in {root}")


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


def query(run: TrainedRun, relation: str, k: int, *, head: str | None = None, tail: str | None = None,
          exclude_known: bool = False) -> list[Answer]:
    """The ``k`` best tails of (head, relation) — or heads of (relation, tail) when ``tail`` is given."""
    if (head is None) == (tail is None):
        raise EvaluationError("give exactly one of a head or a tail")
    manifest, root = run.manifest, run.config.dataset
    try:
        rel_id = manifest.relation_index(relation)
    except DatasetError as exc:
        raise EvaluationError(str(exc)) from exc
    rel = manifest.relations[rel_id]
    side = "rhs" if head is not None else "lhs"
    anchor_type, target_type = (rel.lhs_type, rel.rhs_type) if side == "rhs" else (rel.rhs_type, rel.lhs_type)
    anchor = find_entity(root, manifest, anchor_type, head if head is not None else tail)  # type: ignore[arg-type]
    anchors, rels = np.array([anchor]), np.array([rel_id])
    keys = QueryKeys.of_anchors(side, anchors, rels, filter_stride(manifest))
    _, known = FilterIndex.for_queries(root, manifest, keys).known_answers(side, anchors, rels)
    exclude = (np.zeros(known.size, dtype=np.int64), known) if exclude_known else None
    options = RankingOptions(candidate_chunk=run.config.eval.candidate_chunk, device=run.device)
    ids, scores = top_k(side, anchors, rels, anchor_type, target_type, run.source, run.score_fn, k, options, exclude)
    valid = ids[0] >= 0
    ids, scores = ids[0][valid], scores[0][valid]
    names = entity_names(root, manifest, target_type, ids)
    known_set = set(known.tolist())
    return [Answer(n, float(s), int(i) in known_set) for n, s, i in zip(names, scores, ids)]
