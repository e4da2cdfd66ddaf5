"""Memory and speed of training large buckets whole or in edge chunks (``training.max_edges_per_chunk``).

On a graph whose edges outweigh its embeddings, a bucket's edges dominate what training
holds: read from the file, widened to int64 and shuffled, some tens of bytes an edge.
Edge chunks load one part of a bucket at a time (an epoch becomes one pass over the
buckets per chunk), so that memory follows ``max_edges_per_chunk`` rather than the
bucket. Each run is one epoch of `bigkg train` in a child process of its own
(configs/vs_pbg.yaml's settings, one worker), whose peak RSS (``ru_maxrss``) is compared
with a child that only imports what `bigkg train` imports.

    .venv/bin/python benchmarks/edge_chunks.py --edges 20000000 --entities 200000 --dim 32 \\
        --max-edges 0 5000000 1000000 --repeats 3 --work /tmp/bigkg_edge_chunks

Quality with chunks is measured by benchmarks/bucket_order.py with ``--set training.num_edge_chunks=N``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.partition import measure  # noqa: E402
from benchmarks.train_memory import IMPORTS_ONLY, partition, train  # noqa: E402
from bigkg.atomic import write_text_atomic  # noqa: E402
from bigkg.edge_chunks import edge_chunk_count  # noqa: E402
from bigkg.format import load_manifest  # noqa: E402
from partitioner.generate import GraphSpec, generate_graph  # noqa: E402


def epoch_record(run_dir: Path) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return next(r for r in map(json.loads, reversed(lines)) if r["type"] == "epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=20_000_000)
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--max-edges", type=int, nargs="+", default=[0, 5_000_000, 1_000_000],
                        help="training.max_edges_per_chunk of each run (0: whole buckets)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bigkg_edge_chunks"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    graph = args.work / f"graph_{args.edges}_{args.entities}.parquet"
    if not graph.exists():
        generate_graph(GraphSpec(edges=args.edges, entities=args.entities, relations=100), graph)
    dataset = args.work / f"p{args.partitions}_{args.edges}_{args.entities}"
    if not (dataset / "manifest.json").exists():
        partition(graph, dataset, args.partitions)
    manifest = load_manifest(dataset)
    largest = max(manifest.bucket_counts["train"].values())
    baseline = statistics.median(measure([sys.executable, "-c", IMPORTS_ONLY], args.work / "imports.log")[2]
                                 for _ in range(args.repeats))

    rows = []
    for limit in args.max_edges:
        chunks = edge_chunk_count(manifest.bucket_counts["train"].values(), 0, limit)
        runs = []
        for repeat in range(args.repeats):
            run_dir = args.work / f"run_{limit}_{repeat}"
            wall, rss = train(dataset, run_dir, args.dim, True, (f"training.max_edges_per_chunk={limit}",))
            runs.append({"wall_s": wall, "peak_rss_mib": rss, "edges_per_s": epoch_record(run_dir)["edges_per_s"]})
        row = {"max_edges_per_chunk": limit, "chunks": chunks, "edges_per_load": -(-largest // chunks),
               **{key: statistics.median(r[key] for r in runs) for key in runs[0]}, "runs": runs}
        row["above_imports_mib"] = row["peak_rss_mib"] - baseline
        rows.append(row)
        print(json.dumps(row), flush=True)

    whole = rows[0]
    print(f"\ngenerated graph: {args.edges:,} edges, {sum(manifest.entity_types[0].partition_counts):,} entities, "
          f"d={args.dim}, P={args.partitions} (largest bucket {largest:,} edges); one epoch per run "
          f"(configs/vs_pbg.yaml's settings, 1 worker, 2 threads); medians of {args.repeats}; "
          f"imports alone: {baseline:.0f} MiB\n")
    print("| max_edges_per_chunk | chunks | edges per load | peak RSS MiB | above imports MiB | edges/s "
          "| edges/s ÷ first row's |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['max_edges_per_chunk'] or 'none'} | {r['chunks']} | {r['edges_per_load']:,} | {r['peak_rss_mib']:.0f} "
              f"| {r['above_imports_mib']:.0f} | {r['edges_per_s']:,.0f} | {r['edges_per_s'] / whole['edges_per_s']:.2f} |")
    if args.json:
        write_text_atomic(args.json, json.dumps({"baseline_mib": baseline, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
