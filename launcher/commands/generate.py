"""``bigkg generate``: write a seeded synthetic graph with power-law degrees."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from partitioner.errors import PartitionError
from partitioner.generate import FORMATS, GraphSpec, generate_graph

NAME = "generate"
HELP = "write a seeded synthetic knowledge graph (power-law degrees) as Parquet or TSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output file (.parquet, .tsv or .tsv.gz)")
    parser.add_argument("--edges", type=int, required=True, help="number of edges")
    parser.add_argument("--entities", type=int, required=True, help="number of entities")
    parser.add_argument("--relations", type=int, default=100, help="number of relations (default 100)")
    parser.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the degrees (default 1.0)")
    parser.add_argument("--weights", action="store_true", help="add a float32 weight column")
    parser.add_argument("--format", choices=["auto", *FORMATS], default="auto", help="auto: by file extension")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        raise PartitionError(f"{args.out} already exists (use --force to replace it)")
    spec = GraphSpec(args.edges, args.entities, args.relations, args.alpha, args.seed, args.weights)
    start = time.perf_counter()
    path = generate_graph(spec, args.out, args.format)
    print(f"wrote {spec.edges:,} edges ({spec.entities:,} entities, {spec.relations} relations) "
          f"to {path} in {time.perf_counter() - start:.1f} s")
    return 0
