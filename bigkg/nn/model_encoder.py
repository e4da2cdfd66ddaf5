"""The KGNN encoder behind the model's ``encode(entity_embeddings, context)`` hook.

Each partition's representations come from propagating over that partition's
graph: the training edges of its diagonal bucket (i, i) whose relation joins
the partition's entity type to itself, read once from the dataset, so that
training and evaluation see the same graph. Rows outside the request enter
propagation as constants from the partition table; the requested rows are the
differentiable leaves, so their gradients include their roles as neighbours.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from bigkg.format import read_bucket
from bigkg.model.encoder import Encoder as ModelEncoder
from bigkg.model.encoder import EncoderContext
from bigkg.nn.encoder import EncoderSpec, build_encoder
from bigkg.nn.graph import Graph

if TYPE_CHECKING:
    from bigkg.format import Manifest


class GraphEncoder(ModelEncoder):
    def __init__(self, spec: EncoderSpec, dataset: Path, manifest: "Manifest", dim: int) -> None:
        super().__init__()
        self.name = spec.name
        self.dataset = Path(dataset)
        self.manifest = manifest
        self.encoder = build_encoder(spec, dim, len(manifest.relations))
        self._graphs: dict[tuple[str, int], Graph] = {}
        self._on_device: dict[tuple[str, int, torch.device], Graph] = {}

    def graph(self, entity_type: str, partition: int) -> Graph:
        """The training graph of ``partition`` of ``entity_type`` (cached, on the CPU)."""
        key = (entity_type, partition)
        if key not in self._graphs:
            edges = read_bucket(self.dataset, "train", partition, partition,
                                expected=self.manifest.bucket_count("train", partition, partition))
            same_type = np.array(
                [r.lhs_type == entity_type and r.rhs_type == entity_type for r in self.manifest.relations], dtype=bool
            )
            keep = same_type[edges.rel.astype(np.int64)] if len(edges.rel) else np.zeros(0, dtype=bool)
            lhs, rhs, rel = (torch.from_numpy(a[keep].astype(np.int64)) for a in (edges.lhs, edges.rhs, edges.rel))
            count = self.manifest.entity_type(entity_type).partition_counts[partition]
            self._graphs[key] = Graph(lhs, rel, rhs, count, len(self.manifest.relations))
        return self._graphs[key]

    def set_training_step(self, step: int) -> None:
        self.encoder.set_training_step(step)

    def whole_partition(self, entity_type: str, partition: int) -> bool:
        """Small graphs propagate in full: one propagation serves every request of a batch."""
        return self.graph(entity_type, partition).num_nodes <= self.encoder.full_graph_max_nodes

    def graph_on(self, entity_type: str, partition: int, device: torch.device) -> Graph:
        """That graph on ``device``, copied there once."""
        key = (entity_type, partition, device)
        if key not in self._on_device:
            self._on_device[key] = self.graph(entity_type, partition).to(device)
        return self._on_device[key]

    def encode(self, entity_embeddings: Tensor, context: EncoderContext) -> Tensor:
        graph = self.graph_on(context.entity_type, context.partition, entity_embeddings.device)
        if context.rows_are_the_table():
            # The rows are the partition itself: propagate over them as given. A
            # leaf stays a leaf, so the first layer saves it by reference instead
            # of keeping a (quantized) copy, and its weights' gradients stay exact.
            return self.encoder.encode(entity_embeddings, graph)
        rows = context.rows
        unique, inverse = torch.unique(rows, return_inverse=True)
        # One leaf row per distinct id, so a repeated id's gradient is not counted twice.
        first = torch.full((unique.numel(),), rows.numel(), dtype=torch.long, device=rows.device)
        first = first.scatter_reduce(0, inverse, torch.arange(rows.numel(), device=rows.device), reduce="amin")
        table = context.table.detach().to(entity_embeddings.dtype)
        return self.encoder.encode_rows(table, unique, entity_embeddings[first], graph)[inverse]

