"""A fresh run's first partitions: seeded random rows, or an export's vectors where it has them."""

from __future__ import annotations

import logging
from typing import Iterator, Mapping

import torch

from bigkg.checkpoint import PartitionKey, PartitionState
from bigkg.config import Config
from bigkg.format import Manifest
from bigkg.pretrained import PretrainedVectors
from bigkg.storage import all_partition_keys

log = logging.getLogger(__name__)


def initial_partition(config: Config, key: PartitionKey, size: int, type_index: int) -> PartitionState:
    """Seeded N(0, init_scale²) embeddings and zero Adagrad state."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + type_index * 10_007 + key[1])
    emb = torch.randn(size, config.model.dim, generator=gen) * config.model.init_scale
    return PartitionState(emb, torch.zeros(size))


class InitialPartitions(Mapping[PartitionKey, PartitionState]):
    """Every partition of a fresh run, each made when it is looked up: the first checkpoint
    writes them one by one, so memory never holds more than one, however many there are."""

    def __init__(self, config: Config, manifest: Manifest):
        self.config, self.manifest = config, manifest
        self._keys = all_partition_keys(manifest)
        self.type_index = {et.name: k for k, et in enumerate(manifest.entity_types)}
        init_from = config.model.init_from
        self.pretrained = PretrainedVectors(init_from, config.dataset, config.model.dim) if init_from else None

    def __getitem__(self, key: PartitionKey) -> PartitionState:
        if key not in self._keys:
            raise KeyError(key)
        size = self.manifest.entity_type(key[0]).partition_counts[key[1]]
        state = initial_partition(self.config, key, size, self.type_index[key[0]])
        if self.pretrained is not None:
            self.pretrained.fill(key[0], key[1], state.embeddings)
        return state

    def __contains__(self, key: object) -> bool:  # Mapping's default would build the partition
        return key in self._keys

    def __iter__(self) -> Iterator[PartitionKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def report(self) -> dict[str, object] | None:
        """Where the vectors came from and how many rows of each type took one; None without ``init_from``."""
        if self.pretrained is None:
            return None
        counts = {et.name: et.count for et in self.manifest.entity_types}
        matched = {name: self.pretrained.matched.get(name, 0) for name in counts}
        for name, n in matched.items():
            log.info("model.init_from: %d of %d entities of type %r start from %s", n, counts[name], name, self.pretrained.path)
        return {"path": str(self.pretrained.path), "matched": matched, "entities": counts}
