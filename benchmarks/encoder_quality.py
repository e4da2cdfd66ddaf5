"""KGNN encoder benchmark, part 2: quality through the real trainer, shallow vs
graph encoders at FP32 and INT2, dense and sparsified.

Link prediction (default): a small graph with train/valid/test.txt is
partitioned once (P = 1); shallow ComplEx and 2-layer CompGCN train with the
same seed and settings; filtered test MRR (full ranking, both directions).

    .venv/bin/python benchmarks/encoder_quality.py --data data/codex-s --epochs 10 --seeds 0 1 2

``--config`` takes the decoder and training settings from a config file instead
of the short default (ComplEx, d=64, 10 epochs), e.g. FB15k-237's:

    .venv/bin/python benchmarks/encoder_quality.py --data FB15k-237 --config configs/fb15k237.yaml \
        --set training.workers=1 --seeds 0 1

Recommendation (``--lastfm``): the Last.FM graph (KGCN's kgcn-music) is split
per user, seeded, 80/20 by ``prepare_lastfm.py`` and partitioned with P = 1
and one entity type, so users and artists share a partition and the
user-artist edges join the KG edges in the graph the encoder propagates over
(the encoder uses the diagonal bucket's edges whose relation joins the
partition's type to itself). Shallow ComplEx (``configs/lastfm.yaml``) and the
LightGCN encoder (``configs/lastfm_encoder.yaml``, and its INT2 and sparsified
variants) train per seed; Recall@20 and NDCG@20 of ``listens_to`` on the test
split (all artists ranked except each user's train and valid artists).

    .venv/bin/python benchmarks/encoder_quality.py --lastfm ../shared/data/kgcn-music.tar.xz \\
        --seeds 0 1 2 --set training.workers=1 --set training.threads=1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bigkg.config import Config, config_from_dict, load_config, read_config_file
from bigkg.evaluation import evaluate
from bigkg.evaluation.source import open_run
from bigkg.training import train
from partitioner.run import PartitionOptions, run_partition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_lastfm import main as prepare_lastfm

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Link prediction: name -> the model.encoder section. The two thresholds are those of
# benchmarks/encoder.py: [1.0, 1.1] prunes ~92% of the deepest layer's messages on
# FB15k-237, [2.5, 1.0] also ~93% of the first layer's (15.7x fewer propagation MACs).
CONFIGS = {
    "shallow": {"name": "none"},
    "CompGCN FP32": {"name": "compgcn", "quantize_bits": 32},
    "CompGCN INT2": {"name": "compgcn", "quantize_bits": 2},
    "CompGCN FP32 sparsified": {"name": "compgcn", "quantize_bits": 32, "message_thresholds": [1.0, 1.1]},
    "CompGCN INT2 sparsified": {"name": "compgcn", "quantize_bits": 2, "message_thresholds": [1.0, 1.1]},
    "CompGCN FP32 sparsified hard": {"name": "compgcn", "quantize_bits": 32, "message_thresholds": [2.5, 1.0]},
    "CompGCN INT2 sparsified hard": {"name": "compgcn", "quantize_bits": 2, "message_thresholds": [2.5, 1.0]},
}

# Recommendation: name -> (config file, overrides). The tuned shallow model and
# the encoder's learning rate and epochs were chosen on valid Recall@20.
SHALLOW_TUNED = ["training.lr=0.02", "training.epochs=40", "model.regularization_weight=0.1"]
SPARSIFIED = "model.encoder.message_thresholds=[0.0,0.5,2.5]"  # >= 90% of the deepest layer's messages pruned
KGAT = ["model.encoder.name=kgat", "training.epochs=10"]
LASTFM_CONFIGS = {
    "shallow ComplEx (lastfm.yaml)": ("lastfm.yaml", []),
    "shallow ComplEx tuned": ("lastfm.yaml", SHALLOW_TUNED),
    "LightGCN FP32": ("lastfm_encoder.yaml", []),
    "LightGCN INT2": ("lastfm_encoder.yaml", ["model.encoder.quantize_bits=2"]),
    "LightGCN FP32 sparsified": ("lastfm_encoder.yaml", [SPARSIFIED]),
    "KGAT FP32": ("lastfm_encoder.yaml", KGAT),
    "KGAT INT2": ("lastfm_encoder.yaml", [*KGAT, "model.encoder.quantize_bits=2"]),
}


# Without --config: a short run (the CoDEx-S rows of docs/benchmarks.md).
DEFAULT_BASE = {
    "model": {"dim": 64, "operator": "complex_diagonal", "reciprocal": True},
    "training": {"epochs": 10, "batch_size": 1000, "lr": 0.1},
}


def link_prediction(args: argparse.Namespace, tmp: Path) -> None:
    dataset = tmp / "dataset"
    run_partition(PartitionOptions(
        inputs=[str(args.data / "train.txt")], out=dataset, valid=[str(args.data / "valid.txt")],
        test=[str(args.data / "test.txt")], progress=False,
    ))
    base = read_config_file(args.config) if args.config else DEFAULT_BASE
    given = {"model.dim": args.dim, "model.operator": args.operator, "training.epochs": args.epochs}
    common = [
        f"dataset={dataset}", "eval.valid_every=0", *(f"{k}={v}" for k, v in given.items() if v is not None),
        "training.foreign_negatives=0", "training.foreign_pool=0",  # P = 1: no other partition to draw from
    ]

    def run_config(name: str, seed: int, encoder: dict) -> Config:
        run_dir = tmp / f"{name.replace(' ', '_')}_{seed}"
        sections = {**encoder, "layers": args.layers}
        return config_from_dict(base, [
            *common, f"run_dir={run_dir}", f"seed={seed}",
            *(f"model.encoder.{key}={json.dumps(value)}" for key, value in sections.items()), *args.set,
        ])

    shown = config_from_dict(base, [*common, *args.set])
    print(f"# {args.data.name}{f' ({args.config})' if args.config else ''}: operator {shown.model.operator}, "
          f"d={shown.model.dim}, {shown.training.epochs} epochs, encoder layers {args.layers}, training seeds "
          f"{args.seeds}: median over seeds (each seed's value)\n")
    print("| configuration | test MRR | hits@1 | hits@10 | per-seed MRR | kept edges per layer | train s (median) |")
    print("|---|---:|---:|---:|---|---|---:|")
    for name, encoder in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        results, seconds = [], []
        for seed in args.seeds:
            config = run_config(name, seed, encoder)
            start = time.perf_counter()
            train(config)
            seconds.append(time.perf_counter() - start)
            results.append(evaluate(config, "test"))
        kept = kept_edges(config)  # of the last seed's run: each seed keeps about as many
        median = {key: statistics.median(r[key] for r in results) for key in ("mrr", "hits@1", "hits@10")}
        per_seed = " ".join(f"{r['mrr']:.4f}" for r in results)
        print(f"| {name} | {median['mrr']:.4f} | {median['hits@1']:.4f} | {median['hits@10']:.4f} | {per_seed} | "
              f"{kept} | {statistics.median(seconds):.0f} |", flush=True)


def kept_edges(config: Config) -> str:
    """Edges each encoder layer aggregated over when encoding the trained
    partition, as a share of the graph's (both directions); '' for shallow."""
    run = open_run(config)
    encoder = run.model.encoder
    if config.model.encoder.name == "none":
        return ""
    run.source.load("entity", 0)
    total = len(encoder.graph("entity", 0))
    return ", ".join(f"{kept / total:.0%}" for kept in encoder.encoder.kept_edges)


def recommendation(args: argparse.Namespace, tmp: Path) -> None:
    tsv, dataset = tmp / "tsv", tmp / "dataset"
    prepare_lastfm([str(args.lastfm), "--out", str(tsv), "--seed", str(args.split_seed)])
    run_partition(PartitionOptions(
        inputs=[str(tsv / "train.tsv")], out=dataset, valid=[str(tsv / "valid.tsv")], test=[str(tsv / "test.tsv")], progress=False,
    ))
    print(f"\n# Last.FM, split seed {args.split_seed}, training seeds {args.seeds}; Recall@20 / NDCG@20 on test: "
          "median over seeds (each seed's value)\n")
    print("| configuration | Recall@20 | NDCG@20 | per-seed Recall@20 | kept edges per layer | train s (median) |")
    print("|---|---:|---:|---|---|---:|")
    for name, (file, overrides) in LASTFM_CONFIGS.items():
        if args.only and name not in args.only:
            continue
        recalls, ndcgs, seconds = [], [], []
        for seed in args.seeds:
            run_dir = tmp / f"{name.replace(' ', '_')}_{seed}"
            config = load_config(CONFIG_DIR / file, [
                f"dataset={dataset}", f"run_dir={run_dir}", f"seed={seed}", "eval.valid_every=0", *overrides, *args.set,
            ])
            start = time.perf_counter()
            train(config, fresh=True)
            seconds.append(time.perf_counter() - start)
            result = evaluate(config, "test")
            recalls.append(result["recall@20"])
            ndcgs.append(result["ndcg@20"])
        kept = kept_edges(config)  # of the last seed's run: each seed keeps about as many
        per_seed = " ".join(f"{r:.4f}" for r in recalls)
        print(f"| {name} | {statistics.median(recalls):.4f} | {statistics.median(ndcgs):.4f} | {per_seed} | {kept} | "
              f"{statistics.median(seconds):.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/codex-s"), help="directory with train/valid/test.txt")
    parser.add_argument("--config", type=Path, help="config file whose model and training settings every run takes "
                        "(default: ComplEx, d=64, 10 epochs)")
    parser.add_argument("--epochs", type=int, help="training.epochs (default: the config's)")
    parser.add_argument("--dim", type=int, help="model.dim (default: the config's)")
    parser.add_argument("--operator", help="model.operator (default: the config's)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lastfm", type=Path, help="kgcn-music directory or .tar.xz: run the recommendation benchmark instead")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the per-user split (--lastfm)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.lastfm:
            recommendation(args, Path(tmp))
        else:
            link_prediction(args, Path(tmp))


if __name__ == "__main__":
    main()
