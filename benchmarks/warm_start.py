"""A grown graph trained from scratch against one started from the earlier run (``model.init_from``).

The "old" graph is the first ``--fraction`` of CoDEx-S's training edges, partitioned in
``--old-partitions`` partitions and trained with the demo config (configs/codex-s.yaml),
then exported to Parquet. The "new" graph is all of CoDEx-S's training edges with its
valid and test splits, in ``--partitions`` partitions (another layout: rows are matched by
name). The new graph is trained three times with the same config and seed: from random
vectors (cold), from the export (entity vectors only), and from the old run's directory
(entity vectors and Adagrad state, relation parameters and their optimizer state). The
table gives valid MRR at each validation, the epochs and training seconds until valid MRR
first reaches ``--target``, and the final test MRR.

    .venv/bin/python benchmarks/warm_start.py --json /tmp/warm_start.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.workdir import add_work_arguments, work_directory  # noqa: E402
from bigkg.atomic import write_text_atomic  # noqa: E402
from bigkg.config import load_config  # noqa: E402
from bigkg.evaluation import evaluate  # noqa: E402
from bigkg.evaluation.source import open_run  # noqa: E402
from bigkg.export import export_embeddings  # noqa: E402
from bigkg.training import train  # noqa: E402
from partitioner.run import PartitionOptions, run_partition  # noqa: E402

CODEX = REPO / "data" / "codex-s"
DEMO_CONFIG = REPO / "configs" / "codex-s.yaml"


def partition(inputs: list[Path], out: Path, partitions: int, seed: int, with_splits: bool) -> Path:
    splits = {"valid": [str(CODEX / "valid.txt")], "test": [str(CODEX / "test.txt")]} if with_splits else {}
    run_partition(PartitionOptions(inputs=[str(p) for p in inputs], out=out, num_partitions=partitions, seed=seed,
                                   force=True, progress=False, **splits))
    return out


def run(dataset: Path, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    config = load_config(DEMO_CONFIG, [f"dataset={dataset}", f"run_dir={run_dir}", "device=cpu", *overrides])
    started = time.perf_counter()
    summary = train(config, fresh=True)
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = {r["epoch"]: r["train_s"] for r in records if r["type"] == "epoch"}
    valid = [(r["epoch"] + 1, r["mrr"], sum(s for e, s in epochs.items() if e <= r["epoch"]))
             for r in records if r["type"] == "valid"]
    test = evaluate(config, split="test")["mrr"] if (dataset / "edges" / "test").is_dir() else None
    return {"config": config, "summary": summary, "valid": valid, "test_mrr": test, "wall_s": seconds}


def first_reaching(valid: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """(epoch, training seconds) of the first validation at or above ``target``."""
    return next(((epoch, seconds) for epoch, mrr, seconds in valid if mrr >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=0.8, help="share of the training edges in the old graph")
    parser.add_argument("--old-partitions", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--target", type=float, default=0.40, help="valid MRR whose first reaching is reported")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the demo config (all runs)")
    add_work_arguments(parser, "results")
    args = parser.parse_args()

    with work_directory(args.work) as work:
        lines = (CODEX / "train.txt").read_text().splitlines(keepends=True)
        old_edges = work / "old_train.txt"
        old_edges.write_text("".join(lines[: int(len(lines) * args.fraction)]))
        old = partition([old_edges], work / "old", args.old_partitions, seed=1, with_splits=False)
        new = partition([CODEX / "train.txt"], work / "new", args.partitions, seed=2, with_splits=True)

        old_run = run(old, work / "old_run", [*args.set, "eval.valid_every=0"])
        export = work / "old.parquet"
        trained = open_run(old_run["config"])
        export_embeddings(old, trained.manifest, trained.source, export, "parquet", force=True)
        starts = {
            "cold": run(new, work / "cold", args.set),
            "from the export": run(new, work / "export", [*args.set, f"model.init_from={export}"]),
            "from the run directory": run(new, work / "run_dir", [*args.set, f"model.init_from={work / 'old_run'}"]),
        }

    matched = starts["from the run directory"]["summary"]["initialised_from"]
    print(f"\nCoDEx-S: old graph {args.fraction:.0%} of {len(lines)} training edges (P={args.old_partitions}, "
          f"{old_run['wall_s']:.0f} s); new graph all of them (P={args.partitions}); the old run had "
          f"{matched['matched']['entity']} of {matched['entities']['entity']} entities and {matched['relations_matched']} of "
          f"{matched['relations']} relations; overrides: {args.set or 'none'}\n")
    epochs = sorted({e for r in starts.values() for e, _, _ in r["valid"]})
    print("| start | " + " | ".join(f"valid MRR @{e}" for e in epochs) + f" | first ≥ {args.target} (epoch, train s) "
          "| epochs | test MRR | wall s |")
    print("|---|" + "---:|" * (len(epochs) + 4))
    results = {}
    for name, r in starts.items():
        by_epoch = {e: mrr for e, mrr, _ in r["valid"]}
        reach = first_reaching(r["valid"], args.target)
        cells = [f"{by_epoch[e]:.4f}" if e in by_epoch else "" for e in epochs]
        print(f"| {name} | " + " | ".join(cells) + f" | {'—' if reach is None else f'{reach[0]}, {reach[1]:.0f}'} | "
              f"{r['summary']['epochs_completed']} | {r['test_mrr']:.4f} | {r['wall_s']:.0f} |")
        results[name] = {"valid": r["valid"], "test_mrr": r["test_mrr"], "wall_s": r["wall_s"], "reach": reach,
                         "epochs": r["summary"]["epochs_completed"]}
    if args.json:
        write_text_atomic(args.json, json.dumps({"args": vars(args) | {"work": str(args.work), "json": str(args.json)},
                                                 "initialised_from": matched, **results}, indent=1))


if __name__ == "__main__":
    main()
