"""Scaling of multi-worker training: edges/s and speedup for 1, 2, 4, 8 CPU workers over gloo.

Generates a power-law graph (``bigkg generate``), partitions it (``bigkg partition``),
then trains it with ``torchrun --nproc-per-node W -m launcher`` for each W, every worker
with the same number of torch threads, and prints a table. Edges/s is the job's trained
edges over its epoch time, from rank 0's epoch records. A one-worker job is the
single-process loop, whose epoch time sums its buckets' load and train time and leaves
out its per-bucket checkpoint commits; a multi-worker epoch time is the wall time of the
epoch, with the partition exchange and the waits included. So speedups are conservative.

    python benchmarks/scaling.py --edges 20000000 --entities 2000000 --partitions 16 --workers 1 2 4 8

A series too long for one sitting can be split: ``--json`` writes the table's rows, and
a later run with ``--baseline-json`` of that file (same graph and settings, same machine)
takes them into its table (and its ``--json``), the fewest workers as the base of the speedups:

    python benchmarks/scaling.py --workers 1 --json w1.json
    python benchmarks/scaling.py --workers 2 4 8 --baseline-json w1.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.torchrun import SINGLE_NODE, run_torchrun  # noqa: E402
from bigkg.atomic import write_text_atomic  # noqa: E402


def bigkg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "launcher.cli", *args], check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def prepare(work: Path, edges: int, entities: int, partitions: int) -> Path:
    graph = work / "graph.parquet"
    dataset = work / f"data_p{partitions}"
    if not dataset.exists():
        bigkg("generate", "--out", str(graph), "--edges", str(edges), "--entities", str(entities), "--relations", "100",
              "--force")
        bigkg("partition", str(graph), "-P", str(partitions), "--out", str(dataset), "--no-progress")
    return dataset


def run(dataset: Path, work: Path, workers: int, epochs: int, dim: int, threads: int) -> dict:
    run_dir = work / f"run_w{workers}"
    config = work / f"w{workers}.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": str(dataset), "run_dir": str(run_dir),
        "model": {"dim": dim, "operator": "complex_diagonal", "comparator": "dot"},
        "training": {"epochs": epochs, "threads": threads, "batch_size": 1000},
        "eval": {"valid_every": 0},
        "distributed": {"timeout": 1800},
    }))
    started = time.perf_counter()
    log = work / f"w{workers}.log"
    code = run_torchrun(config, ["--nproc-per-node", str(workers), *SINGLE_NODE], log, threads=threads,
                        launcher_args=["--fresh"])
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"torchrun with {workers} worker(s) exited with {code}; its log is {log}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs_ = [r for r in records if r["type"] == "epoch"]
    rates = [e["edges"] / e["train_s"] for e in epochs_]
    return {"workers": workers, "edges_per_s": statistics.median(rates), "wall_s": wall, "epochs": len(epochs_)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=20_000_000)
    parser.add_argument("--entities", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--work", type=Path, default=None,
                        help="working directory (default: a temporary one); a graph already there is reused")
    parser.add_argument("--json", type=Path, help="write the settings and rows here")
    parser.add_argument("--baseline-json", type=Path, help="rows of an earlier --json run of the same graph and settings")
    args = parser.parse_args()
    settings = {k: getattr(args, k) for k in ("edges", "entities", "partitions", "epochs", "dim", "threads")}
    earlier: list[dict] = []
    if args.baseline_json:
        baseline = json.loads(args.baseline_json.read_text())
        if baseline["settings"] != settings:
            raise SystemExit(f"{args.baseline_json} was run with {baseline['settings']}, not {settings}")
        earlier = baseline["results"]
    work = args.work or Path(tempfile.mkdtemp(prefix="bigkg-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset = prepare(work, args.edges, args.entities, args.partitions)
    results = [run(dataset, work, w, args.epochs, args.dim, args.threads) for w in args.workers]
    results = sorted(earlier + results, key=lambda r: r["workers"])
    if args.json:
        write_text_atomic(args.json, json.dumps({"settings": settings, "results": results}, indent=1) + "\n")
    base = results[0]["edges_per_s"] / results[0]["workers"]
    print(f"{args.edges:,} edges, {args.entities:,} entities, P={args.partitions}, dim {args.dim}, "
          f"{args.threads} thread(s) per worker, median of {args.epochs} epochs")
    print(f"{'workers':>7} {'edges/s':>12} {'speedup':>8} {'per worker':>10} {'wall s':>8}")
    for r in results:
        speedup = r["edges_per_s"] / base
        print(f"{r['workers']:>7} {r['edges_per_s']:>12,.0f} {speedup:>8.2f} {speedup / r['workers']:>10.2f} {r['wall_s']:>8.1f}")


if __name__ == "__main__":
    main()
