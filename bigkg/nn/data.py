"""Raw ``head<TAB>relation<TAB>tail`` files as id tensors, for running an
encoder on a small dataset directly (benchmarks, tests) without partitioning."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from bigkg.nn.graph import Graph, GraphError


def read_triples(path: Path) -> tuple[Tensor, int, int]:
    """Triples [n, 3] (head, relation, tail ids numbered in order of first
    appearance), the number of entities and of relations."""
    entities: dict[str, int] = {}
    relations: dict[str, int] = {}
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise GraphError(f"{path}:{lineno}: expected head<TAB>relation<TAB>tail, got {len(fields)} fields")
            h, r, t = fields
            rows.append((entities.setdefault(h, len(entities)), relations.setdefault(r, len(relations)), entities.setdefault(t, len(entities))))
    return torch.tensor(rows, dtype=torch.long).view(-1, 3), len(entities), len(relations)


def graph_of(path: Path, **options: object) -> Graph:
    """The reciprocal graph of a triple file (``options`` go to :class:`Graph`)."""
    triples, num_entities, num_relations = read_triples(path)
    return Graph(triples[:, 0], triples[:, 1], triples[:, 2], num_entities, num_relations, **options)  # type: ignore[arg-type]
