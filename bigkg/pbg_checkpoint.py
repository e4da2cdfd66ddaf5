"""PyTorch-BigGraph checkpoints as entity tables: its vectors with its names, for
``bigkg convert`` (and from there ``model.init_from``, queries outside bigkg, ...).

A PBG checkpoint directory holds ``checkpoint_version.txt`` (the latest version N),
``config.json`` (the training config: entity types, their partition counts,
``entity_path``) and, per entity type and partition, ``embeddings_<type>_<part>.vN.h5``
whose dataset ``embeddings`` has a row per entity. The names are not in the checkpoint:
PBG's importer writes them to ``entity_path`` as ``entity_names_<type>_<part>.json``, a
JSON list in row order. A snapshot directory (``epoch_<k>``) has the same layout.
Featurized entity types hold a row per feature, not per entity, and are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import torch

from bigkg.errors import BigKGError
from bigkg.export import EntityTables
from bigkg.format import EntityType


class PBGCheckpointError(BigKGError):
    """A PBG checkpoint that cannot be read as asked."""


def _strip_file_url(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


class PBGCheckpoint:
    """The entity vectors of one version of a PBG checkpoint directory (an ``EntitySource``),
    and their names from ``entities`` (default: the config's ``entity_path``)."""

    def __init__(self, checkpoint: str | Path, *, entities: str | Path | None = None, version: int | None = None):
        self.root = Path(checkpoint)
        config_path = self.root / "config.json"
        if not config_path.is_file():
            raise PBGCheckpointError(f"{self.root} is not a PBG checkpoint directory: it has no config.json")
        try:
            config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
            entity_config = config["entities"]
            entity_path = config.get("entity_path")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PBGCheckpointError(f"cannot read the entity types of PBG config {config_path}: {exc!r}") from exc
        self.version = self._latest_version() if version is None else version
        self.entities = Path(_strip_file_url(str(entities if entities is not None else entity_path or "")))
        if not self.entities.is_dir():
            raise PBGCheckpointError(
                f"the entity names directory {str(self.entities)!r} (entity_path of {config_path}) does not exist "
                f"here; give it with --entities DIR")
        self.entity_types = []
        for name, options in entity_config.items():
            if options.get("featurized"):
                raise PBGCheckpointError(f"entity type {name!r} of {config_path} is featurized: its vectors are "
                                         f"per feature, not per entity, and bigkg has no featurized entities")
            parts = int(options.get("num_partitions", 1))
            self.entity_types.append(EntityType(name, [self._count(name, p) for p in range(parts)]))

    def _latest_version(self) -> int:
        path = self.root / "checkpoint_version.txt"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise PBGCheckpointError(f"cannot read the checkpoint version from {path}: {exc}") from exc

    def embeddings_path(self, entity_type: str, part: int) -> Path:
        return self.root / f"embeddings_{entity_type}_{part}.v{self.version}.h5"

    def _dataset_shape(self, entity_type: str, part: int) -> tuple[int, ...]:
        path = self.embeddings_path(entity_type, part)
        try:
            with h5py.File(path, "r") as fh:
                return tuple(fh["embeddings"].shape)
        except (OSError, KeyError) as exc:
            raise PBGCheckpointError(f"cannot read the embeddings of {path}: {exc}") from exc

    def _count(self, entity_type: str, part: int) -> int:
        shape = self._dataset_shape(entity_type, part)
        if len(shape) != 2:
            raise PBGCheckpointError(f"{self.embeddings_path(entity_type, part)}: embeddings of shape {shape}, "
                                     f"expected [entities, dimension]")
        return shape[0]

    # -- EntitySource -----------------------------------------------------------------------
    def partition_offsets(self, entity_type: str) -> np.ndarray:
        return next(et.offsets for et in self.entity_types if et.name == entity_type)

    def load(self, entity_type: str, part: int) -> torch.Tensor:
        with h5py.File(self.embeddings_path(entity_type, part), "r") as fh:
            return torch.from_numpy(np.asarray(fh["embeddings"], dtype=np.float32))

    def dimension(self, entity_type: str) -> int:
        return self._dataset_shape(entity_type, 0)[1]

    # -- names ------------------------------------------------------------------------------
    def names(self, entity_type: str, part: int) -> pa.Array:
        path = self.entities / f"entity_names_{entity_type}_{part}.json"
        try:
            names = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PBGCheckpointError(f"cannot read the entity names {path}: {exc}") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PBGCheckpointError(f"{path} is not a JSON list of names")
        return pa.array(names, pa.string())

    def tables(self) -> EntityTables:
        return EntityTables(self.entity_types, self.names, self)
