"""Export trained entity vectors with their names: Parquet, HDF5, NumPy or TSV.

Rows are written partition by partition, so memory holds one partition at a
time (except ``npz``, a single in-memory archive meant for small graphs).
Within an entity type, rows follow global-id order (partition, then local id).

* parquet: one row per entity, columns ``entity_type``, ``name``,
  ``partition``, ``local_id``, ``embedding`` (list<float32>); one or more row
  groups per partition.
* hdf5: a group per entity type with datasets ``embedding`` [n, d] float32,
  ``name`` (UTF-8), ``partition`` int32, ``local_id`` int64.
* npy: a directory with, per entity type, ``<type>.embedding.npy`` [n, d]
  (streamed through a memory map), ``<type>.partition.npy``,
  ``<type>.local_id.npy`` and ``<type>.names.txt`` (one name per line).
* npz: one archive with arrays ``<type>/embedding``, ``<type>/name``,
  ``<type>/partition``, ``<type>/local_id``.
* tsv: one line per entity, its name and then its vector's values, tab-separated
  (the entity lines of PBG's ``torchbiggraph_export_to_tsv``), every type in turn;
  each value is the shortest decimal that reads back as the same float32.

``export_relations`` writes the relation operators' parameters beside them (Parquet, one
row per relation, direction and parameter), which scoring outside bigkg needs.

Every output is built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from bigkg.atomic import atomic_directory, atomic_file
from bigkg.config import ModelConfig
from bigkg.errors import BigKGError
from bigkg.evaluation.ranking import EntitySource
from bigkg.format import DatasetError, EntityType, Manifest, read_entity_names
from bigkg.model import KGModel

FORMATS = ("parquet", "hdf5", "npy", "npz", "tsv")
ROW_GROUP_ROWS = 65536


class ExportError(BigKGError):
    """The export cannot be written as asked."""


@dataclass
class EntityTables:
    """What an export writes: the entity types with their partition sizes, and each
    partition's names (in local-id order) and vectors."""

    entity_types: list[EntityType]
    names: Callable[[str, int], pa.Array]
    source: EntitySource
    # where a partition's names and vectors come from, for errors
    origin: Callable[[str, int], str] = lambda entity_type, part: f"entity type {entity_type!r} partition {part}"

    @classmethod
    def of_dataset(cls, root: str | Path, manifest: Manifest, source: EntitySource) -> "EntityTables":
        """A dataset's names (its entity tables) with ``source``'s vectors."""
        return cls(manifest.entity_types, lambda entity_type, part: read_entity_names(Path(root), entity_type, part), source)

    def partitions(self) -> Iterator[tuple[str, int, pa.Array, np.ndarray]]:
        """(entity type, partition, names, vectors [n, d] float32) in global-id order."""
        for et in self.entity_types:
            for part, count in enumerate(et.partition_counts):
                names = self.names(et.name, part)
                vectors = self.source.load(et.name, part).detach().cpu().float().numpy()
                if len(names) != count or vectors.shape[0] != count:
                    raise DatasetError(
                        f"{self.origin(et.name, part)}: {count} entities expected, "
                        f"the name table has {len(names)} and the vectors {vectors.shape[0]}"
                    )
                yield et.name, part, names, vectors


PARQUET_SCHEMA = pa.schema(
    [
        ("entity_type", pa.string()),
        ("name", pa.string()),
        ("partition", pa.int32()),
        ("local_id", pa.int64()),
        ("embedding", pa.list_(pa.float32())),
    ]
)


def _write_parquet(tmp: Path, tables: EntityTables, group_rows: int) -> None:
    with pq.ParquetWriter(tmp, PARQUET_SCHEMA) as writer:
        for etype, part, names, vectors in tables.partitions():
            n, d = vectors.shape
            for start in range(0, n, group_rows):
                stop = min(start + group_rows, n)
                m = stop - start
                flat = pa.array(np.ascontiguousarray(vectors[start:stop]).reshape(-1), type=pa.float32())
                offsets = pa.array(np.arange(0, (m + 1) * d, d, dtype=np.int32), type=pa.int32())
                batch = pa.record_batch(
                    [
                        pa.array([etype] * m, type=pa.string()),
                        names.slice(start, m),
                        pa.array(np.full(m, part, dtype=np.int32)),
                        pa.array(np.arange(start, stop, dtype=np.int64)),
                        pa.ListArray.from_arrays(offsets, flat),
                    ],
                    schema=PARQUET_SCHEMA,
                )
                writer.write_batch(batch, row_group_size=group_rows)


def _write_hdf5(tmp: Path, tables: EntityTables) -> None:
    with h5py.File(tmp, "w") as fh:
        groups = {}
        for et in tables.entity_types:
            dim = tables.source.dimension(et.name)
            g = fh.create_group(et.name)
            g.create_dataset("embedding", shape=(et.count, dim), dtype="float32")
            g.create_dataset("name", shape=(et.count,), dtype=h5py.string_dtype("utf-8"))
            g.create_dataset("partition", shape=(et.count,), dtype="int32")
            g.create_dataset("local_id", shape=(et.count,), dtype="int64")
            groups[et.name] = (g, et.offsets)
        for etype, part, names, vectors in tables.partitions():
            g, offsets = groups[etype]
            sl = slice(int(offsets[part]), int(offsets[part + 1]))
            g["embedding"][sl] = vectors
            g["name"][sl] = names.to_pylist()
            g["partition"][sl] = part
            g["local_id"][sl] = np.arange(vectors.shape[0])


def _write_npy(tmp_dir: Path, tables: EntityTables) -> None:
    files: dict[str, Any] = {}
    for et in tables.entity_types:
        dim = tables.source.dimension(et.name)
        files[et.name] = {
            "embedding": np.lib.format.open_memmap(tmp_dir / f"{et.name}.embedding.npy", "w+", np.float32, (et.count, dim)),
            "partition": np.lib.format.open_memmap(tmp_dir / f"{et.name}.partition.npy", "w+", np.int32, (et.count,)),
            "local_id": np.lib.format.open_memmap(tmp_dir / f"{et.name}.local_id.npy", "w+", np.int64, (et.count,)),
            "names": open(tmp_dir / f"{et.name}.names.txt", "w", encoding="utf-8"),
            "offsets": et.offsets,
        }
    try:
        for etype, part, names, vectors in tables.partitions():
            f = files[etype]
            sl = slice(int(f["offsets"][part]), int(f["offsets"][part + 1]))
            f["embedding"][sl] = vectors
            f["partition"][sl] = part
            f["local_id"][sl] = np.arange(vectors.shape[0])
            _refuse_names_holding(names, "\n", "a newline", "npy")
            for name in names.to_pylist():
                f["names"].write(name + "\n")
    finally:
        for f in files.values():
            for key in ("embedding", "partition", "local_id"):
                f[key].flush()
            f["names"].close()


def _write_npz(tmp: Path, tables: EntityTables) -> None:
    arrays: dict[str, list[np.ndarray]] = {}
    for etype, part, names, vectors in tables.partitions():
        for key, value in (
            ("embedding", vectors),
            ("name", np.array(names.to_pylist(), dtype=str)),
            ("partition", np.full(vectors.shape[0], part, dtype=np.int32)),
            ("local_id", np.arange(vectors.shape[0], dtype=np.int64)),
        ):
            arrays.setdefault(f"{etype}/{key}", []).append(value)
    with open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.concatenate(v) for k, v in arrays.items()})


def _write_tsv(tmp: Path, tables: EntityTables, group_rows: int) -> None:
    with open(tmp, "wb") as fh:
        for _etype, _part, names, vectors in tables.partitions():
            _refuse_names_holding(names, "\t\n\r", "a tab or a line break", "tsv")
            for start in range(0, len(names), group_rows):
                block = vectors[start:start + group_rows]
                values = [pc.cast(pa.array(block[:, k]), pa.string()) for k in range(block.shape[1])]
                lines = pc.binary_join_element_wise(names.slice(start, len(block)), *values, "\t")
                fh.write("\n".join(lines.to_pylist()).encode() + b"\n")


def _refuse_names_holding(names: pa.Array, characters: str, what: str, fmt: str) -> None:
    """A name the format cannot hold is an error that names it, before anything is written for it."""
    holding = pc.match_substring_regex(names, f"[{characters}]")
    if pc.any(holding).as_py():
        name = names.filter(holding)[0].as_py()
        raise ExportError(f"entity name {name!r} holds {what}, which --format {fmt} cannot hold; use parquet or hdf5")


def export_embeddings(
    root: str | Path,
    manifest: Manifest,
    source: EntitySource,
    out: str | Path,
    fmt: str,
    *,
    force: bool = False,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> dict[str, Any]:
    """Write every entity's vector (from ``source``) and name (from the dataset at ``root``)
    to ``out``; returns a summary."""
    return write_entity_tables(EntityTables.of_dataset(root, manifest, source), out, fmt, force=force,
                               row_group_rows=row_group_rows)


def write_entity_tables(tables: EntityTables, out: str | Path, fmt: str, *, force: bool = False,
                        row_group_rows: int = ROW_GROUP_ROWS) -> dict[str, Any]:
    """Write ``tables`` to ``out`` in format ``fmt``; returns a summary.

    ``row_group_rows`` caps the rows of a Parquet row group (a partition is cut into several),
    and of a block of TSV lines formatted at once.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists (use --force to replace it)")
    if fmt == "npy":
        with atomic_directory(out, force=True) as tmp_dir:
            _write_npy(tmp_dir, tables)
    else:
        writers: dict[str, Callable[[Path], None]] = {
            "parquet": lambda tmp: _write_parquet(tmp, tables, row_group_rows),
            "tsv": lambda tmp: _write_tsv(tmp, tables, row_group_rows),
            "hdf5": lambda tmp: _write_hdf5(tmp, tables),
            "npz": lambda tmp: _write_npz(tmp, tables),
        }
        with atomic_file(out) as tmp:
            writers[fmt](tmp)
    return {
        "path": str(out),
        "format": fmt,
        "entities": {et.name: et.count for et in tables.entity_types},
        "rows": sum(et.count for et in tables.entity_types),
    }


RELATION_SCHEMA = pa.schema(
    [
        ("relation", pa.string()),
        ("reciprocal", pa.bool_()),  # the twin that scores heads given a tail (model.reciprocal)
        ("operator", pa.string()),
        ("parameter", pa.string()),
        ("shape", pa.list_(pa.int32())),
        ("values", pa.list_(pa.float32())),  # row-major
    ]
)


def export_relations(model: KGModel, manifest: Manifest, model_config: ModelConfig, out: str | Path, *,
                     force: bool = False) -> dict[str, Any]:
    """Write every relation's operator parameters as Parquet: a row per relation, direction and
    parameter (an operator without parameters, ``none``, has no rows). The schema's metadata
    ``bigkg.model`` holds the model options scoring depends on (comparator, operators, dim)."""
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists (use --force to replace it)")
    names = [r.name for r in manifest.relations]
    rows = []
    for slot in range(model.operator_of.numel()):  # R, or 2R with the reciprocal twins after the relations
        operator = model.operators[int(model.operator_of[slot])]
        for parameter, values in operator.named_parameters():
            rows.append(relation_row(names[slot % len(names)], slot >= len(names), operator.name, parameter, values[slot]))
    write_relation_rows(rows, model_config.structure(), out)
    return {"path": str(out), "relations": len(names), "rows": len(rows)}


def relation_row(relation: str, reciprocal: bool, operator: str, parameter: str, values: torch.Tensor) -> dict[str, Any]:
    """A row of the relations Parquet: one parameter of one relation's (or reciprocal twin's) operator."""
    row = values.detach().to("cpu", torch.float32)
    return {"relation": relation, "reciprocal": reciprocal, "operator": operator, "parameter": parameter,
            "shape": list(row.shape), "values": row.reshape(-1).tolist()}


def write_relation_rows(rows: list[dict[str, Any]], model_structure: dict[str, Any], out: Path) -> None:
    """The relations Parquet at ``out``; its metadata ``bigkg.model`` holds ``model_structure``
    (the model options scoring depends on: comparator, operators, dim, reciprocal)."""
    schema = RELATION_SCHEMA.with_metadata({"bigkg.model": json.dumps(model_structure, sort_keys=True)})
    with atomic_file(out) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
