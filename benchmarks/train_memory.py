"""Peak memory of `bigkg train` by the number of partitions P, on one generated graph.

Only the current bucket's two partitions are held (their embeddings and row-wise Adagrad
state, (d + 1) floats a row), plus, with ``training.prefetch``, the partitions of the next
bucket that are not held yet: at most four of the P at once. So the resident table falls
as min(4, P) / P (2 / P without prefetching), while one epoch still trains every edge.
Each `bigkg train` runs in a child process of its own (one worker, so one process holds
everything), and its peak RSS (``ru_maxrss``) is compared with a child that only imports
what `bigkg train` imports, and with the sizes of the partitions it may hold.

    .venv/bin/python benchmarks/train_memory.py --edges 4000000 --entities 2000000 --dim 128 \\
        --partitions 1 2 4 8 16 --work /tmp/bigkg_train_memory
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.partition import measure  # noqa: E402
from bigkg.format import load_manifest  # noqa: E402
from partitioner.generate import GraphSpec, generate_graph  # noqa: E402

IMPORTS_ONLY = "import launcher.cli, launcher.commands.train, bigkg.training.trainer"


def partition(graph: Path, out: Path, partitions: int) -> None:
    measure([sys.executable, "-m", "launcher.cli", "partition", str(graph), "--out", str(out), "-P", str(partitions),
             "--force", "--no-progress"], out.with_suffix(".log"))


def train(dataset: Path, run_dir: Path, dim: int, prefetch: bool, more: tuple[str, ...] = ()) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one epoch of `bigkg train` (vs_pbg.yaml's settings, one
    worker, and the ``more`` settings, KEY=VALUE)."""
    sets = [f"dataset={dataset}", f"run_dir={run_dir}", f"model.dim={dim}", "training.epochs=1", "training.workers=1",
            "training.threads=2", f"training.prefetch={str(prefetch).lower()}", *more]
    command = [sys.executable, "-m", "launcher.cli", "train", str(REPO / "benchmarks" / "configs" / "vs_pbg.yaml"),
               "--fresh", *[arg for s in sets for arg in ("--set", s)]]
    wall, _cpu, rss = measure(command, run_dir.with_suffix(".log"))
    return wall, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=4_000_000)
    parser.add_argument("--entities", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--no-prefetch", type=int, nargs="*", default=[16], metavar="P",
                        help="also train these P without prefetching")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bigkg_train_memory"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    graph = args.work / "graph.parquet"
    if not graph.exists():
        generate_graph(GraphSpec(edges=args.edges, entities=args.entities, relations=100), graph)
    _wall, _cpu, baseline = measure([sys.executable, "-c", IMPORTS_ONLY], args.work / "imports.log")

    rows = []
    runs = [(p, True) for p in args.partitions] + [(p, False) for p in args.no_prefetch]
    for partitions, prefetch in runs:
        dataset = args.work / f"p{partitions}"
        if not (dataset / "manifest.json").exists():
            partition(graph, dataset, partitions)
        manifest = load_manifest(dataset)
        counts = manifest.entity_types[0].partition_counts
        row_bytes = (args.dim + 1) * 4  # embedding and Adagrad state
        held = min(4 if prefetch else 2, partitions)
        wall, rss = train(dataset, args.work / f"run_p{partitions}_{'prefetch' if prefetch else 'no_prefetch'}",
                          args.dim, prefetch)
        rows.append({"partitions": partitions, "prefetch": prefetch, "entities": sum(counts),
                     "table_mib": sum(counts) * row_bytes / 2**20, "partition_mib": max(counts) * row_bytes / 2**20,
                     "held_at_most": held, "held_mib": held * max(counts) * row_bytes / 2**20,
                     "peak_rss_mib": rss, "above_imports_mib": rss - baseline, "wall_s": wall})
        print(json.dumps(rows[-1]), flush=True)

    entities = rows[0]["entities"]
    print(f"\ngenerated graph: {args.edges:,} edges, {entities:,} entities with edges, d={args.dim}; "
          f"one epoch each (configs/vs_pbg.yaml's settings, 1 worker, 2 threads); imports alone: {baseline:.0f} MiB\n")
    print("| P | prefetch | largest partition MiB | partitions held at most | their MiB | peak RSS MiB "
          "| above imports MiB | whole table MiB | wall s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['partitions']} | {'yes' if r['prefetch'] else 'no'} | {r['partition_mib']:.0f} | {r['held_at_most']} "
              f"| {r['held_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['above_imports_mib']:.0f} | {r['table_mib']:.0f} "
              f"| {r['wall_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"baseline_mib": baseline, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
