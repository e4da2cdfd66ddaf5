"""Where a training step's time goes on a device: edges/s of configuration variants, and
one profiled epoch per variant (tensor operations, kernel launches and host-device
synchronisations per step, device time against wall time per step, the operations
taking most host time).

Each variant trains FB15k-237 (or ``--data``) afresh with ``--config`` plus its own
overrides, ``--epochs`` epochs, in this process; edges/s is the median of the
trainer's epoch records after the first (which pays for warm-up). Then one more
epoch of it runs under torch.profiler. A step costs at least its device time; when
its wall time is far above that, the host's launching of operations bounds it.

    python3 benchmarks/gpu_profile.py --device cuda --variant closed=training.closed_form_softmax=true \\
        --variant autograd=training.closed_form_softmax=false --variant workers2=training.workers=2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bigkg.config import load_config  # noqa: E402
from bigkg.training.trainer import Trainer  # noqa: E402
from benchmarks.fb15k237_gpu import CONFIG, DEFAULT_DATA, partition, unpack  # noqa: E402
from launcher.process_settings import prepare_training_process  # noqa: E402

# Runtime calls that make the host wait for the device.
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def train_variant(config_path: Path, overrides: list[str], epochs: int, run_dir: Path) -> tuple[list[dict], int]:
    """(the epoch records, the steps taken) of a fresh run of ``epochs`` epochs."""
    config = load_config(config_path, [*overrides, f"run_dir={run_dir}", f"training.epochs={epochs}"])
    with Trainer(config, fresh=True) as trainer:
        trainer.train()
        steps = trainer.step.steps
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "epoch"], steps


def profiled_epoch(config_path: Path, overrides: list[str], run_dir: Path, device: str) -> dict[str, Any]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        _, steps = train_variant(config_path, overrides, 1, run_dir)
    events = prof.key_averages()
    counts: Counter[str] = Counter()
    for e in events:
        counts[e.key] += e.count
    device_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    aten = sum(c for k, c in counts.items() if k.startswith("aten::"))
    top = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:12]
    return {
        "aten_per_step": aten / steps, "launches_per_step": counts["cudaLaunchKernel"] / steps,
        "graph_launches_per_step": counts["cudaGraphLaunch"] / steps,
        "syncs_per_step": {k: counts[k] / steps for k in SYNCS if counts[k]},
        "device_ms_per_step": device_us / 1e3 / steps,
        "top": [(e.key, e.count / steps, e.self_cpu_time_total / 1e3 / steps) for e in top],
        "top_device": [(e.key, e.count / steps, e.self_device_time_total / 1e3 / steps) for e in sorted(
            (e for e in events if e.self_device_time_total > 0), key=lambda e: -e.self_device_time_total)[:12]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="FB15k-237 .tar.xz or directory of its splits")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                        help="a named set of config overrides (repeatable); none: the config as it is")
    parser.add_argument("--no-profile", action="store_true", help="edges/s only")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bigkg_gpu_profile"))
    args = parser.parse_args()
    prepare_training_process()
    source = args.data or next((p for p in DEFAULT_DATA if p.exists()), None)
    if source is None:
        raise SystemExit("no FB15k-237 data: pass --data")
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = args.work / "dataset_p1"
    partition(unpack(source, args.work), dataset)
    base = [f"dataset={dataset}", f"device={args.device}", "eval.valid_every=0"]
    variants = [v.split("=", 1) for v in args.variant] or [["as configured", ""]]

    print(f"{source.name}, {args.config.name}, device {args.device}"
          f"{' (' + torch.cuda.get_device_name(args.device) + ')' if args.device.startswith('cuda') else ''}, "
          f"torch {torch.__version__}; {args.epochs} epochs per variant, edges/s median of epochs 2..\n")
    print("| variant | overrides | edges/s | ms/step | aten ops/step | kernel launches/step | graph launches/step "
          "| device ms/step | host syncs/step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    details = []
    for name, spec in variants:
        overrides = [o for o in spec.split(",") if o]
        run_dir = args.work / f"run_{name}"
        epochs, steps = train_variant(args.config, base + overrides, args.epochs, run_dir)
        timed = epochs[1:] or epochs
        rate = statistics.median(r["edges_per_s"] for r in timed)
        ms_per_step = 1e3 * statistics.median(r["train_s"] for r in timed) / (steps / len(epochs))
        cells = [f"{rate:,.0f}", f"{ms_per_step:.2f}"]
        if args.no_profile:
            cells += ["-"] * 5
        else:
            p = profiled_epoch(args.config, base + overrides, args.work / f"profile_{name}", args.device)
            details.append((name, p))
            syncs = ", ".join(f"{k} {v:.1f}" for k, v in p["syncs_per_step"].items()) or "none"
            cells += [f"{p['aten_per_step']:.0f}", f"{p['launches_per_step']:.0f}", f"{p['graph_launches_per_step']:.2f}",
                      f"{p['device_ms_per_step']:.2f}", syncs]
        print(f"| {name} | {' '.join(overrides) or '-'} | " + " | ".join(cells) + " |", flush=True)
    for name, p in details:
        print(f"\n{name}: the operations taking most host time per step (profiled, so slower than unprofiled)\n")
        print("| operation | calls/step | host ms/step |\n|---|---:|---:|")
        for key, calls, ms in p["top"]:
            print(f"| {key} | {calls:.1f} | {ms:.3f} |")
        if p["top_device"]:
            print(f"\n{name}: the operations and kernels taking most device time per step\n")
            print("| operation or kernel | calls/step | device ms/step |\n|---|---:|---:|")
            for key, calls, ms in p["top_device"]:
                print(f"| {key[:90]} | {calls:.1f} | {ms:.3f} |")


if __name__ == "__main__":
    main()
