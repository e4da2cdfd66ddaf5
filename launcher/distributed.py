"""The torchrun worker: ``torchrun [...] -m launcher CONFIG.yaml [--set k=v] [--fresh] [--json PATH]``.

One entry for both modes: started alone (or with a world of one) it is exactly
``bigkg train``; started by torchrun with several workers it joins the process
group, takes one device per local rank and trains with the lock server.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from bigkg.distributed.process_group import (
    WorkerEnv,
    in_torchrun,
    init_process_group,
    worker_device,
)
from bigkg.errors import BigKGError
from bigkg.summary import summary_json, write_summary
from launcher.process_settings import prepare_training_process
from launcher.commands import train as train_command
from launcher.commands._config_args import config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    train_command.add_arguments(parser)
    return parser


def setup_logging(rank: int | None, verbose: bool) -> None:
    """Every line names its rank, so the interleaved logs of a job stay readable."""
    prefix = f"[rank {rank}] " if rank is not None else ""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"{prefix}%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def run_distributed(args: argparse.Namespace) -> int:
    from bigkg.distributed.trainer import DistributedTrainer

    env = WorkerEnv.from_environ()
    setup_logging(env.rank, args.verbose)
    config = config_from_args(args)
    device = worker_device(config.device, env.local_rank)
    training = config.training
    if device.type == "cpu" and training.threads == 0:
        # CPU workers on one node share its cores instead of each taking all of them.
        local_workers = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        training = dataclasses.replace(training, threads=max(1, (os.cpu_count() or 1) // local_workers))
    config = dataclasses.replace(config, device=str(device), training=training)
    prepare_training_process()
    store = init_process_group(env, device, config.distributed.timeout)
    try:
        # --fresh applies to the job's first start only: a restart must resume, not start over.
        fresh = args.fresh and env.restart_count == 0
        summary = DistributedTrainer(config, env, store, fresh=fresh).train()
    finally:
        dist.destroy_process_group()
    if env.rank == 0:
        print(write_summary(args.json, summary) if args.json else summary_json(summary))
    return 0


@record
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not in_torchrun():
            setup_logging(None, args.verbose)
            return train_command.run(args)
        return run_distributed(args)
    except BigKGError as exc:
        print(f"launcher: error: {exc}", file=sys.stderr)
        return 2
