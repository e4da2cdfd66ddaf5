"""A seeded synthetic knowledge graph with power-law degrees, for benchmarks and scale tests.

Heads, tails and relations are drawn from truncated power laws (Zipf-like,
exponent ``alpha``) over ranks, and ranks are scattered over ids by a seeded
affine bijection, so popular entities are not simply the small ids. The
tails of the first ``entities`` edges visit every entity once, so the graph
uses exactly ``entities`` entities whenever it has at least that many edges.
Names are ``e<id>`` and ``r<id>``. Edges are produced and written in chunks,
so memory stays fixed whatever the size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from bigkg.atomic import atomic_file
from partitioner.errors import PartitionError

FORMATS = ("parquet", "tsv")
BLOCK = 1 << 16


@dataclass(frozen=True)
class GraphSpec:
    edges: int
    entities: int
    relations: int
    alpha: float = 1.0
    seed: int = 0
    weights: bool = False


def _power_law_ranks(rng: np.random.Generator, n: int, size: int, alpha: float) -> np.ndarray:
    """Ranks in [0, n) with P(rank k) roughly proportional to (k + 1) ** -alpha."""
    u = rng.random(size)
    if abs(alpha - 1.0) < 1e-9:
        x = np.exp(u * math.log(n + 1))
    else:
        e = 1.0 - alpha
        x = ((float(n + 1) ** e - 1.0) * u + 1.0) ** (1.0 / e)
    return np.minimum(x.astype(np.int64) - 1, n - 1)


def _bijection(n: int, rng: np.random.Generator) -> tuple[int, int]:
    """(a, b) with gcd(a, n) = 1, so that k -> (a k + b) mod n permutes [0, n)."""
    while True:
        a = int(rng.integers(1, max(n, 2)))
        if math.gcd(a, n) == 1:
            return a, int(rng.integers(0, n))


def _names(prefix: str, ids: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(ids), pa.string()), "")


def _block(spec: GraphSpec, index: int, maps: list[tuple[int, int]]) -> dict[str, pa.Array]:
    """Edges ``index * BLOCK ..`` of the graph; each block has its own seeded stream."""
    (a_ent, b_ent), (a_rel, b_rel), (a_cov, b_cov) = maps
    rng = np.random.default_rng([spec.seed, index])
    start = index * BLOCK
    n = min(BLOCK, spec.edges - start)
    head = (_power_law_ranks(rng, spec.entities, n, spec.alpha) * a_ent + b_ent) % spec.entities
    tail = (_power_law_ranks(rng, spec.entities, n, spec.alpha) * a_ent + b_ent) % spec.entities
    rel = (_power_law_ranks(rng, spec.relations, n, spec.alpha) * a_rel + b_rel) % spec.relations
    cover = np.arange(start, min(start + n, spec.entities), dtype=np.int64)
    tail[: len(cover)] = (cover * a_cov + b_cov) % spec.entities
    columns = {"head": _names("e", head), "relation": _names("r", rel), "tail": _names("e", tail)}
    if spec.weights:
        columns["weight"] = pa.array(rng.random(n, dtype=np.float32) + np.float32(1e-3))
    return columns


def generate_chunks(spec: GraphSpec, chunk_edges: int = 1 << 20) -> Iterator[pa.Table]:
    """Yield the graph as Arrow tables of about ``chunk_edges`` rows (whole blocks).

    The edges do not depend on ``chunk_edges``.
    """
    if spec.edges < 1 or spec.entities < 1 or spec.relations < 1:
        raise PartitionError("--edges, --entities and --relations must all be at least 1")
    if spec.seed < 0:  # numpy seeds only from non-negative integers
        raise PartitionError(f"--seed must be at least 0, got {spec.seed}")
    if not math.isfinite(spec.alpha):  # nan or inf ranks make a graph of garbage ids, silently
        raise PartitionError(f"--alpha must be a finite number, got {spec.alpha}")
    rng = np.random.default_rng(spec.seed)
    maps = [_bijection(spec.entities, rng), _bijection(spec.relations, rng), _bijection(spec.entities, rng)]
    blocks_per_chunk = max(1, chunk_edges // BLOCK)
    num_blocks = -(-spec.edges // BLOCK)
    for first in range(0, num_blocks, blocks_per_chunk):
        blocks = [pa.table(_block(spec, b, maps)) for b in range(first, min(first + blocks_per_chunk, num_blocks))]
        yield pa.concat_tables(blocks).combine_chunks()


def generate_graph(spec: GraphSpec, out: Path, fmt: str = "auto", chunk_edges: int = 1 << 20) -> Path:
    """Write the graph to ``out`` (Parquet, or TSV without header; ``.gz`` compresses)."""
    out = Path(out)
    if fmt == "auto":
        fmt = "parquet" if out.suffix in (".parquet", ".pq") else "tsv"
    if fmt not in FORMATS:
        raise PartitionError(f"unknown format {fmt!r}; choose from {FORMATS}")
    with atomic_file(out) as tmp:
        if fmt == "parquet":
            writer = None
            for table in generate_chunks(spec, chunk_edges):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            writer.close()
        else:
            compression = "gzip" if out.name.endswith(".gz") else None
            with pa.output_stream(str(tmp), compression=compression) as sink:
                options = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
                writer = None
                for table in generate_chunks(spec, chunk_edges):
                    if writer is None:
                        writer = pcsv.CSVWriter(sink, table.schema, write_options=options)
                    writer.write_table(table)
                writer.close()
    return out
