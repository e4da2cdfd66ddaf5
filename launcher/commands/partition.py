"""``bigkg partition``: turn edge files into a partitioned bigkg dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from bigkg.summary import write_summary
from partitioner.assign import ASSIGNMENTS
from partitioner.errors import PartitionError
from partitioner.readers import InputFormat
from partitioner.run import PartitionOptions, format_summary, run_partition

NAME = "partition"
HELP = "partition edge files (TSV/CSV/Parquet) into a dataset of entity partitions and edge buckets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="training edge files or globs")
    parser.add_argument("--out", required=True, type=Path, help="dataset directory to create")
    parser.add_argument("--partitions", "-P", type=int, default=1, help="partitions per entity type (default 1)")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    split = parser.add_argument_group("splits")
    split.add_argument("--valid", nargs="+", default=[], metavar="FILE", help="validation edge files or globs")
    split.add_argument("--test", nargs="+", default=[], metavar="FILE", help="test edge files or globs")
    split.add_argument("--valid-fraction", type=float, default=0.0, help="seeded random share of INPUT for valid")
    split.add_argument("--test-fraction", type=float, default=0.0, help="seeded random share of INPUT for test")
    fmt = parser.add_argument_group("input format")
    fmt.add_argument("--format", choices=["auto", "tsv", "csv", "parquet"], default="auto",
                     help="input format (auto: by file extension; .gz text is decompressed)")
    fmt.add_argument("--delimiter", help="field delimiter of text input (default: tab for TSV, comma for CSV)")
    fmt.add_argument("--header", action=argparse.BooleanOptionalAction, default=False,
                     help="text input starts with a header line of column names")
    fmt.add_argument("--columns", default="0,1,2", metavar="H,R,T",
                     help="head, relation, tail columns as positions or names (default 0,1,2)")
    fmt.add_argument("--weight-column", metavar="COL", help="optional edge weight column (position or name)")
    fmt.add_argument("--on-bad-line", choices=["error", "skip"], default="error",
                     help="stop at a malformed line (default) or skip and count it")
    fmt.add_argument("--batch-rows", type=int, default=1 << 20, help="rows per Parquet record batch")
    graph = parser.add_argument_group("graph")
    graph.add_argument("--schema", type=Path, help="YAML file: relation -> [head_type, tail_type]")
    graph.add_argument("--assign", choices=list(ASSIGNMENTS), default="random",
                       help="entity-to-partition assignment: seeded balanced random, or degree-balanced")
    graph.add_argument("--dedup", action="store_true",
                       help="drop repeated (head, relation, tail) edges within a split, and from valid and test "
                            "those of an earlier split (train, then valid)")
    graph.add_argument("--drop-self-loops", action=argparse.BooleanOptionalAction, default=False,
                       help="drop edges whose head is their tail (default: keep)")
    graph.add_argument("--entity-min-count", type=int, default=0, metavar="N",
                       help="drop entities with fewer than N training edges, and every edge with one (default 0: keep all)")
    graph.add_argument("--relation-min-count", type=int, default=0, metavar="N",
                       help="drop relations with fewer than N training edges, and their edges (default 0: keep all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the partition assignment and random splits")
    parser.add_argument("--buffer-edges", type=int, default=1 << 21, help="edges buffered before each spill")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write a machine-readable summary here")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: only on a terminal)")


def _columns(text: str) -> tuple[str, str, str]:
    cols = [c.strip() for c in text.split(",")]
    if len(cols) != 3 or not all(cols):
        raise PartitionError(f"--columns needs three comma-separated columns (head,relation,tail), got {text!r}")
    return cols[0], cols[1], cols[2]


def options_from_args(args: argparse.Namespace) -> PartitionOptions:
    return PartitionOptions(
        inputs=args.inputs,
        out=args.out,
        num_partitions=args.partitions,
        valid=args.valid,
        test=args.test,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        schema=args.schema,
        assign=args.assign,
        dedup=args.dedup,
        drop_self_loops=args.drop_self_loops,
        entity_min_count=args.entity_min_count,
        relation_min_count=args.relation_min_count,
        input_format=InputFormat(
            fmt=args.format,
            delimiter=args.delimiter,
            header=args.header,
            columns=_columns(args.columns),
            weight_column=args.weight_column,
            on_bad_line=args.on_bad_line,
            batch_rows=args.batch_rows,
        ),
        seed=args.seed,
        force=args.force,
        buffer_edges=args.buffer_edges,
        progress=args.progress,
    )


def run(args: argparse.Namespace) -> int:
    summary = run_partition(options_from_args(args))
    print(format_summary(summary))
    if args.json:
        write_summary(args.json, summary, sort_keys=True)
    return 0
