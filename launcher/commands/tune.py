"""bigkg tune CONFIG --space SPACE.yaml --out DIR --trials N: hyperparameter search by
validation MRR (Optuna), resumable; the best trial's config lands in DIR/best.yaml."""

from __future__ import annotations

import argparse
from typing import Any

from bigkg.tune import SAMPLERS, base_values, check_search, load_space, tune
from bigkg.summary import write_summary
from launcher.commands._config_args import add_config_arguments, config_from_args

NAME = "tune"
HELP = "search hyperparameters by validation MRR: one training run per trial (Optuna; resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--space", required=True, metavar="SPACE.yaml",
                        help="options to search: 'key: [choices]' or 'key: {low: A, high: B, log: true}' per line")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the search's directory: study journal, one run per trial, best.yaml (reused to resume)")
    parser.add_argument("--trials", type=int, required=True, help="trials in all, counting those of an earlier start")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="tpe (default) or random")
    parser.add_argument("--prune", action=argparse.BooleanOptionalAction, default=True,
                        help="stop a trial whose valid MRR trails the median of earlier trials at that epoch")
    parser.add_argument("--prune-warmup", type=int, default=0, metavar="EPOCHS",
                        help="never prune at the validations of the first EPOCHS epochs (slow starters; default 0)")
    parser.add_argument("--try-base", action="store_true",
                        help="make the config's own values of the searched options a trial (the first, in a new search)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="start no trial after this many seconds (the running one finishes); run again to go on")
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON to PATH")


def format_trials(summary: dict[str, Any]) -> str:
    keys = sorted({k for row in summary["trials"] for k in row["params"]})
    lines = [f"{'trial':>5} {'state':9} {'valid MRR':>9} {'epochs':>6}  " + "  ".join(f"{k:>10}" for k in keys)]
    for row in summary["trials"]:  # a pruned trial's MRR is its last validation's
        mrr = "" if row["valid_mrr"] is None else f"{row['valid_mrr']:.4f}"
        epochs = "" if row["last_epoch"] is None else str(row["last_epoch"] + 1)
        values = "  ".join(f"{_short(row['params'].get(k)):>{max(10, len(k))}}" for k in keys)
        lines.append(f"{row['trial']:5d} {row['state']:9} {mrr:>9} {epochs:>6}  {values}")
    best = summary["best"]
    if best is None:
        lines.append("no trial completed")
    else:
        lines.append(f"best: trial {best['trial']}, valid MRR {best['valid_mrr']:.4f}; config {best['config']} "
                     f"(run {best['run_dir']})")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    base = config_from_args(args)
    space = load_space(args.space)
    check_search(base, space, args.space)
    enqueue = [base_values(base, space)] if args.try_base else []
    summary = tune(base, space, args.out, args.trials, sampler=args.sampler, prune=args.prune,
                   prune_warmup=args.prune_warmup, timeout=args.timeout, enqueue=enqueue)
    print(format_trials(summary))
    if args.json:
        write_summary(args.json, summary)
    return 0
