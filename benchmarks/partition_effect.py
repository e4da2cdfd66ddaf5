"""Where partitioned training loses MRR: competitors from the answer's own partition vs the others.

For a sample of test triples, each tail (and head) is ranked raw against every entity,
and the rank is also counted with only the competitors in the answer's partition, or
only those in other partitions. A P=1 run is split into P groups at random (seeded) for
the same breakdown. If a partitioned run matches P=1 within partitions but trails it
across them, its queries were never contrasted with entities of other partitions
(see `training.foreign_negatives` in docs/training.md).

    .venv/bin/python benchmarks/partition_effect.py RUN_P1/config.yaml RUN_P4/config.yaml --groups 4
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bigkg.config import load_config
from bigkg.evaluation.filters import read_split
from bigkg.evaluation.source import open_run


def breakdown(config_path: str, groups: int, sample: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """side -> (raw MRR against all, same-partition competitors only, other partitions only)."""
    config = load_config(config_path, ["device=cpu"])  # the tensors below are the CPU's, whatever the run trained on
    run = open_run(config)
    entity_type = run.manifest.entity_types[0]
    offsets = entity_type.offsets
    total = int(offsets[-1])
    if run.manifest.num_partitions > 1:
        part = np.searchsorted(offsets, np.arange(total), side="right") - 1
    else:
        part = np.random.default_rng(seed + 1).integers(0, groups, total)
    table = torch.cat([run.version.load_partition(entity_type.name, p)[0] for p in range(len(offsets) - 1)])
    triples = read_split(config.dataset, run.manifest, "test")
    chosen = np.random.default_rng(seed).choice(len(triples), min(len(triples), sample), replace=False)
    heads, rels, tails = (torch.from_numpy(x[chosen]) for x in triples)
    part_of = torch.from_numpy(part)
    out = {}
    with torch.no_grad():
        for side, anchor, answer in (("tails", heads, tails), ("heads", tails, heads)):
            scores = run.model.score_candidates("rhs" if side == "tails" else "lhs", table[anchor], rels, table)
            higher = scores > scores.gather(1, answer.unsqueeze(1))
            same = part_of.unsqueeze(0) == part_of[answer].unsqueeze(1)
            mrr = [(1.0 / (1 + mask.sum(1).float())).mean().item() for mask in (higher, higher & same, higher & ~same)]
            out[side] = tuple(mrr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", help="run configs (run_dir with a checkpoint, dataset)")
    parser.add_argument("--groups", type=int, default=4, help="random groups for a P=1 run")
    parser.add_argument("--sample", type=int, default=5000, help="test triples sampled")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| run | side | raw MRR, all competitors | own partition only | other partitions only |")
    print("|---|---|---:|---:|---:|")
    for path in args.configs:
        for side, (whole, same, other) in breakdown(path, args.groups, args.sample, args.seed).items():
            print(f"| {path} | {side} | {whole:.4f} | {same:.4f} | {other:.4f} |")


if __name__ == "__main__":
    main()
