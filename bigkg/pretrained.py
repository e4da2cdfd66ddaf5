"""Start a fresh run from an earlier one (``model.init_from``), like PBG's ``init_path``,
but matched by name rather than by position.

The source is an earlier run directory (its latest checkpoint: entity vectors with their
row-wise Adagrad state, relation parameters with their optimizer state) or anything
``bigkg export`` writes (Parquet, HDF5, an npz archive, TSV or an npy directory, told apart
by content: entity vectors only), made from any dataset. A row is used for the entity of the
same type and name in this run's dataset (a TSV row, which names no type, for the entity of
that name in every type), wherever the partitioner put it, and a
relation's parameters for the relation of the same name. What the source lacks keeps its
fresh initialisation, so a graph that grew since starts from what was learnt.

Memory holds one destination partition and one batch (or checkpoint partition) of the
source at a time: each partition reads the source's rows of its type once, the same
order of reads as one epoch's partition swaps. Names are looked up in the partitioner's numba
table of the partition's names, built once per partition: 12x faster per row than
pyarrow's ``index_in``, which hashes the whole value set again for every batch.
"""

from __future__ import annotations

import functools
import json
import logging
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Iterator

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import torch
from torch import nn

from bigkg.checkpoint import CheckpointStore, PartitionState
from bigkg.config import Config, ModelConfig, load_config
from bigkg.errors import BigKGError
from bigkg.export import RELATION_SCHEMA
from bigkg.format import Manifest, load_manifest, read_entity_names
from bigkg.model import KGModel
from bigkg.model.model import GLOBAL_EMBEDDINGS
from bigkg.strtable import StringTable

log = logging.getLogger(__name__)

BATCH_ROWS = 65536
PARQUET_COLUMNS = ("entity_type", "name", "embedding")
TSV_LINE_LIMIT = 1 << 24  # bytes of a TSV export's first line read to count its values


class PretrainedError(BigKGError):
    """``model.init_from`` names something that is not a usable export."""


@dataclass
class SourceRows:
    """Consecutive rows of one entity type of an export or a checkpoint."""

    entity_type: str | None  # None: a TSV export's, which names no type: offered to every type, by name
    names: pa.Array  # string
    vectors: np.ndarray  # [n, d] float32
    adagrad: np.ndarray | None = None  # [n] float32; a checkpoint's row-wise Adagrad state


def read_exported(path: Path, batch_rows: int = BATCH_ROWS) -> Generator[SourceRows, None, None]:
    """Every row of an export in batches of at most ``batch_rows``, in file order."""
    if path.is_dir():
        return _read_npy_dir(path, batch_rows)
    if not path.is_file():
        raise PretrainedError(f"model.init_from: {path} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(8)
        fh.seek(0)
        first_line = fh.readline(TSV_LINE_LIMIT)  # bounded: a binary file may hold no line break for long
    if magic.startswith(b"PAR1"):
        return _read_parquet(path, batch_rows)
    if magic == b"\x89HDF\r\n\x1a\n":
        return _read_hdf5(path, batch_rows)
    if magic.startswith(b"PK"):
        return _read_npz(path, batch_rows)
    if b"\t" in first_line:
        return _read_tsv(path, first_line.count(b"\t"), batch_rows)
    raise PretrainedError(
        f"model.init_from: {path} is not an export of 'bigkg export' (Parquet, HDF5, npz, TSV or an npy directory)"
    )


def _read_parquet(path: Path, batch_rows: int) -> Iterator[SourceRows]:
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
            yield SourceRows(entity_type, batch.column("name").filter(rows), vectors[rows.to_numpy(zero_copy_only=False)])
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


def _read_tsv(path: Path, dim: int, batch_rows: int) -> Iterator[SourceRows]:
    """Lines of a name and ``dim`` values, tab-separated: bigkg's ``--format tsv`` and PBG's
    ``torchbiggraph_export_to_tsv`` entity file. Read in blocks, so memory stays bounded."""
    columns = [f"c{k}" for k in range(dim + 1)]
    types = {columns[0]: pa.string(), **{c: pa.float32() for c in columns[1:]}}
    start = 0
    try:
        reader = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(column_names=columns),
            parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),  # a quote is part of a name
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False))
        for batch in reader:
            empty = [c for c in columns[1:] if batch.column(c).null_count]
            if empty:
                row = start + pc.index(batch.column(empty[0]).is_null(), True).as_py()
                raise PretrainedError(f"model.init_from: {path}, line {row + 1}: a value is missing")
            vectors = np.stack([batch.column(c).to_numpy() for c in columns[1:]], axis=1)
            for first in range(0, batch.num_rows, batch_rows):
                stop = min(first + batch_rows, batch.num_rows)
                yield SourceRows(None, batch.column(0).slice(first, stop - first), vectors[first:stop])
            start += batch.num_rows
    except pa.ArrowInvalid as exc:  # a line of another number of fields, a value that is not a number
        raise PretrainedError(f"model.init_from: {path} is not a TSV export (a name, then {dim} values): {exc}") from exc


def _read_hdf5(path: Path, batch_rows: int) -> Iterator[SourceRows]:
    with h5py.File(path, "r") as fh:
        for entity_type, group in fh.items():
            if not isinstance(group, h5py.Group) or "embedding" not in group or "name" not in group:
                raise PretrainedError(f"model.init_from: {path}: {entity_type!r} is not a group with 'embedding' and 'name' datasets")
            embedding, names = group["embedding"], group["name"].asstr()
            for start in range(0, embedding.shape[0], batch_rows):
                stop = min(start + batch_rows, embedding.shape[0])
                yield SourceRows(entity_type, pa.array(names[start:stop], pa.string()), embedding[start:stop].astype(np.float32, copy=False))


def _read_npz(path: Path, batch_rows: int) -> Iterator[SourceRows]:
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
                yield SourceRows(entity_type, pa.array(names[rows].tolist(), pa.string()), embedding[rows].astype(np.float32, copy=False))


def _read_npy_dir(path: Path, batch_rows: int) -> Iterator[SourceRows]:
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
                yield SourceRows(entity_type, names, np.asarray(embedding[start : start + len(lines)], dtype=np.float32))


class ExportSource:
    """Entity vectors of an export; it has no relation parameters or optimizer state."""

    kind = "export"

    def __init__(self, path: Path):
        self.path = path
        with closing(read_exported(path)) as rows:  # a missing or foreign file fails now, not at the first partition
            next(rows, None)

    def rows(self, entity_type: str) -> Iterator[SourceRows]:
        return (rows for rows in read_exported(self.path) if rows.entity_type in (entity_type, None))

    def load_shared(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, relations: list[str]) -> int:
        return 0


class RunSource:
    """The latest checkpoint of an earlier run: entity vectors with their Adagrad state, read
    partition by partition, and the relation parameters with their optimizer state."""

    kind = "checkpoint"

    def __init__(self, run_dir: Path, config: Config):
        self.path = run_dir
        self.version = CheckpointStore(run_dir).latest()
        if self.version is None:
            raise PretrainedError(f"model.init_from: the run directory {run_dir} holds no complete checkpoint")
        try:
            self.dataset = Path(load_config(run_dir / "config.yaml", []).dataset)
            self.manifest = load_manifest(self.dataset)
        except BigKGError as exc:
            raise PretrainedError(f"model.init_from: the dataset of the run {run_dir} cannot be read: {exc}") from exc
        meta = self.version.meta
        if meta["partition_counts"] != {et.name: et.partition_counts for et in self.manifest.entity_types}:
            raise PretrainedError(f"model.init_from: {self.version.path} was not trained on {self.dataset}, which its config names")
        self.relations: list[str] = meta["relations"]
        # The shared parameters fit this run's model only where every option they depend on agrees
        # (global embeddings aside: they are folded into the rows).
        difference = config.model.first_difference(meta["model"], ignore=("global_embedding",))
        self.differs = None if difference is None else difference[0]
        if self.differs == "dim":
            raise PretrainedError(
                f"model.init_from: {self.version.path} holds {meta['model']['dim']}-dimensional vectors, but model.dim is {config.model.dim}"
            )

    @functools.cached_property
    def _shared_state(self) -> dict[str, Any]:
        """The checkpoint's shared state, read once for the rows of every type and the parameters."""
        return self.version.shared_state()

    def rows(self, entity_type: str) -> Iterator[SourceRows]:
        """The rows of ``entity_type`` as the earlier run scored them: with its global embedding
        of the type added, so that this run's global embeddings start at zero from the same
        representations."""
        for k, et in enumerate(self.manifest.entity_types):
            if et.name == entity_type:
                global_embeddings = self._shared_state["model"].get(GLOBAL_EMBEDDINGS)
                for part in range(len(et.partition_counts)):
                    embeddings, adagrad = self.version.load_partition(entity_type, part)
                    if global_embeddings is not None:
                        embeddings += global_embeddings[k]
                    names = read_entity_names(self.dataset, entity_type, part)
                    yield SourceRows(entity_type, names, embeddings.numpy(), adagrad.numpy())

    def load_shared(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, relations: list[str]) -> int:
        """Give ``model``'s relation parameters (and their optimizer state) the checkpoint's values
        of the relations of the same name; returns how many relations took them."""
        if self.differs is not None:
            log.warning("model.init_from: the relation parameters start afresh: %s was trained with model.%s=%r",
                        self.version.path, self.differs, self.version.meta["model"].get(self.differs))
            return 0
        state = self._shared_state
        # Global embeddings are folded into the rows (``rows``): this run's start at zero.
        saved = {name: value for name, value in state["model"].items() if name != GLOBAL_EMBEDDINGS}
        if relations == self.relations:
            own = model.state_dict()
            if GLOBAL_EMBEDDINGS in own:
                saved[GLOBAL_EMBEDDINGS] = own[GLOBAL_EMBEDDINGS]
            model.load_state_dict(saved)
            if optimizer is not None and state.get("optimizer"):
                current = optimizer.state_dict()
                # Global embeddings' state is the last (KGModel registers them last): kept fresh.
                shared = len(_shared_parameters(model))
                current["state"] = {k: v for k, v in state["optimizer"]["state"].items() if k < shared}
                optimizer.load_state_dict(current)
            return len(relations)
        if next(model.encoder.parameters(), None) is not None:
            log.warning("model.init_from: the relation and encoder parameters start afresh: the relations of %s differ "
                        "from this dataset's, and a graph encoder's parameters cannot be matched by relation name", self.path)
            return 0
        return remap_relation_parameters(model, optimizer, {**state, "model": saved}, self.relations, relations)


def _shared_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trained shared parameters but the global embeddings, in the shared optimizer's order."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad and name != GLOBAL_EMBEDDINGS]


def remap_relation_parameters(model: nn.Module, optimizer: torch.optim.Optimizer | None, state: dict[str, Any],
                              old: list[str], new: list[str]) -> int:
    """Copy the rows of the relations ``new`` shares with ``old`` from ``state`` (a checkpoint's
    shared state, without global embeddings) into ``model``'s operator parameters and the
    optimizer's state for them; every such tensor has a row per relation, then with reciprocal
    relations a row per twin. Returns the number of relations shared."""
    index = {name: k for k, name in enumerate(old)}
    pairs = [(k, index[name]) for k, name in enumerate(new) if name in index]
    if not pairs:
        return 0
    new_rows, old_rows = (torch.tensor(rows) for rows in zip(*pairs))
    if model.reciprocal:  # each relation's reciprocal twin sits R rows further
        new_rows, old_rows = torch.cat([new_rows, new_rows + len(new)]), torch.cat([old_rows, old_rows + len(old)])

    def merged(current: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
        out = current.detach().clone()
        out[new_rows.to(out.device)] = saved[old_rows].to(out.device)
        return out

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != GLOBAL_EMBEDDINGS:
                param.copy_(merged(param, state["model"][name]))
    if optimizer is not None and state.get("optimizer"):
        # the optimizer's order (build_shared_optimizer); the global embeddings' state, last, starts afresh
        params = _shared_parameters(model)
        current = optimizer.state_dict()
        for k, saved in state["optimizer"]["state"].items():
            if k >= len(params):
                continue
            name, param = params[k]
            slot = current["state"].setdefault(k, {})
            for key, value in saved.items():
                per_row = torch.is_tensor(value) and value.shape == state["model"][name].shape  # not a step count
                slot[key] = merged(slot.get(key, torch.zeros_like(param)), value) if per_row else value
        optimizer.load_state_dict(current)
    return len(pairs)


RELATION_COLUMNS = tuple(RELATION_SCHEMA.names)


def load_relation_file(model: KGModel, path: str | Path, relations: list[str], model_config: ModelConfig) -> int:
    """Give ``model``'s operators the parameters that a relations Parquet (``bigkg export
    --relations``, ``bigkg convert --relations``) holds for the relations of the same name,
    reciprocal twins included; returns how many relations took them. Relations the dataset
    lacks are skipped; a row of another operator, parameter or shape than the model's is
    an error, as are reciprocal rows for a model without reciprocal relations."""
    path, what = Path(path), f"model.init_relations_from: {path}"
    table = _read_relation_table(path, what)
    saved = _saved_model(table, what)
    for key in ("comparator", "bias"):  # parameters that still load, for a model that scores otherwise
        own = getattr(model_config, key)
        if saved.get(key, own) != own:
            log.warning("%s: its parameters were trained with model.%s %s, this model scores with %s",
                        what, key, saved[key], own)
    index = {name: k for k, name in enumerate(relations)}
    matched = set()
    columns = {c: table.column(c).to_pylist() for c in RELATION_COLUMNS if c != "values"}
    values = table.column("values")
    with torch.no_grad():
        for k, name in enumerate(columns["relation"]):
            if name not in index:
                continue
            if columns["reciprocal"][k] and not model.reciprocal:
                raise PretrainedError(f"{what}: relation {name!r} has reciprocal parameters (its head-side operator); "
                                      f"set model.reciprocal: true to use them")
            slot = index[name] + (len(relations) if columns["reciprocal"][k] else 0)
            operator = model.operators[int(model.operator_of[slot])]
            param = dict(operator.named_parameters()).get(columns["parameter"][k])
            if columns["operator"][k] != operator.name or param is None:
                raise PretrainedError(f"{what}: relation {name!r} has a {columns['operator'][k]} operator's "
                                      f"{columns['parameter'][k]!r}; this model's is {operator.name}")
            if not values[k].is_valid:
                raise PretrainedError(f"{what}: relation {name!r}'s {columns['parameter'][k]!r} has no values (null)")
            row = torch.from_numpy(values[k].values.to_numpy(zero_copy_only=False).astype(np.float32))
            if list(param.shape[1:]) != columns["shape"][k] or row.numel() != param[slot].numel():
                raise PretrainedError(f"{what}: relation {name!r}'s {columns['parameter'][k]!r} has shape "
                                      f"{columns['shape'][k]}; this model's is {list(param.shape[1:])}")
            param[slot] = row.view(param.shape[1:]).to(param.device)
            matched.add(name)
    return len(matched)



def _read_relation_table(path: Path, what: str) -> pa.Table:
    """The relations Parquet's columns, of the types ``load_relation_file`` reads."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise PretrainedError(f"{what} cannot be read as a relations Parquet: {exc}") from exc
    missing = [c for c in RELATION_COLUMNS if c not in table.column_names]
    if missing:
        raise PretrainedError(f"{what} has no column {missing[0]!r} (a relations file has {', '.join(RELATION_COLUMNS)})")
    columns = {}
    for name, kind in zip(RELATION_SCHEMA.names, RELATION_SCHEMA.types):  # cast to the types export writes
        try:
            columns[name] = table.column(name).cast(kind)
        except (pa.ArrowException, ValueError) as exc:
            raise PretrainedError(f"{what}: column {name!r} of type {table.column(name).type} is not {kind}: {exc}") from exc
    return pa.table(columns, metadata=table.schema.metadata)


def _saved_model(table: pa.Table, what: str) -> dict[str, Any]:
    """The model options the file's metadata ``bigkg.model`` records (none: an empty dict)."""
    text = (table.schema.metadata or {}).get(b"bigkg.model", b"{}")
    try:
        saved = json.loads(text)
    except ValueError as exc:
        raise PretrainedError(f"{what}: its metadata bigkg.model is not JSON: {exc}") from exc
    if not isinstance(saved, dict):
        raise PretrainedError(f"{what}: its metadata bigkg.model is {saved!r}, not an object of model options")
    return saved


def open_source(path: str | Path, config: Config) -> ExportSource | RunSource:
    """A run directory (it has ``config.yaml`` or ``checkpoints/``) or an export."""
    path = Path(path)
    run_dir = (path / "config.yaml").is_file() or (path / "checkpoints").is_dir()
    return RunSource(path, config) if run_dir else ExportSource(path)


class PretrainedInit:
    """Fills a fresh run's partitions and shared parameters from ``model.init_from``."""

    def __init__(self, config: Config):
        assert config.model.init_from
        self.source = open_source(config.model.init_from, config)
        self.dataset, self.dim = Path(config.dataset), config.model.dim
        self.matched: dict[str, int] = {}  # per entity type: rows that took the source's values
        self.relations = 0  # relations whose parameters came from the source
        if self.source.kind == "export" and config.model.encoder.name != "none":
            log.warning("model.init_from: the exported vectors become the embeddings the %s encoder reads; an export "
                        "of a run with an encoder holds that encoder's outputs", config.model.encoder.name)

    def load_shared(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, relations: list[str]) -> None:
        self.relations = self.source.load_shared(model, optimizer, relations)

    def fill(self, entity_type: str, part: int, state: PartitionState) -> None:
        """Overwrite the rows of ``entity_type``'s partition ``part`` that the source has (their
        vectors, and their Adagrad state where the source has one)."""
        names = read_entity_names(self.dataset, entity_type, part)
        if not len(names):
            return
        lookup = StringTable(len(names))
        lookup.add(names, np.zeros(len(names), np.int32))  # ids in insertion order: the local ids
        for rows in self.source.rows(entity_type):
            if not len(rows.names):
                continue
            if rows.vectors.shape[1] != self.dim:
                raise PretrainedError(
                    f"model.init_from: {self.source.path} holds {rows.vectors.shape[1]}-dimensional vectors for entity "
                    f"type {entity_type!r}, but model.dim is {self.dim}"
                )
            local = lookup.find(rows.names, np.zeros(len(rows.names), np.int32))
            found = local >= 0
            ids = torch.from_numpy(local[found])
            state.embeddings[ids] = torch.from_numpy(rows.vectors[found])
            if rows.adagrad is not None:
                state.adagrad[ids] = torch.from_numpy(rows.adagrad[found])
            self.matched[entity_type] = self.matched.get(entity_type, 0) + len(ids)

    def report(self, manifest: Manifest) -> dict[str, Any]:
        """The source, and how many entities of each type and relations took its values (also logged)."""
        entities = {et.name: et.count for et in manifest.entity_types}
        matched = {name: self.matched.get(name, 0) for name in entities}
        for name, n in matched.items():
            log.info("model.init_from: %d of %d entities of type %r start from %s", n, entities[name], name, self.source.path)
        log.info("model.init_from: %d of %d relations start from %s", self.relations, len(manifest.relations), self.source.path)
        return {"path": str(self.source.path), "source": self.source.kind, "entities": entities, "matched": matched,
                "relations": len(manifest.relations), "relations_matched": self.relations}
