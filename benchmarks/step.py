"""The training step alone: autograd against the closed-form softmax gradient, one thread.

PBG's setting for plain graphs (`configs/vs_pbg.yaml`): one partition of
``--entities`` rows of d dimensions, batches of 1,000 edges of one relation, no
relation operator, the dot comparator, chunks of 50 with 50 uniform negatives,
the softmax loss, row-wise Adagrad, in a process set up as `bigkg train` sets
up its own (`launcher.process_settings`). The two modes run interleaved, round by
round, and the table gives medians: the step's time is what `vs_pbg.py`'s
training loop spends per batch and per worker, without the loop's data loading,
shuffling and checkpoints.

``--against DIR`` times this tree's closed-form step against that of another
checkout (``git worktree add DIR REV``) instead: each runs in its own process,
importing its own tree's code, and the two take turns round by round, so both
see the same moments of a noisy host; the table gives each one's median and the
median of the per-round ratios.

Edges are uniform over the partition (every row cold, the worst case for the
row gathers and updates) unless ``--dataset DIR`` names a partitioned dataset,
whose bucket (0, 0) train edges are used instead (e.g. the graph `vs_pbg.py`
partitions, whose degrees follow a power law).

    .venv/bin/python benchmarks/step.py --dataset /tmp/bigkg_vs_pbg/bigkg_p1
    .venv/bin/python benchmarks/step.py --dataset /tmp/bigkg_vs_pbg/bigkg_p1 --against /tmp/base --rounds 30
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
from benchmarks.against import checkout, code_tree, interleaved_rounds, serve_rounds  # noqa: E402

sys.path.insert(0, code_tree())  # a worker of --against imports its tree's code

from launcher.process_settings import prepare_training_process  # noqa: E402
from bigkg.checkpoint import PartitionState  # noqa: E402
from bigkg.config import config_from_dict  # noqa: E402
from bigkg.format import EntityType, Manifest, Relation, load_manifest, read_bucket  # noqa: E402
from bigkg.losses import LOSSES  # noqa: E402
from bigkg.model import build_model  # noqa: E402
from bigkg.optim import RowAdagrad, build_shared_optimizer  # noqa: E402
from bigkg.training.step import Batch, BatchStep  # noqa: E402
from bigkg.training.builders import build_side_weights  # noqa: E402

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


def build_step(dim: int, closed_form: bool, rows: int, sides: str = "both", uniform: int = 50) -> tuple[BatchStep, PartitionState]:
    config = config_from_dict({
        "model": {"dim": dim, "operator": "none", "comparator": "dot", "reciprocal": False, "init_scale": 0.001},
        "training": {"chunk_size": 50, "num_uniform_negatives": uniform, "lr": 0.1, "loss": "softmax",
                     "closed_form_softmax": closed_form, "negative_sides": sides},
    })
    manifest = Manifest(1, [EntityType("e", [rows])], [Relation("r", "e", "e")], {})
    model = build_model(config, manifest)
    step = BatchStep(model, LOSSES["softmax"], config.training, RowAdagrad(0.1),
                     build_shared_optimizer(model, config.training), torch.Generator().manual_seed(1),
                     build_side_weights(config, manifest, torch.device("cpu")))
    part = PartitionState(torch.randn(rows, dim, generator=torch.Generator().manual_seed(2)) * 0.001, torch.zeros(rows))
    return step, part


def timed_batches(args: argparse.Namespace) -> tuple[int, list[Batch], list[Batch]]:
    """(partition rows, warm-up batches, timed batches) of 1,000 edges."""
    batch_size = 1000
    rows, heads, tails = edges(args, batch_size * (args.batches + 20))
    batches = [Batch(heads[i : i + batch_size], tails[i : i + batch_size], torch.zeros(batch_size, dtype=torch.long), None)
               for i in range(0, len(heads) - batch_size + 1, batch_size)]
    return rows, batches[:20], batches[20:]


def run_round(step: BatchStep, part: PartitionState, batches: list[Batch]) -> float:
    """Seconds per step over ``batches``."""
    start = time.perf_counter()
    for b in batches:
        step(b, (("e", 0), part), (("e", 0), part))
    return (time.perf_counter() - start) / len(batches)


def interleaved_medians(runs: dict[str, tuple[BatchStep, PartitionState]], warm: list[Batch], timed: list[Batch],
                        rounds: int) -> dict[str, float]:
    """Each step's median seconds per batch over ``rounds`` rounds, the steps taking turns
    round by round (after one warm-up round each)."""
    for step, part in runs.values():
        run_round(step, part, warm)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (step, part) in runs.items():
            seconds[name].append(run_round(step, part, timed))
    return {name: statistics.median(values) for name, values in seconds.items()}


def compare_modes(args: argparse.Namespace) -> None:
    """Autograd against the closed form, interleaved in this process."""
    rows, warm, timed = timed_batches(args)
    source = args.dataset or f"uniform over {rows:,} rows"
    print(f"edges: {source}; {len(timed)} batches of 1000 per round, {args.rounds} rounds, one thread\n")
    print("| d | autograd ms/step | closed form ms/step | speed-up | closed form edges/s |")
    print("|---:|---:|---:|---:|---:|")
    for dim in args.dims:
        medians = interleaved_medians({mode: build_step(dim, closed, rows) for mode, closed in MODES.items()},
                                      warm, timed, args.rounds)
        auto, closed = (medians[m] for m in MODES)
        print(f"| {dim} | {auto * 1e3:.2f} | {closed * 1e3:.2f} | {auto / closed:.2f}× | {1000 / closed:,.0f} |")


def compare_sides(args: argparse.Namespace) -> None:
    """Both sides' losses against the tail side's alone (``training.negative_sides: tails``,
    PBG's ``disable_lhs_negs``), per step kind, interleaved in this process."""
    rows, warm, timed = timed_batches(args)
    print(f"edges: {args.dataset or f'uniform over {rows:,} rows'}; {len(timed)} batches of 1000 per round, "
          f"{args.rounds} rounds, one thread; chunks of 50, {args.uniform} uniform negatives per side trained\n")
    print("| d | step | both sides ms/step | tails only ms/step | speed-up |")
    print("|---:|---|---:|---:|---:|")
    for dim in args.dims:
        for mode, closed in MODES.items():
            medians = interleaved_medians({sides: build_step(dim, closed, rows, sides, args.uniform)
                                           for sides in ("both", "tails")}, warm, timed, args.rounds)
            both, tails = medians["both"], medians["tails"]
            print(f"| {dim} | {mode} | {both * 1e3:.2f} | {tails * 1e3:.2f} | {both / tails:.2f}× |")


def serve(args: argparse.Namespace) -> None:
    """A worker of --against: builds the closed-form step of ``args.dims[0]`` (one side's
    losses with ``--sides``) with the code of its tree, then times rounds on request."""
    rows, warm, timed = timed_batches(args)
    step, part = build_step(args.dims[0], True, rows, "tails" if args.sides else "both", args.uniform)
    run_round(step, part, warm)
    serve_rounds(lambda: run_round(step, part, timed))


def compare_trees(args: argparse.Namespace) -> None:
    """This tree's closed-form step against the checkout ``args.against``, in two worker
    processes that take turns round by round."""
    other = checkout(args.against, "bigkg/training/step.py")
    trees = {"baseline": other, "this tree": REPO}
    sides = "the tail side's losses alone (negative_sides: tails)" if args.sides else "both sides' losses"
    print(f"edges: {args.dataset or f'uniform over {args.entities:,} rows'}; {args.batches} batches of 1000 per "
          f"round, {args.rounds} rounds, one thread per process; {sides}, {args.uniform} uniform negatives per side "
          f"trained; baseline: {other}\n")
    print("| d | baseline ms/step | this tree ms/step | speed-up (medians) | median round ratio | this tree edges/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for dim in args.dims:
        command = [sys.executable, __file__, "--serve", "--dims", str(dim), "--batches", str(args.batches),
                   "--entities", str(args.entities), "--uniform", str(args.uniform)]
        command += (["--dataset", args.dataset] if args.dataset else []) + (["--sides"] if args.sides else [])
        seconds = interleaved_rounds(command, trees, args.rounds)
        base, here = (statistics.median(seconds[name]) for name in trees)
        ratio = statistics.median(b / h for b, h in zip(seconds["baseline"], seconds["this tree"]))
        print(f"| {dim} | {base * 1e3:.2f} | {here * 1e3:.2f} | {base / here:.2f}× | {ratio:.2f}× | {1000 / here:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="partitioned dataset whose bucket (0, 0) edges to use")
    parser.add_argument("--entities", type=int, default=100_000, help="partition rows without --dataset")
    parser.add_argument("--dims", type=int, nargs="+", default=[100])
    parser.add_argument("--batches", type=int, default=200, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--against", metavar="DIR", help="time the closed-form step against this checkout's")
    parser.add_argument("--sides", action="store_true",
                        help="time both sides' losses against the tail side's alone (training.negative_sides: tails); "
                             "with --against, both trees' tail side alone")
    parser.add_argument("--uniform", type=int, default=50, help="uniform negatives per chunk (with --sides)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # a worker of --against
    args = parser.parse_args()
    torch.set_num_threads(1)
    prepare_training_process()
    if args.serve:
        serve(args)
    elif args.against:
        compare_trees(args)
    elif args.sides:
        compare_sides(args)
    else:
        compare_modes(args)


if __name__ == "__main__":
    main()
