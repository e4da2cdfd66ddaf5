"""bigkg train CONFIG: train embeddings bucket by bucket, resuming from the run's latest checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

from bigkg.atomic import write_text_atomic
from bigkg.config import load_config
from bigkg.training import train

NAME = "train"
HELP = "train embeddings on a partitioned dataset (resumes from the run's latest checkpoint)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config option, e.g. --set training.epochs=5 (repeatable)")
    parser.add_argument("--fresh", action="store_true", help="discard the run's checkpoints and metrics and start afresh")
    parser.add_argument("--json", metavar="PATH", help="write the run's summary as JSON to PATH")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    summary = train(config, fresh=args.fresh)
    text = json.dumps(summary, indent=2)
    if args.json:
        write_text_atomic(args.json, text + "\n")
    print(text, file=sys.stdout)
    return 0
