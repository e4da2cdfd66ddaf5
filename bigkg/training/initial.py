"""A fresh run's first partitions: seeded random rows, or an earlier run's where ``model.init_from`` has them,
within ``model.max_norm``."""

from __future__ import annotations

from typing import Iterator, Mapping

import torch

from bigkg.checkpoint import PartitionKey, PartitionState
from bigkg.config import Config
from bigkg.format import Manifest
from bigkg.optim import clip_row_norms
from bigkg.pretrained import PretrainedInit
from bigkg.storage import all_partition_keys


def initial_partition(config: Config, key: PartitionKey, size: int, type_index: int) -> PartitionState:
    """Seeded N(0, init_scale²) embeddings and zero Adagrad state."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + type_index * 10_007 + key[1])
    emb = torch.randn(size, config.model.dim, generator=gen).mul_(config.model.init_scale)  # in place: no second table
    return PartitionState(emb, torch.zeros(size))


class InitialPartitions(Mapping[PartitionKey, PartitionState]):
    """Every partition of a fresh run, each made when it is looked up: the first checkpoint
    writes them one by one, so memory never holds more than one, however many there are."""

    def __init__(self, config: Config, manifest: Manifest, pretrained: PretrainedInit | None = None):
        self.config, self.manifest, self.pretrained = config, manifest, pretrained
        self._keys = all_partition_keys(manifest)
        self.type_index = {et.name: k for k, et in enumerate(manifest.entity_types)}

    def __getitem__(self, key: PartitionKey) -> PartitionState:
        if key not in self._keys:
            raise KeyError(key)
        size = self.manifest.entity_type(key[0]).partition_counts[key[1]]
        state = initial_partition(self.config, key, size, self.type_index[key[0]])
        if self.pretrained is not None:
            self.pretrained.fill(key[0], key[1], state)
        clip_row_norms(state.embeddings, self.config.model.max_norm)  # updates keep rows within it: start so
        return state

    def __contains__(self, key: object) -> bool:  # Mapping's default would build the partition
        return key in self._keys

    def __iter__(self) -> Iterator[PartitionKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
