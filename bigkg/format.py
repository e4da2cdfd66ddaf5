"""The on-disk dataset format, defined once: the partitioner writes it and the
trainer, evaluator and exporter read it through this module only.

Layout of a dataset directory (see docs/format.md)::

    manifest.json
    entities/<type>/part_<i>.parquet       column ``name``, row k = local id k
    edges/<split>/bucket_<i>_<j>.h5        datasets lhs, rhs, rel [, weight]

Bucket (i, j) holds the edges whose head is in partition i of the relation's
head type and whose tail is in partition j of its tail type. Buckets without
edges have no file. Datasets are stored contiguously with their exact length,
so a bucket of a few edges is a file of a few kilobytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import h5py
import numpy as np

from bigkg.atomic import atomic_file
from bigkg.edge_chunks import WHOLE_BUCKET, EdgeChunk
from bigkg.errors import BigKGError

if TYPE_CHECKING:
    import pyarrow as pa

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "valid", "test")


class DatasetError(BigKGError):
    """A dataset directory that is missing, incomplete or of another format."""


@dataclass
class EntityType:
    name: str
    partition_counts: list[int]

    @property
    def count(self) -> int:
        return sum(self.partition_counts)

    @property
    def offsets(self) -> np.ndarray:
        """[P + 1] int64: global id = local id + offsets[partition]; offsets[P] = count."""
        return np.concatenate([[0], np.cumsum(self.partition_counts, dtype=np.int64)])


@dataclass
class Relation:
    name: str
    lhs_type: str
    rhs_type: str


@dataclass
class Manifest:
    num_partitions: int
    entity_types: list[EntityType]
    relations: list[Relation]
    # split -> {"i_j": edge count}; only non-empty buckets are listed.
    bucket_counts: dict[str, dict[str, int]]
    has_weights: bool = False
    id_dtype: str = "int32"
    # Command-line arguments of the run that made this dataset.
    args: dict[str, Any] = field(default_factory=dict)
    # [{"path", "bytes", "sha256"}] for every input file.
    inputs: list[dict[str, Any]] = field(default_factory=list)
    # Partitioner statistics: bad lines skipped, duplicates dropped, unseen entities...
    stats: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    # -- lookups ---------------------------------------------------------
    def entity_type(self, name: str) -> EntityType:
        for et in self.entity_types:
            if et.name == name:
                return et
        raise DatasetError(f"unknown entity type {name!r}; the dataset has {[e.name for e in self.entity_types]}")

    def relation_index(self, name: str) -> int:
        for k, rel in enumerate(self.relations):
            if rel.name == name:
                return k
        raise DatasetError(f"unknown relation {name!r}")

    def bucket_count(self, split: str, i: int, j: int) -> int:
        return self.bucket_counts.get(split, {}).get(bucket_key(i, j), 0)

    def split_count(self, split: str) -> int:
        return sum(self.bucket_counts.get(split, {}).values())

    # -- serialisation ---------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        data = dict(data)
        data["entity_types"] = [EntityType(**e) for e in data["entity_types"]]
        data["relations"] = [Relation(**r) for r in data["relations"]]
        return cls(**data)


class BucketEdges(NamedTuple):
    lhs: np.ndarray
    rhs: np.ndarray
    rel: np.ndarray
    weight: np.ndarray | None

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.lhs.shape[0])


def bucket_key(i: int, j: int) -> str:
    return f"{i}_{j}"


def manifest_path(root: Path) -> Path:
    return Path(root) / MANIFEST_NAME


def entity_names_path(root: Path, entity_type: str, part: int) -> Path:
    return Path(root) / "entities" / entity_type / f"part_{part}.parquet"


def bucket_path(root: Path, split: str, i: int, j: int) -> Path:
    return Path(root) / "edges" / split / f"bucket_{i}_{j}.h5"


def id_dtype_for(max_partition_size: int) -> str:
    return "int32" if max_partition_size < 2**31 else "int64"


# -- manifest ---------------------------------------------------------------
def write_manifest(root: Path, manifest: Manifest) -> None:
    with atomic_file(manifest_path(root)) as tmp:
        tmp.write_text(manifest.to_json())


def load_manifest(root: str | Path) -> Manifest:
    """Read and check a dataset's manifest; errors name the path and the problem."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist")
    path = manifest_path(root)
    if not path.is_file():
        raise DatasetError(
            f"{root} has no {MANIFEST_NAME}: it is not a bigkg dataset, or its partitioning did not finish"
        )
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:  # invalid JSON or not UTF-8
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path} is malformed: expected a JSON object, got {type(data).__name__}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format_version {version!r}; this bigkg reads format version {FORMAT_VERSION}. "
            "Re-partition the input with this version."
        )
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is malformed: {exc}") from exc
    problem = _manifest_problem(manifest)
    if problem:
        raise DatasetError(f"{path} is malformed: {problem}")
    return manifest


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _manifest_problem(m: Manifest) -> str | None:
    """What makes a parsed manifest unusable (wrong types or references), or None; readers
    index arrays and open files with these values, so a hand-edited one would fail far away."""
    if not _is_count(m.num_partitions) or m.num_partitions < 1:
        return f"num_partitions is {m.num_partitions!r}, not a positive integer"
    for et in m.entity_types:
        counts = et.partition_counts
        if not isinstance(counts, list) or len(counts) != m.num_partitions or not all(map(_is_count, counts)):
            return f"entity type {et.name!r}: partition_counts {counts!r} is not {m.num_partitions} counts"
    types = {et.name for et in m.entity_types}
    for rel in m.relations:
        if rel.lhs_type not in types or rel.rhs_type not in types:
            return f"relation {rel.name!r} has types {rel.lhs_type!r}, {rel.rhs_type!r}; the entity types are {sorted(types)}"
    if not isinstance(m.bucket_counts, dict):
        return f"bucket_counts is {m.bucket_counts!r}, not an object"
    for split, counts in m.bucket_counts.items():
        if not isinstance(counts, dict) or not all(
            _is_count(n) and re.fullmatch(r"\d+_\d+", k) and max(map(int, k.split("_"))) < m.num_partitions
            for k, n in counts.items()
        ):
            return f"bucket_counts[{split!r}] is not an object of 'i_j' buckets below num_partitions and edge counts"
    if m.id_dtype not in ("int32", "int64"):
        return f"id_dtype is {m.id_dtype!r}, not int32 or int64"
    return None


# -- entity names -------------------------------------------------------------
# pyarrow is imported where names are read or written: training never needs them, and
# the import is ~0.1 s of every trainer's start.
def write_entity_names(root: Path, entity_type: str, part: int, names: pa.Array | list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"name": pa.array(names, type=pa.string())})
    path = entity_names_path(root, entity_type, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def read_entity_names(root: Path, entity_type: str, part: int) -> pa.Array:
    path = entity_names_path(root, entity_type, part)
    if not path.is_file():
        raise DatasetError(f"missing entity table {path}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=["name"]).column("name").combine_chunks()
    except (pa.ArrowException, OSError, KeyError) as exc:  # not Parquet, truncated, or no name column
        raise DatasetError(f"cannot read entity table {path}: {exc}") from exc


# -- buckets --------------------------------------------------------------------
class BucketWriter:
    """Writes one bucket file of a known number of edges, block by block.

    The file is built under a temporary name and renamed on ``close``; a
    writer that is abandoned (an exception, a kill) leaves no bucket file.
    ``durable=False`` leaves the fsync to an enclosing ``atomic_directory``.
    """

    def __init__(
        self,
        path: Path,
        num_edges: int,
        *,
        id_dtype: str = "int32",
        has_weight: bool = False,
        durable: bool = True,
    ):
        self.path = Path(path)
        self.num_edges = num_edges
        self._written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ctx = atomic_file(self.path, durable=durable)
        tmp = self._ctx.__enter__()
        self._file = h5py.File(tmp, "w")
        self._file.attrs["format_version"] = FORMAT_VERSION
        self._datasets = {
            "lhs": self._file.create_dataset("lhs", shape=(num_edges,), dtype=id_dtype),
            "rhs": self._file.create_dataset("rhs", shape=(num_edges,), dtype=id_dtype),
            "rel": self._file.create_dataset("rel", shape=(num_edges,), dtype="int32"),
        }
        if has_weight:
            self._datasets["weight"] = self._file.create_dataset("weight", shape=(num_edges,), dtype="float32")

    def append(self, lhs: np.ndarray, rhs: np.ndarray, rel: np.ndarray, weight: np.ndarray | None = None) -> None:
        n = len(lhs)
        end = self._written + n
        if end > self.num_edges:
            raise ValueError(f"{self.path}: appending {n} edges overflows the declared {self.num_edges}")
        sl = slice(self._written, end)
        self._datasets["lhs"][sl] = lhs
        self._datasets["rhs"][sl] = rhs
        self._datasets["rel"][sl] = rel
        if "weight" in self._datasets:
            if weight is None:
                raise ValueError(f"{self.path}: this bucket has weights but none were given")
            self._datasets["weight"][sl] = weight
        self._written = end

    def close(self) -> None:
        if self._written != self.num_edges:
            self.abort()
            raise ValueError(f"{self.path}: wrote {self._written} of {self.num_edges} declared edges")
        self._file.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        if self._file.id.valid:
            self._file.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "BucketWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_bucket(root: Path, split: str, i: int, j: int, edges: BucketEdges, *, id_dtype: str = "int32") -> None:
    with BucketWriter(
        bucket_path(root, split, i, j), len(edges), id_dtype=id_dtype, has_weight=edges.weight is not None
    ) as writer:
        writer.append(edges.lhs, edges.rhs, edges.rel, edges.weight)


def read_bucket(root: Path, split: str, i: int, j: int, *, expected: int | None = None,
                chunk: EdgeChunk = WHOLE_BUCKET) -> BucketEdges:
    """The edges of bucket (i, j) of ``split`` in ``chunk`` (by default all); empty arrays when it has none.

    ``expected``, the manifest's count, makes a missing file or one holding another number
    of edges an error instead of a split that is silently smaller. Only the chunk's rows
    are read.
    """
    path = bucket_path(root, split, i, j)
    if not path.is_file():
        if expected:
            raise DatasetError(f"missing bucket file {path}: the manifest counts {expected} edges in it")
        empty = np.empty(0, dtype=np.int64)
        return BucketEdges(empty, empty, empty.astype(np.int32), None)
    try:
        with h5py.File(path, "r") as fh:
            datasets = [fh["lhs"], fh["rhs"], fh["rel"], fh["weight"] if "weight" in fh else None]
            lengths = {d.shape[0] for d in datasets if d is not None}
            if len(lengths) > 1 or (expected is not None and lengths != {expected}):
                raise DatasetError(
                    f"bucket file {path} holds datasets of {sorted(lengths)} edges; the manifest counts {expected}")
            ranges = chunk.ranges(lengths.pop())
            return BucketEdges(*(None if d is None else _read_ranges(d, ranges) for d in datasets))  # type: ignore[arg-type]
    except (OSError, KeyError) as exc:  # truncated or not HDF5, or a dataset missing
        raise DatasetError(f"cannot read bucket file {path}: {exc}") from exc


def _read_ranges(dataset: h5py.Dataset, ranges: list[tuple[int, int]]) -> np.ndarray:
    if len(ranges) == 1 and ranges[0] == (0, dataset.shape[0]):
        return dataset[...]
    return np.concatenate([dataset[a:b] for a, b in ranges]) if ranges else np.empty(0, dtype=dataset.dtype)
