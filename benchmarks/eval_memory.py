"""Peak memory of evaluation's filter index: every edge of the graph against the split's own queries.

Filtered ranking needs the known answers of the queries it ranks. Before 2026-12-03,
evaluation read every split into memory and indexed every triple; now it indexes only the
triples that answer one of the evaluated split's (relation, head) or (relation, tail) keys,
read bucket by bucket (``bigkg.evaluation.evaluate.dataset_index``). This generates a graph
(``bigkg generate``), partitions it with a small seeded test split, and builds both in
fresh processes, reporting each one's rise in peak resident memory over the process after
its imports, the seconds and the filter entries.

    .venv/bin/python benchmarks/eval_memory.py --edges 20000000 --entities 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.workdir import add_work_arguments, work_directory  # noqa: E402
from bigkg.atomic import write_text_atomic  # noqa: E402
from partitioner.generate import GraphSpec, generate_graph  # noqa: E402
from partitioner.run import PartitionOptions, run_partition  # noqa: E402

MEASURE = """
import json, resource, sys, time
from bigkg.evaluation.evaluate import dataset_index
from bigkg.evaluation.filters import FilterIndex, concatenate, filter_stride, read_split
from bigkg.format import SPLITS, load_manifest
root, method = sys.argv[1], sys.argv[2]
manifest = load_manifest(root)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if method == "every edge":  # what evaluation held before: every split, and a filter of every triple
    splits = {s: read_split(root, manifest, s) for s in SPLITS}
    filters = FilterIndex(concatenate(list(splits.values())), filter_stride(manifest))
else:
    filters = dataset_index(root, manifest, "test").filters
seconds = time.perf_counter() - started
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"method": method, "peak_rise_bytes": peak, "seconds": seconds,
                  "entries": len(filters.tails) + len(filters.heads)}))
"""

METHODS = ("every edge", "the test split's queries")


def measure(dataset: Path, method: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(dataset), method], cwd=REPO, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=20_000_000)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--relations", type=int, default=100)
    parser.add_argument("--test-fraction", type=float, default=0.001)
    parser.add_argument("--partitions", type=int, default=4)
    add_work_arguments(parser, "rows")
    args = parser.parse_args()

    with work_directory(args.work) as work:
        graph = generate_graph(GraphSpec(edges=args.edges, entities=args.entities, relations=args.relations), work / "graph.parquet")
        dataset = work / "dataset"
        summary = run_partition(PartitionOptions(inputs=[str(graph)], out=dataset, num_partitions=args.partitions,
                                                 test_fraction=args.test_fraction, force=True, progress=False))
        rows = [measure(dataset, method) for method in METHODS]

    print(f"\n{args.edges:,} generated edges, {args.entities:,} entities, {args.relations} relations, "
          f"P={args.partitions}, test edges: {summary['edges']['test']:,}\n")
    print("| filter index of | peak RSS rise (MB) | seconds | filter entries |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['peak_rise_bytes'] / 1e6:,.0f} | {row['seconds']:.1f} | {row['entries']:,} |")
    if args.json:
        write_text_atomic(args.json, json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
