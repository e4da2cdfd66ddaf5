"""PyTorch-BigGraph checkpoints as entity tables: its vectors with its names, for
``bigkg convert`` (and from there ``model.init_from``, queries outside bigkg, ...).

A PBG checkpoint directory holds ``checkpoint_version.txt`` (the latest version N),
``config.json`` (the training config: entity types, their partition counts,
``entity_path``) and, per entity type and partition, ``embeddings_<type>_<part>.vN.h5``
whose dataset ``embeddings`` has a row per entity. The names are not in the checkpoint:
PBG's importer writes them to ``entity_path`` as ``entity_names_<type>_<part>.json``, a
JSON list in row order. A snapshot directory (``epoch_<k>``) has the same layout.
Featurized entity types hold a row per feature, not per entity, and are refused. The
vectors written are the ones PBG scores: with ``max_norm`` each row scaled down to it as
PBG's lookup does, with ``global_emb`` (PBG's default) its type's global embedding added.

Relation parameters (``model.v<N>.h5``) convert for PBG's dynamic relations, its mode
for graphs of many relations: it learns two operators per relation, and scores an edge
(u, r, v) against tail candidates as c(g_r(u), v) and against head candidates as
c(u, h_r(v)) (``lhs_operators``, ``rhs_operators``). With a symmetric comparator (all
four are) that is bigkg's reciprocal model: g_r is relation r's operator and h_r its
reciprocal twin's, with the same parameters under other names. Without dynamic relations
PBG applies a relation's operator to the tail, which bigkg's operators (on the head)
cannot express, so only the operator ``none`` converts there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pyarrow as pa
import torch

from bigkg.errors import BigKGError
from bigkg.export import EntityTables, relation_row
from bigkg.format import EntityType
from bigkg.optim import clip_row_norms


class PBGCheckpointError(BigKGError):
    """A PBG checkpoint that cannot be read as asked."""


def _strip_file_url(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


# PBG's names of the dynamic operators' parameters -> bigkg's (bigkg.model.operators)
_PARAMETER_NAMES = {"diagonals": "diagonal", "translations": "translation", "linear_transformations": "matrix",
                    "real": "real", "imag": "imag"}
# Each PBG dynamic operator with bigkg's counterpart of the same name, and its parameters' PBG names
_OPERATOR_PARAMETERS = {"none": (), "diagonal": ("diagonals",), "translation": ("translations",),
                        "linear": ("linear_transformations",), "affine": ("linear_transformations", "translations"),
                        "complex_diagonal": ("real", "imag")}


def _num_partitions(config_path: Path, entity_type: str, options: Any) -> int:
    """An entity type's ``num_partitions`` (PBG's default 1), checked: a malformed config is
    an error naming the key, not a crash."""
    if not isinstance(options, dict):
        raise PBGCheckpointError(f"{config_path}: entities.{entity_type} is {options!r}, not an object of options")
    parts = options.get("num_partitions", 1)
    if not isinstance(parts, int) or isinstance(parts, bool) or parts < 1:
        raise PBGCheckpointError(f"{config_path}: entities.{entity_type}.num_partitions is {parts!r}; expected a "
                                 f"positive integer")
    return parts


def _read_names(path: Path, what: str) -> list[str]:
    """A JSON list of names, as PBG's importer writes them; ``what`` they are names them in errors."""
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PBGCheckpointError(f"cannot read the {what} {path}: {exc}") from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PBGCheckpointError(f"{path} is not a JSON list of {what}")
    return names


def _read_config(config_path: Path) -> dict[str, Any]:
    """A PBG checkpoint's training config, with its ``entities`` checked to be an object."""
    if not config_path.is_file():
        raise PBGCheckpointError(f"{config_path.parent} is not a PBG checkpoint directory: it has no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        entity_config = config["entities"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PBGCheckpointError(f"cannot read the entity types of PBG config {config_path}: {exc!r}") from exc
    if not isinstance(entity_config, dict):
        raise PBGCheckpointError(f"{config_path}: entities is {type(entity_config).__name__}, not an object of "
                                 f"entity types")
    return config


class PBGCheckpoint:
    """The entity vectors of one version of a PBG checkpoint directory (an ``EntitySource``),
    and their names from ``entities`` (default: the config's ``entity_path``). ``rename``
    maps PBG's entity type names to the ones bigkg's dataset uses (PBG's importer often
    names its one type ``all``, bigkg's partitioner ``entity``); the tables carry the new
    names."""

    def __init__(self, checkpoint: str | Path, *, entities: str | Path | None = None, version: int | None = None,
                 rename: dict[str, str] | None = None):
        self.root = Path(checkpoint)
        self.config_path = self.root / "config.json"
        self.config = _read_config(self.config_path)
        self.version = self._latest_version() if version is None else version
        self.model_path = self.root / f"model.v{self.version}.h5"
        self._datasets: dict[str, str] | None = None
        self._parameters: dict[str, np.ndarray | None] = {}
        names_dir = entities if entities is not None else self.config.get("entity_path") or ""
        self.entities = Path(_strip_file_url(str(names_dir)))
        if not self.entities.is_dir():
            raise PBGCheckpointError(
                f"the entity names directory {str(self.entities)!r} (entity_path of {self.config_path}) does not exist "
                f"here; give it with --entities DIR")
        self.pbg_type = self._renamed_types(rename or {})  # bigkg's name -> PBG's
        self.entity_types = [EntityType(name, [self._count(name, p) for p in range(self._partitions(pbg_name))])
                             for name, pbg_name in self.pbg_type.items()]

    def _renamed_types(self, rename: dict[str, str]) -> dict[str, str]:
        types = self.config["entities"]
        unknown = sorted(set(rename) - set(types))
        if unknown:
            raise PBGCheckpointError(f"{self.config_path} has no entity type {unknown[0]!r} to rename; its types: "
                                     f"{', '.join(types)}")
        renamed = {rename.get(name, name): name for name in types}
        if len(renamed) < len(types):
            raise PBGCheckpointError(f"renaming the entity types of {self.config_path} by {rename} gives two the same name")
        return renamed

    def _partitions(self, pbg_type: str) -> int:
        """The partition count of a PBG entity type, refusing featurized ones."""
        options = self.config["entities"][pbg_type]
        parts = _num_partitions(self.config_path, pbg_type, options)
        if options.get("featurized"):
            raise PBGCheckpointError(f"entity type {pbg_type!r} of {self.config_path} is featurized: its vectors are "
                                     f"per feature, not per entity, and bigkg has no featurized entities")
        return parts

    def _latest_version(self) -> int:
        path = self.root / "checkpoint_version.txt"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise PBGCheckpointError(f"cannot read the checkpoint version from {path}: {exc}") from exc

    def embeddings_path(self, entity_type: str, part: int) -> Path:
        return self.root / f"embeddings_{self.pbg_type[entity_type]}_{part}.v{self.version}.h5"

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
        """The vectors PBG scores: each row as its lookup returns it (``max_norm`` scales it
        down, as ``F.embedding`` does), plus the type's global embedding (``global_emb``)."""
        with h5py.File(self.embeddings_path(entity_type, part), "r") as fh:
            vectors = torch.from_numpy(np.asarray(fh["embeddings"], dtype=np.float32))
        if self.config.get("max_norm"):
            clip_row_norms(vectors, float(self.config["max_norm"]))
        global_embedding = self._model_parameter(f"global_embs.emb_{self.pbg_type[entity_type]}")
        if global_embedding is not None:
            vectors += torch.from_numpy(global_embedding)
        return vectors

    def dimension(self, entity_type: str) -> int:
        return self._dataset_shape(entity_type, 0)[1]

    # -- names ------------------------------------------------------------------------------
    def names(self, entity_type: str, part: int) -> pa.Array:
        return pa.array(_read_names(self.names_path(entity_type, part), "entity names"), pa.string())

    def names_path(self, entity_type: str, part: int) -> Path:
        return self.entities / f"entity_names_{self.pbg_type[entity_type]}_{part}.json"

    def tables(self) -> EntityTables:
        return EntityTables(self.entity_types, self.names, self, origin=lambda entity_type, part: (
            f"{self.names_path(entity_type, part)} and {self.embeddings_path(entity_type, part)}"))

    def _model_parameter(self, key: str) -> np.ndarray | None:
        """The parameter of ``model.v<N>.h5`` (a relation operator's, a global embedding) with
        the state_dict key ``key``; None when there is none. Only the parameters asked for
        are read: the file also holds every relation's operators."""
        if key not in self._parameters:
            dataset = self._parameter_datasets().get(key)
            self._parameters[key] = None if dataset is None else self._read_model_file(
                lambda fh: np.asarray(fh[dataset], dtype=np.float32))
        return self._parameters[key]

    def _parameter_datasets(self) -> dict[str, str]:
        """The dataset of each state_dict key in ``model.v<N>.h5``, found once; a checkpoint
        without the file has none."""
        if self._datasets is None:
            found: dict[str, str] = {}

            def collect(name: str, item: Any) -> None:
                key = item.attrs.get("state_dict_key") if isinstance(item, h5py.Dataset) else None
                if key is not None:
                    found[str(key)] = name

            if self.model_path.is_file():
                self._read_model_file(lambda fh: fh.visititems(collect))
            self._datasets = found
        return self._datasets

    def _read_model_file(self, read: Callable[[h5py.File], Any]) -> Any:
        try:
            with h5py.File(self.model_path, "r") as fh:
                return read(fh)
        except (OSError, KeyError) as exc:
            raise PBGCheckpointError(f"cannot read the model parameters of {self.model_path}: {exc}") from exc

    # -- relations -------------------------------------------------------------------------
    def relation_rows(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(rows of bigkg's relations Parquet, the bigkg model options they belong to)."""
        relations = self.config.get("relations") or []
        operators = {r.get("operator", "none") for r in relations}
        comparator = self.config.get("comparator", "cos")  # PBG's default
        if self.config.get("dynamic_relations"):
            if len(relations) != 1:
                raise PBGCheckpointError(f"{self.config_path}: dynamic_relations with {len(relations)} relation "
                                         f"entries; PBG trains such a model with exactly one")
            operator = relations[0].get("operator", "none")
            rows = self._dynamic_relation_rows(operator)
        elif operators <= {"none"}:
            operator, rows = "none", []
        else:
            raise PBGCheckpointError(
                f"{self.config_path}: without dynamic_relations PBG applies the operators {sorted(operators)} to the "
                f"tail, which bigkg's operators (on the head) cannot express; only entity vectors convert")
        structure = {"dim": int(self.config.get("dimension", 0)), "operator": operator, "relation_operators": {},
                     "comparator": comparator, "bias": bool(self.config.get("bias", False)), "reciprocal": True,
                     "encoder": {"name": "none"}}
        return rows, structure

    def _dynamic_relation_rows(self, operator: str) -> list[dict[str, Any]]:
        if operator not in _OPERATOR_PARAMETERS:
            raise PBGCheckpointError(f"{self.config_path}: PBG's operator {operator!r} has no bigkg counterpart")
        names = _read_names(self.entities / "dynamic_rel_names.json", "relation names")
        rows = []
        for side, reciprocal in (("lhs_operators", False), ("rhs_operators", True)):
            for pbg_name in _OPERATOR_PARAMETERS[operator]:
                key = f"{side}.0.{pbg_name}"
                values = self._model_parameter(key)
                if values is None:  # else the relations would silently start fresh
                    raise PBGCheckpointError(f"{self.model_path} has no {key}, a parameter of PBG's {operator} operators "
                                             f"(is the checkpoint's model file missing or from another model?)")
                if values.shape[0] != len(names):
                    raise PBGCheckpointError(f"{self.model_path}: {key} of shape {values.shape} is not a parameter of "
                                             f"{len(names)} relations' {operator} operators")
                rows += [relation_row(name, reciprocal, operator, _PARAMETER_NAMES[pbg_name], torch.from_numpy(values[r]))
                         for r, name in enumerate(names)]
        return rows
