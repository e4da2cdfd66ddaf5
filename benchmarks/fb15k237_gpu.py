"""FB15k-237 with PBG's shipped FB15k GPU settings: speed, memory and the wall time to a test MRR.

bigkg trains FB15k-237 with benchmarks/configs/fb15k237_gpu.yaml (ComplEx, dot,
softmax, d=400, batch 5000, 50 batch + 1000 uniform negatives, lr 0.1, N3 1e-3,
P=1) once per ``--dims`` value, in this process, and ranks the test split (full
filtered ranking, both directions) every ``--eval-every`` epochs. Per dimension it
reports: edges/s (median over epochs of the trainer's own epoch records), peak
memory of the device while training and while evaluating
(torch.cuda.max_memory_allocated; none on CPU), the test MRR after each evaluation,
and the wall time from the trainer's start to the end of the first epoch whose
test MRR reaches ``--target-mrr``, evaluation time left out (checkpoint writes
kept in). Optionally PBG 1.0.0 trains the same split with the same settings on
the CPU with ``--pbg-workers`` workers (its only release has no GPU mode, nor
regularization), timed for ``--pbg-epochs`` epochs; its model is then converted
(``bigkg convert``: vectors and relation operators) and ranked by the same filtered
evaluation of the test split.

    python3 benchmarks/fb15k237_gpu.py --device cuda --json $OUT/fb15k237_gpu.json
    python3 benchmarks/fb15k237_gpu.py --device cuda --pbg-epochs 3 --pbg-site /tmp/pbg-site --dims 400
    .venv/bin/python benchmarks/fb15k237_gpu.py --device cpu --data data/codex-s --dims 16 --epochs 1 \\
        --set training.threads=1                                     # a quick check on CPU

The data is a ``.tar.xz`` holding ``*/train.txt``, ``valid.txt``, ``test.txt``, or a
directory of those files; by default ``.device/data/FB15k-237.tar.xz`` (filled by
benchmarks/prepare_device.sh), else ``../shared/data/FB15k-237.tar.xz``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bigkg.atomic import write_text_atomic  # noqa: E402
from bigkg.config import Config, load_config  # noqa: E402
from bigkg.evaluation import evaluate  # noqa: E402
from bigkg.export import write_entity_tables, write_relation_rows  # noqa: E402
from bigkg.format import load_manifest  # noqa: E402
from bigkg.pbg_checkpoint import PBGCheckpoint  # noqa: E402
from bigkg.training.trainer import Trainer, train  # noqa: E402
from benchmarks.pbg_env import in_loop_rate, locate_pbg, write_pbg_config, write_pbg_input  # noqa: E402
from benchmarks.vs_pbg import timed  # noqa: E402
from launcher.process_settings import prepare_training_process  # noqa: E402
from partitioner.run import PartitionOptions, run_partition  # noqa: E402

CONFIG = REPO / "benchmarks" / "configs" / "fb15k237_gpu.yaml"
DEFAULT_DATA = (REPO / ".device" / "data" / "FB15k-237.tar.xz", REPO.parent / "shared" / "data" / "FB15k-237.tar.xz")
SPLITS = ("train", "valid", "test")


def unpack(source: Path, work: Path) -> Path:
    """The directory holding train.txt, valid.txt and test.txt of ``source`` (a directory or a .tar.xz of one)."""
    if source.is_dir():
        folder = source
    else:
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if Path(m.name).name in {f"{s}.txt" for s in SPLITS}]
            tar.extractall(work / "raw", members=members, filter="data")
        folder = work / "raw" / Path(members[0].name).parent if members else work / "raw"
    missing = [s for s in SPLITS if not (folder / f"{s}.txt").is_file()]
    if missing:
        raise SystemExit(f"{source}: no {', '.join(s + '.txt' for s in missing)} in it")
    return folder


def partitioned(source: Path, work: Path, partitions: int) -> Path:
    """FB15k-237 from ``source`` (as ``unpack`` takes it) as a dataset of ``partitions``
    partitions with its valid and test splits, under ``work``."""
    raw = unpack(source, work)
    dataset = work / f"fb15k237_p{partitions}"
    run_partition(PartitionOptions(
        inputs=[str(raw / "train.txt")], out=dataset, valid=[str(raw / "valid.txt")], test=[str(raw / "test.txt")],
        num_partitions=partitions, force=True, progress=False,
    ))
    return dataset


def partition(raw: Path, out: Path) -> float:
    """bigkg's dataset of the splits, one partition; the seconds it took."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "launcher.cli", "partition", str(raw / "train.txt"),
                    "--valid", str(raw / "valid.txt"), "--test", str(raw / "test.txt"),
                    "--out", str(out), "-P", "1", "--force", "--no-progress"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


class PeakMemory:
    """Peak bytes allocated on a CUDA device, kept apart for training and evaluation."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.training = 0
        self.evaluation = 0

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def close_training(self) -> None:
        """Training ran since the last reset: fold its peak in and start afresh."""
        if self.cuda:
            self.training = max(self.training, torch.cuda.max_memory_allocated(self.device))
            self.reset()

    def close_evaluation(self) -> None:
        if self.cuda:
            self.evaluation = max(self.evaluation, torch.cuda.max_memory_allocated(self.device))
            self.reset()


def train_and_test(config: Config, target: float) -> dict[str, Any]:
    """Train ``config`` afresh, its validations replaced by test evaluations (which its
    metrics.jsonl records as 'valid' lines); the measurements."""
    gc.collect()  # an earlier run's tensors, so that they do not count in this run's peak
    started = time.perf_counter()  # building the trainer (model, first checkpoint) counts
    trainer = Trainer(config, fresh=True)
    memory = PeakMemory(trainer.device)
    memory.reset()
    timeline: list[dict[str, Any]] = []
    eval_seconds = 0.0

    def rank_test(store, epochs_done: int) -> dict[str, Any]:
        # At an epoch's end, its buckets committed: the clock stops while it ranks.
        nonlocal eval_seconds
        memory.close_training()
        called = time.perf_counter()
        result = evaluate(config, split="test", store=store)
        memory.close_evaluation()
        timeline.append({"epoch": epochs_done, "wall_s": called - started - eval_seconds, "mrr": result["mrr"],
                         "hits@10": result.get("hits@10"), "eval_s": result["seconds"]})
        eval_seconds += time.perf_counter() - called
        return result

    # The trainer validates before it counts the epoch done: progress.epoch is the epoch just trained.
    trainer.validator = (lambda store: rank_test(store, trainer.progress.epoch + 1)) if config.eval.valid_every else None
    summary = trainer.train()
    wall = time.perf_counter() - started - eval_seconds
    memory.close_training()
    if not timeline or timeline[-1]["epoch"] != summary["epochs_completed"]:
        rank_test(trainer.store, summary["epochs_completed"])
    trainer.validator = None  # the lambda refers to the trainer: drop the cycle
    epochs = [json.loads(line) for line in (Path(config.run_dir) / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["type"] == "epoch"]
    reached = next((t for t in timeline if t["mrr"] >= target), None)
    return {
        "dim": config.model.dim,
        "device": summary["device"],
        "epochs": summary["epochs_completed"],
        "edges_per_epoch": epochs[0]["edges"],
        "edges_per_s_median": statistics.median(r["edges_per_s"] for r in epochs),
        "epoch_s_median": statistics.median(r["train_s"] for r in epochs),
        "wall_s_without_eval": wall,
        "peak_train_bytes": memory.training if memory.cuda else None,
        "peak_eval_bytes": memory.evaluation if memory.cuda else None,
        "final_test_mrr": timeline[-1]["mrr"],
        "target_mrr": target,
        "epoch_reaching_target": reached["epoch"] if reached else None,
        "wall_s_to_target": reached["wall_s"] if reached else None,
        "timeline": timeline,
    }


def run_pbg(dataset: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """PBG 1.0.0 on the CPU with the same settings (no regularizer: 1.0.0 has none); its
    model's test MRR by bigkg's evaluation of ``dataset``."""
    pbg = locate_pbg(args.pbg_venv, args.pbg_site)
    root = work / "pbg"
    shutil.rmtree(root, ignore_errors=True)  # PBG resumes from a checkpoint it finds: start afresh
    root.mkdir(parents=True)
    config = root / "config.py"
    write_pbg_config(
        config, entity_path=root / "entities", edge_path=root / "edges", checkpoint_path=root / "model",
        partitions=1, operator="complex_diagonal", global_emb=False, dimension=400, comparator="dot",
        loss_fn="softmax", num_batch_negs=50, num_uniform_negs=1000, batch_size=5000, lr=0.1,
        num_epochs=args.pbg_epochs, workers=args.pbg_workers, eval_fraction=0)
    write_pbg_input(dataset, root / "entities", root / "edges")  # bigkg's partition, in PBG's format
    log = root / "train.log"
    wall, cpu = timed(pbg.command("torchbiggraph_train") + [str(config)], log, env=pbg.env())
    edges = load_manifest(dataset).split_count("train")  # what PBG's input holds: the deduplicated split
    return {"system": "PBG 1.0.0 CPU", "workers": args.pbg_workers, "epochs": args.pbg_epochs, "wall_s": wall,
            "cpu_s": cpu, "epoch_s": wall / args.pbg_epochs, "edges_per_s": edges * args.pbg_epochs / wall,
            "edges_per_s_in_loop": in_loop_rate(log.read_text(errors="replace")), "where": pbg.describe(),
            "test_mrr": pbg_test_mrr(root, dataset, args)}


def pbg_test_mrr(root: Path, dataset: Path, args: argparse.Namespace) -> float:
    """PBG's trained model ranked by bigkg's full filtered evaluation of the test split, the
    same as bigkg's runs: its checkpoint converted (entity vectors and its dynamic relations'
    operators, ``bigkg convert``), then a bigkg run of 0 epochs started from them."""
    checkpoint = PBGCheckpoint(root / "model", rename={"all": "entity"})
    write_entity_tables(checkpoint.tables(), root / "pbg.parquet", "parquet", force=True)
    write_relation_rows(*checkpoint.relation_rows(), root / "pbg_relations.parquet")
    config = load_config(args.config, [
        f"dataset={dataset}", f"run_dir={root / 'converted'}", f"device={args.device}", "model.dim=400",
        "training.epochs=0", "eval.valid_every=0", f"model.init_from={root / 'pbg.parquet'}",
        f"model.init_relations_from={root / 'pbg_relations.parquet'}"])
    train(config, fresh=True)
    return evaluate(config, split="test")["mrr"]


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="FB15k-237 .tar.xz or directory of its splits "
                                                  "(default: .device/data/, else ../shared/data/)")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--dims", type=int, nargs="+", default=[400, 100], help="embedding dimensions to run")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=1, help="rank the test split every N epochs (0: at the end)")
    parser.add_argument("--target-mrr", type=float, default=0.30)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="further config overrides, e.g. training.threads=1 (repeatable)")
    parser.add_argument("--pbg-epochs", type=int, default=0, help="train PBG 1.0.0 on the CPU for N epochs too (0: skip)")
    parser.add_argument("--pbg-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pbg-venv", type=Path, help="PBG's venv (default: benchmarks/pbg_env.py's)")
    parser.add_argument("--pbg-site", type=Path, help="PBG's wheels installed with pip --target (default: $BIGKG_PBG_SITE)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bigkg_fb15k237_gpu"))
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    prepare_training_process()  # as `bigkg train` does

    source = args.data or next((p for p in DEFAULT_DATA if p.exists()), None)
    if source is None or not source.exists():
        raise SystemExit(f"no FB15k-237 data at {args.data or ' or '.join(map(str, DEFAULT_DATA))}; pass --data "
                         "(benchmarks/prepare_device.sh copies it into .device/data/)")
    args.work.mkdir(parents=True, exist_ok=True)
    raw = unpack(source, args.work)
    dataset = args.work / "dataset_p1"
    partition_s = partition(raw, dataset)
    if args.device.startswith("cuda"):
        torch.zeros(1, device=args.device)  # the CUDA context, once, before any clock starts

    runs = []
    for dim in args.dims:
        config = load_config(args.config, [
            f"dataset={dataset}", f"run_dir={args.work / f'run_d{dim}'}", f"device={args.device}", f"model.dim={dim}",
            f"training.epochs={args.epochs}", f"eval.valid_every={args.eval_every}", "eval.early_stopping_patience=0",
            "eval.restore_best=false", "eval.split=test", *args.overrides])
        result = train_and_test(config, args.target_mrr)
        runs.append(result)
        print(f"d={dim}: {result['edges_per_s_median']:,.0f} edges/s, {result['epoch_s_median']:.2f} s/epoch, "
              f"test MRR {result['final_test_mrr']:.4f} after {result['epochs']} epochs; "
              + (f"MRR {args.target_mrr} reached at {result['wall_s_to_target']:.1f} s" if result["wall_s_to_target"] is not None
                 else f"MRR {args.target_mrr} not reached"), flush=True)
    pbg = run_pbg(dataset, args.work, args) if args.pbg_epochs else None

    print(f"\n{source.name} ({runs[0]['edges_per_epoch']:,} train edges), {args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config}"
          f" {' '.join(args.overrides)}; device {runs[0]['device']}"
          f"{' (' + torch.cuda.get_device_name(args.device) + ')' if args.device.startswith('cuda') else ''}; "
          f"torch {torch.__version__}; partitioning {partition_s:.1f} s; test ranked every {args.eval_every} epoch(s), "
          f"full filtered ranking, evaluation time left out of the wall times\n")
    print(f"| d | epochs | edges/s (median epoch) | s/epoch | peak train GiB | peak eval GiB | final test MRR "
          f"| epoch reaching MRR {args.target_mrr} | wall s to MRR {args.target_mrr} | wall s, all epochs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        reached = "-" if r["epoch_reaching_target"] is None else str(r["epoch_reaching_target"])
        to_target = "-" if r["wall_s_to_target"] is None else f"{r['wall_s_to_target']:.1f}"
        print(f"| {r['dim']} | {r['epochs']} | {r['edges_per_s_median']:,.0f} | {r['epoch_s_median']:.3f} "
              f"| {gib(r['peak_train_bytes'])} | {gib(r['peak_eval_bytes'])} | {r['final_test_mrr']:.4f} | {reached} "
              f"| {to_target} | {r['wall_s_without_eval']:.1f} |")
    print("\ntest MRR by epoch: " + "; ".join(
        f"d={r['dim']}: " + ", ".join(f"{t['epoch']}:{t['mrr']:.3f}" for t in r["timeline"]) for r in runs))
    if pbg:
        print(f"\n{pbg['system']} ({pbg['workers']} workers, {pbg['where']}), d=400, {pbg['epochs']} epochs: "
              f"{pbg['epoch_s']:.2f} s/epoch, {pbg['edges_per_s']:,.0f} edges/s "
              f"(in-loop {pbg['edges_per_s_in_loop'] or 0:,.0f}), test MRR {pbg['test_mrr']:.4f} (converted, full "
              f"filtered ranking); bigkg d=400 / PBG: "
              + (f"{next(r for r in runs if r['dim'] == 400)['edges_per_s_median'] / pbg['edges_per_s']:.1f}×"
                 if any(r["dim"] == 400 for r in runs) else "-"))
    if args.json:
        write_text_atomic(args.json, json.dumps({"data": str(source), "config": str(args.config), "overrides": args.overrides,
                                                 "partition_s": partition_s, "runs": runs, "pbg": pbg}, indent=1) + "\n")


if __name__ == "__main__":
    main()
