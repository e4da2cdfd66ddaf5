"""bigkg train CONFIG: train embeddings bucket by bucket, resuming from the run's latest checkpoint."""

from __future__ import annotations

import argparse
import sys

from bigkg.training import train
from bigkg.summary import summary_json, write_summary
from launcher.process_settings import prepare_training_process
from launcher.commands._config_args import add_config_arguments, config_from_args

NAME = "train"
HELP = "train embeddings on a partitioned dataset (resumes from the run's latest checkpoint)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--fresh", action="store_true", help="discard the run's checkpoints, snapshots and metrics and start afresh")
    parser.add_argument("--json", metavar="PATH", help="write the run's summary as JSON to PATH")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    prepare_training_process()
    summary = train(config, fresh=args.fresh)
    print(write_summary(args.json, summary) if args.json else summary_json(summary), file=sys.stdout)
    return 0
