"""Hogwild workers as processes against threads, bucket by bucket in one run.

Two trainers of the same config and dataset (`benchmarks/configs/vs_pbg.yaml` by
default) are built in this process: one whose CPU workers are forked processes,
one whose workers are threads (``Trainer.worker_processes = False``). They train
the same buckets in the same order, taking turns bucket by bucket, so both see
the same moments of a noisy host; the table gives each one's total and the
median of the per-bucket ratios.

    .venv/bin/python benchmarks/hogwild.py --dataset /tmp/bigkg_vs_pbg/bigkg_p4 --epochs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launcher.process_settings import prepare_training_process  # noqa: E402
from bigkg.config import config_from_dict  # noqa: E402
from bigkg.training.hogwild import ProcessWorkers, ThreadWorkers  # noqa: E402
from bigkg.training.trainer import Trainer  # noqa: E402


class ThreadTrainer(Trainer):
    worker_processes = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a partitioned dataset (e.g. the one vs_pbg.py makes)")
    parser.add_argument("--config", default=str(REPO / "benchmarks" / "configs" / "vs_pbg.yaml"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    prepare_training_process()
    base = yaml.safe_load(Path(args.config).read_text())
    base["training"].update(epochs=args.epochs, workers=args.workers)
    with tempfile.TemporaryDirectory() as work:
        # The process trainer first: its workers are forked before any thread starts.
        trainers = {
            kind: cls(config_from_dict({**base, "dataset": args.dataset, "run_dir": f"{work}/{kind}"}), fresh=True)
            for kind, cls in (("processes", Trainer), ("threads", ThreadTrainer))
        }
        assert isinstance(trainers["processes"].workers, ProcessWorkers), "this model trains with threads only"
        assert isinstance(trainers["threads"].workers, ThreadWorkers)
        seconds = {kind: [] for kind in trainers}
        bar = _Silent()
        # Trainer.train's loop, one bucket of each trainer at a time.
        for epoch in range(args.epochs):
            for trainer in trainers.values():
                trainer.scheduler.start_pass(epoch, [])  # one edge chunk: a pass per epoch
            while all((buckets := {k: t.scheduler.acquire() for k, t in trainers.items()}).values()):
                for kind, trainer in trainers.items():
                    start = time.perf_counter()
                    trainer._train_bucket(epoch, buckets[kind], bar)
                    seconds[kind].append(time.perf_counter() - start)
            for trainer in trainers.values():
                trainer._end_epoch(epoch)
        losses = {kind: [r for r in t.metrics.read() if r["type"] == "epoch"][-1]["loss_per_edge"]
                  for kind, t in trainers.items()}
        edges = sum(r["edges"] for r in trainers["threads"].metrics.read() if r["type"] == "bucket")
        for trainer in trainers.values():
            trainer.close()
    ratios = [t / p for t, p in zip(seconds["threads"], seconds["processes"])]
    print(f"{args.dataset}, {args.epochs} epochs, {args.workers} workers, {len(ratios)} buckets each\n")
    print("| workers | s in buckets | edges/s | last epoch's loss/edge | threads ÷ processes (totals) | median bucket ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in trainers:
        total = sum(seconds[kind])
        extra = (f" {sum(seconds['threads']) / sum(seconds['processes']):.3f} | {statistics.median(ratios):.3f} |"
                 if kind == "processes" else " | |")
        print(f"| {kind} | {total:.2f} | {edges / total:,.0f} | {losses[kind]:.4f} |{extra}")


class _Silent:
    """The progress bar's part a bucket calls, doing nothing."""

    def update(self, n: int) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass


if __name__ == "__main__":
    main()
