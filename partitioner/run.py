"""``run_partition``: edge files in, a complete bigkg dataset directory out.

Pass 1 streams every input once, building the relation and entity
dictionaries (O(entities) memory) and the training degrees, and logs each
edge as numeric ids (``spill.EdgeLog``); entities are then assigned to
partitions. Pass 2 streams that log (fixed-size blocks, no parsing or hashing
again), maps entities to (partition, local id) and spills edges by bucket
(``spill.SpillFile``); finally each bucket becomes its exact-size HDF5 file.
Everything, temporary files included, is built inside a temporary directory
that is renamed into place only when complete.
"""

from __future__ import annotations

import glob
import hashlib
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from bigkg.atomic import atomic_directory
from bigkg.format import (
    SPLITS,
    EntityType,
    Manifest,
    Relation,
    bucket_key,
    bucket_path,
    id_dtype_for,
    write_entity_names,
    write_manifest,
)
from partitioner.assign import ASSIGNMENTS, assign_partitions
from partitioner.errors import PartitionError
from partitioner.kernels import RARE, SELF_LOOP, SPLIT_IDS, add_counts, random_split, route
from partitioner.readers import EdgeBatch, InputFormat, detect_format, read_edges
from partitioner.schema import DEFAULT_TYPE, Schema, load_schema
from partitioner.spill import EdgeLog, SpillFile
from bigkg.strtable import StringTable

BUCKET_WRITERS = 4


@dataclass
class PartitionOptions:
    inputs: list[str]
    out: Path
    num_partitions: int = 1
    valid: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    valid_fraction: float = 0.0
    test_fraction: float = 0.0
    schema: Path | None = None
    assign: str = "random"
    dedup: bool = False
    drop_self_loops: bool = False
    entity_min_count: int = 0  # drop entities with fewer training edges, and their edges
    relation_min_count: int = 0  # drop relations with fewer training edges, and their edges
    input_format: InputFormat = field(default_factory=InputFormat)
    seed: int = 0
    force: bool = False
    buffer_edges: int = 1 << 21
    progress: bool | None = None  # None: only on a terminal

    def as_record(self) -> dict[str, Any]:
        """The options as plain JSON values, for the manifest."""
        record = asdict(self)
        record["out"] = str(self.out)
        record["schema"] = str(self.schema) if self.schema else None
        record.pop("progress")
        return record


@dataclass(frozen=True)
class Source:
    path: Path
    split: str | None  # None: a random split by fractions


def _expand(patterns: list[str], what: str) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise PartitionError(f"no {what} file matches {pattern!r}")
            paths.extend(Path(m) for m in matches)
        else:
            path = Path(pattern)
            if not path.is_file():
                raise PartitionError(f"{what} file {path} does not exist")
            paths.append(path)
    return paths


def _sources(opts: PartitionOptions) -> list[Source]:
    if not opts.inputs:
        raise PartitionError("no input files given")
    fractions = opts.valid_fraction or opts.test_fraction
    if fractions and (opts.valid or opts.test):
        raise PartitionError("give either --valid/--test files or --valid-fraction/--test-fraction, not both")
    for name, frac in (("--valid-fraction", opts.valid_fraction), ("--test-fraction", opts.test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise PartitionError(f"{name} must be in [0, 1), got {frac}")
    if opts.valid_fraction + opts.test_fraction >= 1.0:
        raise PartitionError("--valid-fraction plus --test-fraction must leave some edges for training")
    train_split = None if fractions else "train"
    sources = [Source(p, train_split) for p in _expand(opts.inputs, "input")]
    sources += [Source(p, "valid") for p in _expand(opts.valid, "--valid")]
    sources += [Source(p, "test") for p in _expand(opts.test, "--test")]
    return sources


def _sha256(path: Path, stop: threading.Event) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            if stop.is_set():  # the run failed: do not keep it waiting for the hash of a huge file
                break
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _known_rows(sources: list[Source], spec: InputFormat) -> int | None:
    """Total rows when every input is Parquet (from its metadata), for the progress bar."""
    if not all(detect_format(s.path, spec.fmt) == "parquet" for s in sources):
        return None
    try:
        return sum(pq.ParquetFile(s.path).metadata.num_rows for s in sources)
    except (pa.ArrowInvalid, OSError):  # the reader itself reports unreadable files
        return None


class _Grown:
    """A numpy array that grows (doubling) to cover every index asked for."""

    def __init__(self, dtype: type) -> None:
        self.array = np.zeros(1024, dtype=dtype)

    def ensure(self, n: int) -> np.ndarray:
        if n > len(self.array):
            bigger = np.zeros(max(n, 2 * len(self.array)), dtype=self.array.dtype)
            bigger[: len(self.array)] = self.array
            self.array = bigger
        return self.array


class Partitioner:
    """One partitioning run; see the module docstring for the passes."""

    def __init__(self, opts: PartitionOptions) -> None:
        if opts.num_partitions < 1:
            raise PartitionError(f"--partitions must be at least 1, got {opts.num_partitions}")
        if opts.assign not in ASSIGNMENTS:
            raise PartitionError(f"unknown --assign {opts.assign!r}; choose from {list(ASSIGNMENTS)}")
        if opts.input_format.on_bad_line not in ("error", "skip"):
            raise PartitionError(f"--on-bad-line must be error or skip, got {opts.input_format.on_bad_line!r}")
        # Checked here: numpy's seeding, the spill buffers and Arrow's readers fail on these mid-run.
        for option, value, minimum in (("--seed", opts.seed, 0), ("--buffer-edges", opts.buffer_edges, 1),
                                       ("--batch-rows", opts.input_format.batch_rows, 1),
                                       ("--entity-min-count", opts.entity_min_count, 0),
                                       ("--relation-min-count", opts.relation_min_count, 0)):
            if value < minimum:
                raise PartitionError(f"{option} must be at least {minimum}, got {value}")
        if opts.input_format.delimiter is not None and len(opts.input_format.delimiter) != 1:
            raise PartitionError(f"--delimiter must be one character, got {opts.input_format.delimiter!r}")
        self.opts = opts
        self.P = opts.num_partitions
        self.sources = _sources(opts)
        self.schema: Schema | None = load_schema(opts.schema) if opts.schema else None
        self.types = self.schema.types if self.schema else [DEFAULT_TYPE]
        self.relations = StringTable(capacity=256)
        self.entities = StringTable(capacity=1 << 16)
        self.rel_types = np.zeros((0, 2), dtype=np.int32)
        if self.schema:
            names = list(self.schema.relations)
            self.relations.add(pa.array(names, type=pa.string()), np.zeros(len(names), dtype=np.int32))
            self.rel_types = np.array(list(self.schema.relations.values()), dtype=np.int32).reshape(-1, 2)
        self.degree = _Grown(np.int64)
        self.rel_train = _Grown(np.int64)
        self.input_edges = Counter({s: 0 for s in SPLITS})
        self.bad_lines: Counter = Counter()
        self.show_progress = sys.stderr.isatty() if opts.progress is None else opts.progress

    # -- pass 1 ------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[Path, EdgeBatch, np.ndarray]]:
        """Every good edge batch of every source, with its file and split ids."""
        edge_ordinal = 0
        total = _known_rows(self.sources, self.opts.input_format)
        bar = tqdm(total=total, desc="pass 1/2", unit="edge", unit_scale=True, disable=not self.show_progress)
        with bar:
            for source in self.sources:
                for batch in read_edges(source.path, self.opts.input_format, self.bad_lines):
                    n = len(batch)
                    if source.split is None:
                        split = random_split(
                            edge_ordinal, n, self.opts.seed, self.opts.valid_fraction, self.opts.test_fraction
                        )
                    else:
                        split = np.full(n, SPLIT_IDS[source.split], dtype=np.int8)
                    edge_ordinal += n
                    bar.update(n)
                    yield source.path, batch, split

    def _kinds(self, rel: np.ndarray, side: int, n: int) -> np.ndarray:
        if self.schema is None:
            return np.zeros(n, dtype=np.int32)
        return self.rel_types[rel, side]

    def build_dictionaries(self, log: EdgeLog) -> None:
        for path, batch, split in self._batches():
            n = len(batch)
            rel = self.relations.add(batch.rel, np.zeros(n, dtype=np.int32))
            if self.schema is not None and len(self.relations) > len(self.schema.relations):
                unknown = self.relations.names(np.arange(len(self.schema.relations), len(self.relations)))
                raise PartitionError(
                    f"{path}: relation {unknown[0].as_py()!r} is not in the schema file {self.opts.schema}"
                )
            head = self.entities.add(batch.head, self._kinds(rel, 0, n))
            tail = self.entities.add(batch.tail, self._kinds(rel, 1, n))
            train = split == 0
            if self.opts.drop_self_loops:
                train &= head != tail
            degree = self.degree.ensure(len(self.entities))
            add_counts(head[train], degree)
            add_counts(tail[train], degree)
            add_counts(rel[train], self.rel_train.ensure(len(self.relations)))
            for name, sid in SPLIT_IDS.items():
                self.input_edges[name] += int(np.count_nonzero(split == sid))
            log.append(head=head, tail=tail, rel=rel, split=split, weight=batch.weight)
        if self.input_edges["train"] == 0:
            files = ", ".join(str(s.path) for s in self.sources if s.split != "valid" and s.split != "test")
            raise PartitionError(f"no training edges in the input ({files}): the input is empty or every line was bad")

    def number_relations(self) -> None:
        """The relations kept (at least ``relation_min_count`` training edges) get ids 0..R-1 in
        order of first appearance; ``rel_map`` maps a pass-1 id to its id, or -1."""
        rel_train = self.rel_train.ensure(len(self.relations))[: len(self.relations)]
        self.kept_relations = np.flatnonzero(rel_train >= self.opts.relation_min_count)
        self.rel_map = np.full(len(self.relations), -1, dtype=np.int32)
        self.rel_map[self.kept_relations] = np.arange(len(self.kept_relations), dtype=np.int32)
        if len(self.kept_relations) == 0:
            raise PartitionError(f"--relation-min-count {self.opts.relation_min_count} drops every relation")

    def assign(self) -> None:
        """Partition and local id of every entity kept (at least ``entity_min_count`` training
        edges, counted in pass 1); partition -1 for those dropped."""
        n = len(self.entities)
        degree = self.degree.ensure(n)[:n]
        self.ent_part = np.full(n, -1, dtype=np.int32)
        self.ent_local = np.zeros(n, dtype=np.int64)
        self.members: list[np.ndarray] = []  # per type: entry ids, in global order
        self.partition_counts: list[list[int]] = []
        self.rare_entities: dict[str, int] = {}
        types = self.entities.types
        kept = degree >= self.opts.entity_min_count
        for t, type_name in enumerate(self.types):
            of_type = types == t
            entries = np.flatnonzero(of_type & kept)
            self.rare_entities[type_name] = int(np.count_nonzero(of_type)) - len(entries)
            rng = np.random.default_rng([self.opts.seed, t])
            part, local = assign_partitions(degree[entries], self.P, self.opts.assign, rng)
            self.ent_part[entries] = part
            self.ent_local[entries] = local
            self.members.append(entries)
            self.partition_counts.append(np.bincount(part, minlength=self.P).tolist())
        if not any(sum(c) for c in self.partition_counts):
            raise PartitionError(f"--entity-min-count {self.opts.entity_min_count} drops every entity")
        self.id_dtype = id_dtype_for(max(max(c) for c in self.partition_counts))

    # -- pass 2 ------------------------------------------------------------------------
    def spill(self, log: EdgeLog, spill: SpillFile) -> None:
        self.self_loops = Counter({s: 0 for s in SPLITS})
        self.rare_edges = Counter({s: 0 for s in SPLITS})
        self.unseen_edges = Counter({s: 0 for s in SPLITS})
        degree = self.degree.array
        bar = tqdm(total=log.count, desc="pass 2/2", unit="edge", unit_scale=True, disable=not self.show_progress)
        with bar:
            for block in log.blocks(self.opts.buffer_edges):
                head, tail, split = block["head"], block["tail"], block["split"]
                n = len(head)
                key = np.empty(n, dtype=np.int32)
                lhs = np.empty(n, dtype=np.int64)
                rhs = np.empty(n, dtype=np.int64)
                route(head, tail, split, self.ent_part, self.ent_local, self.P, self.opts.drop_self_loops, key, lhs, rhs)
                rel = self.rel_map[block["rel"]]
                key[(key >= 0) & (rel < 0)] = RARE
                kept = key >= 0
                unseen = kept & ((degree[head] == 0) | (degree[tail] == 0))
                for name, sid in SPLIT_IDS.items():
                    in_split = split == sid
                    self.self_loops[name] += int(np.count_nonzero(in_split & (key == SELF_LOOP)))
                    self.rare_edges[name] += int(np.count_nonzero(in_split & (key == RARE)))
                    self.unseen_edges[name] += int(np.count_nonzero(in_split & unseen))
                spill.add(key, lhs, rhs, rel, block.get("weight"))
                bar.update(n)
        spill.flush()

    # -- output ------------------------------------------------------------------------
    def write_entities(self, root: Path) -> None:
        for t, type_name in enumerate(self.types):
            entries = self.members[t]
            part = self.ent_part[entries]
            for p in range(self.P):
                # Entries are in global order, which is local-id order within a partition.
                write_entity_names(root, type_name, p, self.entities.names(entries[part == p]))

    def write_buckets(self, root: Path, spill: SpillFile) -> dict[str, dict[str, int]]:
        self.duplicates = Counter({s: 0 for s in SPLITS})
        counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
        pp = self.P * self.P

        def write(key: int) -> tuple[str, str, int, int]:
            split, bucket = SPLITS[key // pp], key % pp
            i, j = divmod(bucket, self.P)
            earlier = tuple(s * pp + bucket for s in range(key // pp))  # the same bucket of train (and valid)
            written, dropped = spill.write_bucket(key, bucket_path(root, split, i, j), dedup=self.opts.dedup,
                                                  earlier=earlier)
            return split, bucket_key(i, j), written, dropped

        # Threads overlap the fsync of each finished file (which releases the GIL) with other buckets.
        with ThreadPoolExecutor(max_workers=BUCKET_WRITERS) as pool:
            for split, key, written, dropped in pool.map(write, (int(k) for k in np.flatnonzero(spill.totals))):
                counts[split][key] = written
                self.duplicates[split] += dropped
        return counts

    def stats(self, bucket_counts: dict[str, dict[str, int]]) -> dict[str, Any]:
        n = len(self.entities)
        degree = self.degree.array[:n]
        train = bucket_counts["train"]
        sizes = [(train.get(bucket_key(i, j), 0), bucket_key(i, j)) for i in range(self.P) for j in range(self.P)]
        largest = max(sizes, key=lambda s: s[0])
        smallest = min(sizes, key=lambda s: s[0])
        rel_train = self.rel_train.ensure(len(self.relations))[self.kept_relations]
        return {
            "edges": {s: sum(bucket_counts[s].values()) for s in SPLITS},
            "input_edges": dict(self.input_edges),
            "bad_lines_skipped": sum(self.bad_lines.values()),
            "bad_lines_by_file": {k: v for k, v in sorted(self.bad_lines.items()) if v},
            "duplicates_dropped": dict(self.duplicates),
            "self_loops_dropped": dict(self.self_loops),
            "rare_dropped": {"entities": self.rare_entities, "relations": len(self.relations) - len(self.kept_relations),
                             "edges": dict(self.rare_edges)},
            "entities": {name: int(len(self.members[t])) for t, name in enumerate(self.types)},
            "entities_not_in_train": {
                name: int(np.count_nonzero(degree[self.members[t]] == 0)) for t, name in enumerate(self.types)
            },
            "edges_with_entity_not_in_train": {s: self.unseen_edges[s] for s in ("valid", "test")},
            "relations": len(self.kept_relations),
            "relations_not_in_train": int(np.count_nonzero(rel_train == 0)),
            "largest_train_bucket": {"bucket": largest[1], "edges": largest[0]},
            "smallest_train_bucket": {"bucket": smallest[1], "edges": smallest[0]},
        }

    def relation_list(self) -> list[Relation]:
        names = self.relations.names(self.kept_relations).to_pylist()
        if self.schema is None:
            return [Relation(name, DEFAULT_TYPE, DEFAULT_TYPE) for name in names]
        return [Relation(name, self.types[lt], self.types[rt]) for name, (lt, rt) in zip(names, self.rel_types[self.kept_relations])]


def run_partition(opts: PartitionOptions) -> dict[str, Any]:
    """Partition ``opts.inputs`` into the dataset directory ``opts.out``; returns the summary."""
    started = time.perf_counter()
    out = Path(opts.out)
    if out.exists() and not opts.force:
        raise PartitionError(f"output directory {out} already exists (use --force to replace it)")
    part = Partitioner(opts)
    stop_hashing = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        summary = _build(part, out, pool, stop_hashing)
    finally:
        stop_hashing.set()
        pool.shutdown(wait=True, cancel_futures=True)
    elapsed = time.perf_counter() - started
    return {
        "dataset": str(out),
        "num_partitions": part.P,
        **summary["stats"],
        "timings_s": {
            "pass1": round(summary["pass1"] - started, 3),
            "pass2": round(summary["pass2"] - summary["pass1"], 3),
            "write": round(elapsed - (summary["pass2"] - started), 3),
            "total": round(elapsed, 3),
        },
        "edges_per_s": round(sum(part.input_edges.values()) / elapsed, 1) if elapsed > 0 else None,
    }


def _build(part: Partitioner, out: Path, pool: ThreadPoolExecutor, stop_hashing: threading.Event) -> dict[str, Any]:
    """The passes and the writing, inside the temporary dataset directory."""
    opts = part.opts
    has_weight = opts.input_format.weight_column is not None
    with atomic_directory(out, force=opts.force) as tmp:
        # Checksums are read alongside pass 1 (hashlib releases the GIL).
        checksums = [pool.submit(_sha256, s.path, stop_hashing) for s in part.sources]
        log = EdgeLog(tmp / "edge-log", has_weight)
        spill = None
        try:
            part.build_dictionaries(log)
            pass1 = time.perf_counter()
            part.number_relations()
            part.assign()
            spill = SpillFile(
                tmp / "spill.bin",
                num_keys=len(SPLITS) * part.P * part.P,
                id_dtype=part.id_dtype,
                has_weight=has_weight,
                capacity=opts.buffer_edges,
            )
            part.spill(log, spill)
            log.close()
            pass2 = time.perf_counter()
            part.write_entities(tmp)
            bucket_counts = part.write_buckets(tmp, spill)
        finally:
            log.close()
            if spill is not None:
                spill.close()
        stats = part.stats(bucket_counts)
        inputs = [dict(c.result(), split=s.split or "random") for c, s in zip(checksums, part.sources)]
        manifest = Manifest(
            num_partitions=part.P,
            entity_types=[EntityType(name, counts) for name, counts in zip(part.types, part.partition_counts)],
            relations=part.relation_list(),
            bucket_counts={s: dict(sorted(c.items())) for s, c in bucket_counts.items()},
            has_weights=has_weight,
            id_dtype=part.id_dtype,
            args=opts.as_record(),
            inputs=inputs,
            stats=stats,
        )
        write_manifest(tmp, manifest)
    return {"stats": stats, "pass1": pass1, "pass2": pass2}


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable end-of-run summary."""
    ents = ", ".join(f"{name} {count:,}" for name, count in summary["entities"].items())
    edges = ", ".join(f"{s} {n:,}" for s, n in summary["edges"].items())
    unseen = summary["edges_with_entity_not_in_train"]
    rare = summary["rare_dropped"]
    lines = [
        f"dataset      {summary['dataset']} ({summary['num_partitions']} partitions)",
        f"entities     {ents}",
        f"relations    {summary['relations']:,}",
        f"edges        {edges}",
        f"buckets      largest {summary['largest_train_bucket']['bucket']} "
        f"({summary['largest_train_bucket']['edges']:,} train edges), smallest "
        f"{summary['smallest_train_bucket']['bucket']} ({summary['smallest_train_bucket']['edges']:,})",
        f"not in train {sum(summary['entities_not_in_train'].values()):,} entities; kept edges using them: "
        f"valid {unseen['valid']:,}, test {unseen['test']:,}",
        f"dropped      bad lines {summary['bad_lines_skipped']:,}, duplicates "
        f"{sum(summary['duplicates_dropped'].values()):,}, self-loops {sum(summary['self_loops_dropped'].values()):,}, "
        f"edges of rare entities or relations {sum(rare['edges'].values()):,} ({sum(rare['entities'].values()):,} "
        f"entities, {rare['relations']:,} relations)",
        f"time         {summary['timings_s']['total']:.2f} s ({summary['edges_per_s']:,.0f} edges/s)",
    ]
    return "\n".join(lines)

