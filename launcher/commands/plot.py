"""bigkg plot CONFIG: PNG of training loss and validation MRR per epoch."""

from __future__ import annotations

import argparse

from bigkg.config import load_config
from bigkg.plot import plot_run

NAME = "plot"
HELP = "plot training loss and validation MRR per epoch from the run's metrics.jsonl (PNG)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config of the run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config option (repeatable)")
    parser.add_argument("--out", help="PNG path (default: RUN_DIR/training.png)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    print(f"wrote {plot_run(config.run_dir, args.out)}")
    return 0
