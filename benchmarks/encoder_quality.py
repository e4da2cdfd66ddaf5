"""KGNN encoder benchmark, part 2: filtered test MRR through the trainer on a
small graph, shallow vs CompGCN at FP32 and INT2, dense and sparsified.

The dataset is partitioned once (P = 1) into a temporary directory; each
configuration trains with the same seed and settings and is evaluated on the
test split (full filtered ranking, both directions).

    .venv/bin/python benchmarks/encoder_quality.py --data data/codex-s --epochs 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bigkg.config import config_from_dict
from bigkg.evaluation import evaluate
from bigkg.training import train
from partitioner.run import PartitionOptions, run_partition

# name -> the model.encoder section
CONFIGS = {
    "shallow": {"name": "none"},
    "CompGCN FP32": {"name": "compgcn", "quantize_bits": 32},
    "CompGCN INT2": {"name": "compgcn", "quantize_bits": 2},
    "CompGCN FP32 sparsified": {"name": "compgcn", "quantize_bits": 32, "message_thresholds": [1.0, 1.1]},
    "CompGCN INT2 sparsified": {"name": "compgcn", "quantize_bits": 2, "message_thresholds": [1.0, 1.1]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/codex-s"), help="directory with train/valid/test.txt")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--operator", default="complex_diagonal")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "dataset"
        run_partition(PartitionOptions(
            inputs=[str(args.data / "train.txt")], out=dataset, valid=[str(args.data / "valid.txt")],
            test=[str(args.data / "test.txt")], progress=False,
        ))
        print(f"# {args.data.name}: operator {args.operator}, d={args.dim}, {args.epochs} epochs, encoder layers {args.layers}\n")
        print("| configuration | test MRR | hits@1 | hits@10 | train s |")
        print("|---|---:|---:|---:|---:|")
        for name, encoder in CONFIGS.items():
            if args.only and name not in args.only:
                continue
            config = config_from_dict({
                "dataset": str(dataset),
                "run_dir": str(Path(tmp) / name.replace(" ", "_")),
                "seed": 0,
                "model": {"dim": args.dim, "operator": args.operator, "reciprocal": True, "encoder": {**encoder, "layers": args.layers}},
                "training": {"epochs": args.epochs, "batch_size": 1000, "lr": 0.1},
                "eval": {"valid_every": 0},
            })
            start = time.perf_counter()
            train(config)
            seconds = time.perf_counter() - start
            result = evaluate(config, "test")
            print(f"| {name} | {result['mrr']:.4f} | {result['hits@1']:.4f} | {result['hits@10']:.4f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
