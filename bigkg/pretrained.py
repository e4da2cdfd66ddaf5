"""Start a run from vectors that ``bigkg export`` wrote (``model.init_from``), like PBG's
``init_path`` or PyKEEN's pretrained initialisers, but matched by name.

The source is any export format (Parquet, HDF5, an npz archive or an npy directory,
told apart by content, not by name), made from any dataset: a row is used for the entity
of the same type and name in this run's dataset, wherever the partitioner put it. The
entities without a row keep their random initialisation, so a graph that grew since the
export starts from what was learnt and learns only its new entities from scratch.

Memory holds one destination partition and one batch of the source at a time: each
partition reads the source once (only the rows of its type are kept), the same order
of reads as one epoch's partition swaps. Names are looked up in the partitioner's numba
table of the partition's names, built once per partition: 12x faster per row than
pyarrow's ``index_in``, which hashes the whole value set again for every batch.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Iterator

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from bigkg.errors import BigKGError
from bigkg.format import read_entity_names
from partitioner.strtable import StringTable

BATCH_ROWS = 65536
PARQUET_COLUMNS = ("entity_type", "name", "embedding")


class PretrainedError(BigKGError):
    """``model.init_from`` names something that is not a usable export."""


@dataclass
class ExportedRows:
    """Consecutive rows of one entity type of an export."""

    entity_type: str
    names: pa.Array  # string
    vectors: np.ndarray  # [n, d] float32


def read_exported(path: Path, batch_rows: int = BATCH_ROWS) -> Generator[ExportedRows, None, None]:
    """Every row of an export in batches of at most ``batch_rows``, in file order."""
    if path.is_dir():
        return _read_npy_dir(path, batch_rows)
    if not path.is_file():
        raise PretrainedError(f"model.init_from: {path} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"PAR1"):
        return _read_parquet(path, batch_rows)
    if magic == b"\x89HDF\r\n\x1a\n":
        return _read_hdf5(path, batch_rows)
    if magic.startswith(b"PK"):
        return _read_npz(path, batch_rows)
    raise PretrainedError(
        f"model.init_from: {path} is not an export of 'bigkg export' (Parquet, HDF5, npz or an npy directory)"
    )


def _read_parquet(path: Path, batch_rows: int) -> Iterator[ExportedRows]:
    file = pq.ParquetFile(path)
    missing = [c for c in PARQUET_COLUMNS if c not in file.schema_arrow.names]
    if missing:
        raise PretrainedError(f"model.init_from: {path} has no column {missing[0]!r} (an export has {', '.join(PARQUET_COLUMNS)})")
    start = 0
    for batch in file.iter_batches(batch_size=batch_rows, columns=list(PARQUET_COLUMNS)):
        types = batch.column("entity_type")
        for column in ("entity_type", "name"):
            if batch.column(column).null_count:
                row = start + pc.index(batch.column(column).is_null(), True).as_py()
                raise PretrainedError(f"model.init_from: {path}, row {row}: no {column}")
        vectors = _list_vectors(batch.column("embedding"), path, start)
        for entity_type in pc.unique(types).to_pylist():
            rows = pc.equal(types, entity_type)
            yield ExportedRows(entity_type, batch.column("name").filter(rows), vectors[rows.to_numpy(zero_copy_only=False)])
        start += batch.num_rows


def _list_vectors(column: pa.Array, path: Path, start: int) -> np.ndarray:
    """A list<float> column of equal-length lists as an [n, d] float32 array."""
    lengths = pc.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
    if not len(lengths):
        return np.zeros((0, 0), np.float32)
    bad = np.flatnonzero((lengths != lengths[0]) | (lengths < 0))
    if len(bad):
        raise PretrainedError(
            f"model.init_from: {path}, row {start + int(bad[0])}: the embedding is missing or not as long as row {start}'s"
        )
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(column), int(lengths[0]))


def _read_hdf5(path: Path, batch_rows: int) -> Iterator[ExportedRows]:
    with h5py.File(path, "r") as fh:
        for entity_type, group in fh.items():
            if not isinstance(group, h5py.Group) or "embedding" not in group or "name" not in group:
                raise PretrainedError(f"model.init_from: {path}: {entity_type!r} is not a group with 'embedding' and 'name' datasets")
            embedding, names = group["embedding"], group["name"].asstr()
            for start in range(0, embedding.shape[0], batch_rows):
                stop = min(start + batch_rows, embedding.shape[0])
                yield ExportedRows(entity_type, pa.array(names[start:stop], pa.string()), embedding[start:stop].astype(np.float32, copy=False))


def _read_npz(path: Path, batch_rows: int) -> Iterator[ExportedRows]:
    with np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            entity_type, _, field = key.rpartition("/")
            if field != "embedding":
                continue
            if f"{entity_type}/name" not in archive.files:
                raise PretrainedError(f"model.init_from: {path} has {key!r} but no {entity_type + '/name'!r}")
            embedding, names = archive[key], archive[f"{entity_type}/name"]
            for start in range(0, embedding.shape[0], batch_rows):
                rows = slice(start, start + batch_rows)
                yield ExportedRows(entity_type, pa.array(names[rows].tolist(), pa.string()), embedding[rows].astype(np.float32, copy=False))


def _read_npy_dir(path: Path, batch_rows: int) -> Iterator[ExportedRows]:
    embeddings = sorted(path.glob("*.embedding.npy"))
    if not embeddings:
        raise PretrainedError(f"model.init_from: the directory {path} holds no '<type>.embedding.npy' of an npy export")
    for file in embeddings:
        entity_type = file.name[: -len(".embedding.npy")]
        names_path = path / f"{entity_type}.names.txt"
        if not names_path.is_file():
            raise PretrainedError(f"model.init_from: {file} has no names file {names_path.name}")
        embedding = np.load(file, mmap_mode="r")
        with open(names_path, encoding="utf-8") as names_file:
            for start in range(0, embedding.shape[0], batch_rows):
                lines = [names_file.readline() for _ in range(min(batch_rows, embedding.shape[0] - start))]
                if lines and not lines[-1]:  # readline gives "" only at the end of the file
                    raise PretrainedError(f"model.init_from: {names_path} has fewer names than {file.name} has rows ({embedding.shape[0]})")
                names = pa.array([line.rstrip("\n") for line in lines], pa.string())
                yield ExportedRows(entity_type, names, np.asarray(embedding[start : start + len(lines)], dtype=np.float32))


class PretrainedVectors:
    """Copies an export's vectors into a fresh run's partitions, by entity type and name."""

    def __init__(self, path: str | Path, dataset: str | Path, dim: int):
        self.path, self.dataset, self.dim = Path(path), Path(dataset), dim
        self.matched: dict[str, int] = {}  # per entity type: rows that took an exported vector
        with closing(read_exported(self.path)) as rows:  # a missing or foreign file fails now, not at the first partition
            next(rows, None)

    def fill(self, entity_type: str, part: int, embeddings: torch.Tensor) -> None:
        """Overwrite the rows of ``entity_type``'s partition ``part`` that have an exported vector."""
        names = read_entity_names(self.dataset, entity_type, part)
        if not len(names):
            return
        lookup = StringTable(len(names))
        lookup.add(names, np.zeros(len(names), np.int32))  # ids in insertion order: the local ids
        for rows in read_exported(self.path):
            if rows.entity_type != entity_type or not len(rows.names):
                continue
            if rows.vectors.shape[1] != self.dim:
                raise PretrainedError(
                    f"model.init_from: {self.path} holds {rows.vectors.shape[1]}-dimensional vectors for entity type "
                    f"{entity_type!r}, but model.dim is {self.dim}"
                )
            local = lookup.find(rows.names, np.zeros(len(rows.names), np.int32))
            found = local >= 0
            ids = local[found]
            embeddings[torch.from_numpy(ids)] = torch.from_numpy(rows.vectors[found])
            self.matched[entity_type] = self.matched.get(entity_type, 0) + len(ids)
