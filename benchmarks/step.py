"""The training step alone: autograd against the closed-form softmax gradient, one thread.

PBG's setting for plain graphs (`configs/vs_pbg.yaml`): one partition of
``--entities`` rows of d dimensions, batches of 1,000 edges of one relation, no
relation operator, the dot comparator, chunks of 50 with 50 uniform negatives,
the softmax loss, row-wise Adagrad. The two modes run interleaved, round by
round, and the table gives medians: the step's time is what `vs_pbg.py`'s
training loop spends per batch and per worker, without the loop's data loading,
shuffling and checkpoints.

Edges are uniform over the partition (every row cold, the worst case for the
row gathers and updates) unless ``--dataset DIR`` names a partitioned dataset,
whose bucket (0, 0) train edges are used instead (e.g. the graph `vs_pbg.py`
partitions, whose degrees follow a power law).

    .venv/bin/python benchmarks/step.py --dataset /tmp/bigkg_vs_pbg/bigkg_p1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bigkg.checkpoint import PartitionState  # noqa: E402
from bigkg.config import config_from_dict  # noqa: E402
from bigkg.format import EntityType, Manifest, Relation, load_manifest, read_bucket  # noqa: E402
from bigkg.losses import LOSSES  # noqa: E402
from bigkg.model import build_model  # noqa: E402
from bigkg.optim import RowAdagrad, build_shared_optimizer  # noqa: E402
from bigkg.training.step import Batch, BatchStep  # noqa: E402

MODES = {"autograd": False, "closed form": True}


def edges(args: argparse.Namespace, count: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(rows in the partition, heads, tails) of ``count`` edges."""
    if args.dataset:
        bucket = read_bucket(Path(args.dataset), "train", 0, 0)
        take = torch.randperm(len(bucket.lhs), generator=torch.Generator().manual_seed(0))[:count]
        rows = load_manifest(args.dataset).entity_types[0].partition_counts[0]
        return rows, torch.from_numpy(bucket.lhs.astype("int64"))[take], torch.from_numpy(bucket.rhs.astype("int64"))[take]
    g = torch.Generator().manual_seed(0)
    return args.entities, torch.randint(0, args.entities, (count,), generator=g), torch.randint(0, args.entities, (count,), generator=g)


def build_step(dim: int, closed_form: bool, rows: int) -> tuple[BatchStep, PartitionState]:
    config = config_from_dict({
        "model": {"dim": dim, "operator": "none", "comparator": "dot", "reciprocal": False, "init_scale": 0.001},
        "training": {"chunk_size": 50, "num_uniform_negatives": 50, "lr": 0.1, "loss": "softmax",
                     "closed_form_softmax": closed_form},
    })
    manifest = Manifest(1, [EntityType("e", [rows])], [Relation("r", "e", "e")], {})
    model = build_model(config, manifest)
    step = BatchStep(model, LOSSES["softmax"], config.training, RowAdagrad(0.1),
                     build_shared_optimizer(model, config.training), torch.Generator().manual_seed(1))
    part = PartitionState(torch.randn(rows, dim, generator=torch.Generator().manual_seed(2)) * 0.001, torch.zeros(rows))
    return step, part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="partitioned dataset whose bucket (0, 0) edges to use")
    parser.add_argument("--entities", type=int, default=100_000, help="partition rows without --dataset")
    parser.add_argument("--dims", type=int, nargs="+", default=[100])
    parser.add_argument("--batches", type=int, default=200, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batch_size = 1000
    rows, heads, tails = edges(args, batch_size * (args.batches + 20))
    batches = [Batch(heads[i : i + batch_size], tails[i : i + batch_size], torch.zeros(batch_size, dtype=torch.long), None)
               for i in range(0, len(heads) - batch_size + 1, batch_size)]
    warm, timed = batches[:20], batches[20:]
    source = args.dataset or f"uniform over {rows:,} rows"
    print(f"edges: {source}; {len(timed)} batches of {batch_size} per round, {args.rounds} rounds, one thread\n")
    print("| d | autograd ms/step | closed form ms/step | speed-up | closed form edges/s |")
    print("|---:|---:|---:|---:|---:|")
    for dim in args.dims:
        runs = {mode: build_step(dim, closed, rows) for mode, closed in MODES.items()}
        for step, part in runs.values():
            for b in warm:
                step(b, (("e", 0), part), (("e", 0), part))
        seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode, (step, part) in runs.items():
                start = time.perf_counter()
                for b in timed:
                    step(b, (("e", 0), part), (("e", 0), part))
                seconds[mode].append((time.perf_counter() - start) / len(timed))
        auto, closed = (statistics.median(seconds[m]) for m in MODES)
        print(f"| {dim} | {auto * 1e3:.2f} | {closed * 1e3:.2f} | {auto / closed:.2f}× | {batch_size / closed:,.0f} |")


if __name__ == "__main__":
    main()
