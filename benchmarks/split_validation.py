"""Validation split over W worker processes (gloo), as distributed training runs it, against one.

FB15k-237 in ``--partitions`` partitions gets a checkpoint of random vectors (ranking time
does not depend on training). For each worker count W, W processes on loopback each call
``evaluate(config, "valid", shard=(rank, W), sum_over_workers=all_reduce)`` as
``DistributedTrainer`` does, with ``--threads`` torch threads each; the time is the slowest
worker's, after one untimed call that builds the split's index (validation builds it once
per run). Every W must give the same MRR, bit for bit.

    .venv/bin/python benchmarks/split_validation.py --workers 1 2 --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.eval_speed import write_random_checkpoint  # noqa: E402
from benchmarks.fb15k237_gpu import DEFAULT_DATA, partitioned  # noqa: E402
from benchmarks.workdir import add_work_arguments, work_directory  # noqa: E402
from bigkg.atomic import write_text_atomic  # noqa: E402
from bigkg.config import config_from_dict  # noqa: E402
from bigkg.evaluation import evaluate  # noqa: E402
from bigkg.format import load_manifest  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, workers: int, port: int, config_dict: dict, threads: int, repeats: int, out: Path) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=workers)
    config = config_from_dict(config_dict)

    def sum_over_workers(values: np.ndarray) -> np.ndarray:
        total = torch.from_numpy(values)
        dist.all_reduce(total)
        return total.numpy()

    def validate() -> dict:
        return evaluate(config, "valid", shard=(rank, workers), sum_over_workers=sum_over_workers)

    validate()  # builds and caches the split's index
    times, result = [], {}
    for _ in range(repeats):
        dist.barrier()
        started = time.perf_counter()
        result = validate()
        elapsed = torch.tensor([time.perf_counter() - started], dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        times.append(elapsed.item())
    if rank == 0:
        out.write_text(json.dumps({"workers": workers, "threads": threads, "seconds": statistics.median(times),
                                   "times": times, "mrr": result["mrr"], "count": result["count"]}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=next((p for p in DEFAULT_DATA if p.exists()), DEFAULT_DATA[-1]),
                        help="FB15k-237 as a .tar.xz or a directory with train/valid/test.txt")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--repeats", type=int, default=3)
    add_work_arguments(parser, "rows")
    args = parser.parse_args()

    with work_directory(args.work) as work:
        dataset = partitioned(args.data, work, args.partitions)
        config_dict = {"dataset": str(dataset), "run_dir": str(work / "run"),
                       "model": {"dim": args.dim, "operator": "complex_diagonal", "reciprocal": True}}
        write_random_checkpoint(config_from_dict(config_dict), load_manifest(dataset))
        rows = []
        for workers in args.workers:
            out = work / f"workers{workers}.json"
            mp.spawn(worker, args=(workers, free_port(), config_dict, args.threads, args.repeats, out), nprocs=workers)
            rows.append(json.loads(out.read_text()))

    base = next((r["seconds"] for r in rows if r["workers"] == 1), None)
    print(f"\nFB15k-237 valid split ({rows[0]['count']:,} queries), P={args.partitions}, d={args.dim}, "
          f"{args.threads} torch thread(s) per worker, median of {args.repeats}\n")
    print("| workers | seconds | speed-up | MRR |\n|---:|---:|---:|---:|")
    for r in rows:
        speedup = f"{base / r['seconds']:.2f}×" if base else "-"
        print(f"| {r['workers']} | {r['seconds']:.2f} | {speedup} | {r['mrr']:.6f} |")
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
