"""The losses side by side on one model: RotatE on CoDEx-S, the same config and seeds.

Every loss of ``training.loss`` trains benchmarks/configs/codex_s_rotate.yaml (RotatE, l2,
d=256, batched negatives: chunks of 50 plus 256 uniform, γ = margin = 6) on CoDEx-S
partitioned once (P=1); the table gives the filtered test MRR and Hits@10 per loss (median
over ``--seeds``) and the training seconds. The self-adversarial loss is RotatE's own; the
logistic loss is the same loss with equal weights on the negatives.

    .venv/bin/python benchmarks/losses.py --seeds 0 1 --json /tmp/losses.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.workdir import add_work_arguments, work_directory  # noqa: E402
from bigkg.atomic import write_text_atomic  # noqa: E402
from bigkg.config import LOSSES, load_config  # noqa: E402
from bigkg.evaluation import evaluate  # noqa: E402
from bigkg.training import train  # noqa: E402
from partitioner.run import PartitionOptions, run_partition  # noqa: E402

CODEX = REPO / "data" / "codex-s"
CONFIG = REPO / "benchmarks" / "configs" / "codex_s_rotate.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the config (all runs)")
    add_work_arguments(parser, "results")
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {}
    with work_directory(args.work) as work:
        dataset = work / "codex-s"
        run_partition(PartitionOptions(inputs=[str(CODEX / "train.txt")], valid=[str(CODEX / "valid.txt")],
                                       test=[str(CODEX / "test.txt")], out=dataset, num_partitions=1,
                                       force=True, progress=False))
        for loss in args.losses:
            for seed in args.seeds:
                run_dir = work / f"{loss}-{seed}"
                config = load_config(CONFIG, [f"dataset={dataset}", f"run_dir={run_dir}", f"seed={seed}",
                                              f"training.loss={loss}", *args.set])
                started = time.perf_counter()
                train(config, fresh=True)
                seconds = time.perf_counter() - started
                metrics = evaluate(config, "test")
                results.setdefault(loss, []).append(
                    {"seed": seed, "mrr": metrics["mrr"], "hits@10": metrics["hits@10"], "train_s": seconds})

    print(f"\nRotatE on CoDEx-S ({CONFIG.relative_to(REPO)}), seeds {args.seeds}, overrides: {args.set or 'none'}\n")
    print("| loss | test MRR (median) | per seed | Hits@10 (median) | train s (median) |")
    print("|---|---:|---|---:|---:|")
    for loss, runs in results.items():
        per_seed = ", ".join(f"{r['mrr']:.4f}" for r in runs)
        print(f"| {loss} | {statistics.median(r['mrr'] for r in runs):.4f} | {per_seed} | "
              f"{statistics.median(r['hits@10'] for r in runs):.4f} | {statistics.median(r['train_s'] for r in runs):.0f} |")
    if args.json:
        write_text_atomic(args.json, json.dumps({"args": vars(args) | {"work": str(args.work), "json": str(args.json)},
                                                 "results": results}, indent=1))


if __name__ == "__main__":
    main()
