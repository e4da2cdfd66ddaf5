"""bigkg plot CONFIG: PNG of training loss and validation MRR per epoch."""

from __future__ import annotations

import argparse

from bigkg.plot import plot_run
from launcher.commands._config_args import add_config_arguments, config_from_args

NAME = "plot"
HELP = "plot training loss and validation MRR per epoch from the run's metrics.jsonl (PNG)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", help="PNG path (default: RUN_DIR/training.png)")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    print(f"wrote {plot_run(config.run_dir, args.out)}")
    return 0
