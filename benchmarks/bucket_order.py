"""How the order of the buckets moves the test MRR: single-process orders against torchrun workers.

FB15k-237 in ``--partitions`` partitions is trained with the settings of
tests/test_distributed.py (ComplEx-style diagonal operator, dot, dim 32, 8 epochs,
batch 1000, lr 0.1, one thread), once per bucket order and seed in this process,
and ``--repeats`` times per worker count with ``torchrun --nproc-per-node W`` on
loopback (gloo), whose lock server hands out buckets with the affinity policy.
Every run's filtered test MRR (both directions, all entities) goes into one table,
with the share of consecutively finished buckets that have a partition in common.

    .venv/bin/python benchmarks/bucket_order.py --json /tmp/bucket_order.json
    .venv/bin/python benchmarks/bucket_order.py --set training.lr=0.3 --set training.epochs=3 --workers 2 --repeats 2

tests/test_distributed.py writes its configs with ``write_config`` and ``SETTINGS``
from here, so the numbers this prints are about the tests' own settings.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bigkg.atomic import write_text_atomic  # noqa: E402
from bigkg.config import load_config  # noqa: E402
from bigkg.distributed.audit import read_events  # noqa: E402
from bigkg.evaluation import evaluate  # noqa: E402
from bigkg.schedule import ORDERS  # noqa: E402
from bigkg.training import train  # noqa: E402
from benchmarks.fb15k237_gpu import DEFAULT_DATA, partitioned  # noqa: E402
from benchmarks.torchrun import SINGLE_NODE, run_torchrun  # noqa: E402
from benchmarks.workdir import add_work_arguments, work_directory  # noqa: E402

# By 8 epochs the test MRR has settled: distributed runs spread ~0.003 around it (0.006 at 5).
SETTINGS = {
    "seed": 0, "device": "cpu",
    "model": {"dim": 32, "operator": "complex_diagonal", "comparator": "dot", "reciprocal": True},
    "training": {"epochs": 8, "batch_size": 1000, "lr": 0.1, "threads": 1},
    "eval": {"valid_every": 0, "query_batch": 4096},
    "distributed": {"lease_seconds": 10, "heartbeat_seconds": 1, "timeout": 120},
}


def write_config(path: Path, dataset: Path, changes: dict[str, Any], overrides: list[str]) -> Path:
    """SETTINGS with ``changes`` and then the ``--set`` overrides (both by dotted key), as a YAML file."""
    config = copy.deepcopy(SETTINGS)
    config.update(dataset=str(dataset), run_dir=str(path.with_suffix("")))
    given = [(key, yaml.safe_load(value)) for key, value in (item.split("=", 1) for item in overrides)]
    for key, value in [*changes.items(), *given]:
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    path.write_text(yaml.safe_dump(config))
    return path


def shared_partition(sequence: list[tuple[int, int]]) -> float:
    """Share of consecutive buckets that have a partition in common."""
    pairs = list(zip(sequence, sequence[1:]))
    return sum(bool(set(a) & set(b)) for a, b in pairs) / max(len(pairs), 1)


def single_process(config_path: Path) -> dict[str, Any]:
    config = load_config(config_path, [])
    train(config, fresh=True)
    records = [json.loads(line) for line in (Path(config.run_dir) / "metrics.jsonl").read_text().splitlines()]
    order = [tuple(r["bucket"]) for r in records if r["type"] == "bucket"]
    return {"mrr": evaluate(config, split="test")["mrr"], "buckets": len(order), "shared": shared_partition(order)}


def workers(config_path: Path, count: int) -> dict[str, Any]:
    config = load_config(config_path, [])
    log = config_path.with_suffix(".log")
    if run_torchrun(config_path, ["--nproc-per-node", str(count), *SINGLE_NODE], log, launcher_args=["--fresh"]) != 0:
        raise SystemExit(f"torchrun with {count} workers failed; see {log}")
    done = [e for e in read_events((Path(config.run_dir) / "logs").glob("*.jsonl")) if e["event"] == "done"]
    order = [tuple(e["bucket"]) for e in done]
    return {"mrr": evaluate(config, split="test")["mrr"], "buckets": len(order), "shared": shared_partition(order)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=next((p for p in DEFAULT_DATA if p.exists()), DEFAULT_DATA[-1]),
                        help="FB15k-237 as a .tar.xz or a directory with train/valid/test.txt")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--orders", nargs="*", default=["affinity", "random", "inside_out"], choices=ORDERS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--workers", nargs="*", type=int, default=[2, 4], help="torchrun worker counts (none: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="torchrun runs per worker count")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    add_work_arguments(parser, "rows")
    args = parser.parse_args()

    with work_directory(args.work) as work:
        dataset = partitioned(args.data, work, args.partitions)
        rows = []
        for order in args.orders:
            for seed in args.seeds:
                changes = {"training.bucket_order": order, "seed": seed}
                path = write_config(work / f"single_{order}_{seed}.yaml", dataset, changes, args.set)
                rows.append({"run": f"single process, {order}, seed {seed}", "workers": 1, **single_process(path)})
                print(json.dumps(rows[-1]), flush=True)
        for count in args.workers:
            for repeat in range(args.repeats):
                # the lock server always orders by affinity; the single process takes the same name
                changes = {"training.bucket_order": "affinity"}
                path = write_config(work / f"workers{count}_{repeat}.yaml", dataset, changes, args.set)
                rows.append({"run": f"{count} workers (torchrun), run {repeat + 1}", "workers": count,
                             **workers(path, count)})
                print(json.dumps(rows[-1]), flush=True)

    print(f"\n{args.data.name}, P={args.partitions}, overrides: {args.set or 'none'}\n")
    print("| run | test MRR | consecutive buckets sharing a partition |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['run']} | {row['mrr']:.4f} | {row['shared']:.0%} |")
    for count in args.workers:
        values = [r["mrr"] for r in rows if r["workers"] == count]
        print(f"| {count} workers, median of {len(values)} | {statistics.median(values):.4f} | |")
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
