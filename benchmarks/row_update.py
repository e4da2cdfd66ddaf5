"""Row-wise Adagrad's update alone, by path: the compiled CPU kernel, the sorted torch path
(the GPU's for large partitions) and the whole-table torch path (the GPU's when a step names
more ids than the partition has rows), on one step's ids and gradients of a given shape.

The default shape is a step of PBG's FB15k-237 GPU settings: 14,541 rows of d=400, batch
5,000 in chunks of 50 with 1,000 uniform negatives per side, so 2 × 5,000 positive and
2 × 100,000 negative ids in four pieces. Each path updates its own copy of the table,
interleaved round by round; the table gives medians.

    .venv/bin/python benchmarks/row_update.py
    python3 benchmarks/row_update.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigkg.optim import RowScratch, _step_dense, _step_numba, _step_torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=14_541)
    parser.add_argument("--dim", type=int, default=400)
    parser.add_argument("--positives", type=int, default=5_000, help="ids per positive piece (two pieces)")
    parser.add_argument("--negatives", type=int, default=100_000, help="ids per negative piece (two pieces)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    sizes = [args.positives, args.negatives, args.positives, args.negatives]
    ids = [torch.randint(0, args.rows, (k,), generator=g).to(device) for k in sizes]
    grads = [torch.randn(k, args.dim, generator=g).to(device) for k in sizes]
    table, state = torch.randn(args.rows, args.dim, generator=g).to(device), torch.rand(args.rows, generator=g).to(device)
    scratch = RowScratch(args.rows, args.dim)
    paths = {"sorted (torch)": lambda t, s: _step_torch(t, s, ids, grads, 0.1, 1e-10),
             "whole table (torch)": lambda t, s: _step_dense(t, s, ids, grads, 0.1, 1e-10)}
    if device.type == "cpu":
        paths["compiled (numba, CPU)"] = lambda t, s: _step_numba(t, s, ids, grads, 0.1, 1e-10, scratch)
    copies = {name: (table.clone(), state.clone()) for name in paths}
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, update in paths.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            update(*copies[name])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name].append(time.perf_counter() - started)
    print(f"{args.rows:,} rows, d={args.dim}, {sum(sizes):,} ids in {len(sizes)} pieces, device {device}, "
          f"torch threads {torch.get_num_threads()}; median of {args.rounds} interleaved rounds\n")
    print("| path | ms per update |\n|---|---:|")
    for name, times in seconds.items():
        print(f"| {name} | {1e3 * statistics.median(times[1:]):.1f} |")


if __name__ == "__main__":
    main()
