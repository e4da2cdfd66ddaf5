"""L-hop neighbourhood extraction (``Graph.neighbourhood``), this tree against another checkout.

A graph encoder over a partition larger than ``full_graph_max_nodes`` extracts, every
batch, the in-neighbourhood of the batch's entities: the hops' edges, the nodes they
reach, local ids. This times that extraction alone, one thread, on the training graph of
``--data`` (default FB15k-237: 272,115 triples, reciprocal edges) and on a generated
graph of ``--nodes`` nodes and ``--edges`` uniform edges, for ``--seeds`` seed nodes,
two hops, without and with per-hop fan-outs of 10. Each tree runs in its own worker
process (``benchmarks/against.py``) and the two take turns round by round; the table
gives each one's median and the median of the per-round ratios.

    git worktree add /tmp/base REV
    .venv/bin/python benchmarks/neighbourhood.py --against /tmp/base
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

sys.path.insert(0, code_tree())  # a worker imports its tree's code
from benchmarks.encoder import load_triples  # noqa: E402
from bigkg.nn import Graph  # noqa: E402

FANOUTS = {"all": None, "10, 10": [10, 10]}
DEFAULT_DATA = REPO.parent / "shared" / "data" / "FB15k-237.tar.xz"


def build_graph(args: argparse.Namespace) -> Graph:
    if args.graph == "data":
        triples, num_nodes, num_relations = load_triples(args.data)
        return Graph(triples[:, 0], triples[:, 1], triples[:, 2], num_nodes, num_relations)
    g = torch.Generator().manual_seed(0)
    heads, tails = (torch.randint(0, args.nodes, (args.edges,), generator=g) for _ in range(2))
    return Graph(heads, torch.randint(0, 100, (args.edges,), generator=g), tails, args.nodes, 100)


def serve(args: argparse.Namespace) -> None:
    """A worker: times ``args.repeats`` extractions per round, each of fresh seeds."""
    graph = build_graph(args)
    fanouts = FANOUTS[args.fanouts]
    g = torch.Generator().manual_seed(1)
    seeds = [torch.randint(0, graph.num_nodes, (args.seeds,), generator=g) for _ in range(args.repeats)]

    def run_round() -> float:
        start = time.perf_counter()
        for k, s in enumerate(seeds):
            graph.neighbourhood(s, 2, fanouts, torch.Generator().manual_seed(k))
        return (time.perf_counter() - start) / len(seeds)

    run_round()
    serve_rounds(run_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", metavar="DIR", required=True, help="the baseline checkout")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a dataset's train.txt: .tar.xz or directory")
    parser.add_argument("--nodes", type=int, default=1_000_000, help="nodes of the generated graph")
    parser.add_argument("--edges", type=int, default=4_000_000, help="edges of the generated graph")
    parser.add_argument("--seeds", type=int, default=3000, help="seed nodes per extraction")
    parser.add_argument("--repeats", type=int, default=5, help="extractions per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # a worker
    parser.add_argument("--graph", default="data", help=argparse.SUPPRESS)
    parser.add_argument("--fanouts", default="all", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.serve:
        serve(args)
        return
    trees = {"baseline": checkout(args.against, "bigkg/nn/graph.py"), "this tree": REPO}
    graphs = {"data": args.data.name.removesuffix(".tar.xz"), "generated": f"generated, {args.nodes:,} nodes, {args.edges:,} edges"}
    print(f"{args.seeds:,} seeds, 2 hops, {args.repeats} extractions per round, {args.rounds} rounds, one thread "
          f"per process; baseline: {trees['baseline']}\n")
    print("| graph | fan-outs | baseline ms | this tree ms | speed-up (medians) | median round ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for graph, label in graphs.items():
        for fanouts in FANOUTS:
            command = [sys.executable, __file__, "--serve", "--graph", graph, "--fanouts", fanouts, "--against",
                       args.against, "--data", str(args.data), "--nodes", str(args.nodes), "--edges", str(args.edges),
                       "--seeds", str(args.seeds), "--repeats", str(args.repeats)]
            seconds = interleaved_rounds(command, trees, args.rounds)
            base, here = (statistics.median(seconds[name]) for name in trees)
            ratio = statistics.median(b / h for b, h in zip(seconds["baseline"], seconds["this tree"]))
            print(f"| {label} | {fanouts} | {base * 1e3:.2f} | {here * 1e3:.2f} | {base / here:.2f}× | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
