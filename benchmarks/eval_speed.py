"""Speed of filtered evaluation: bigkg's chunked ranking vs a dense reference, on a real dataset.

For a partitioned dataset (e.g. FB15k-237 at P=1 and P=4) this writes a
checkpoint of random vectors (the speed of ranking does not depend on
training), then times, on the test split, both directions:

* ``bigkg full``: ``evaluate`` in full mode (CSR filter index, partition-major
  chunked ranking);
* ``bigkg sampled``: ``evaluate`` in sampled mode (``--num-sampled`` candidates);
* ``dense reference``: the common way to do it — a Python dict of sets as the
  filter, every query batch scored against all entities at once, filtered
  entries set to -inf in a Python loop. It needs every entity's vector in one
  tensor, so it only runs at P=1; its MRR must equal ``bigkg full``'s.

    python benchmarks/eval_speed.py out/fb15k237-p1 --dim 400 --repeats 3 [--json rows.json]

Prints a table of median seconds, queries/s and the ratio to the reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bigkg.atomic import write_text_atomic  # noqa: E402
from bigkg.checkpoint import CheckpointStore, PartitionState  # noqa: E402
from bigkg.config import config_from_dict  # noqa: E402
from bigkg.evaluation import evaluate  # noqa: E402
from bigkg.evaluation.evaluate import _INDEX_CACHE  # noqa: E402
from bigkg.evaluation.filters import read_split  # noqa: E402
from bigkg.format import SPLITS, load_manifest  # noqa: E402
from bigkg.model import build_model  # noqa: E402


METHODS = ("full", "sampled", "reference")


def write_random_checkpoint(config, manifest) -> None:
    model = build_model(config, manifest)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    changed = {
        (et.name, part): PartitionState(torch.randn(count, config.model.dim, generator=g), torch.zeros(count))
        for et in manifest.entity_types
        for part, count in enumerate(et.partition_counts)
    }
    CheckpointStore(config.run_dir).write({"epoch": 0, "model": config.model.structure()}, {"model": model.state_dict()},
                                          changed, list(changed), base=None, keep_versions=1)


def dense_reference_mrr(config, manifest, batch: int = 1024) -> float:
    """The reference: all-entity score matrices and a dict-of-sets filter."""
    root = config.dataset
    model = build_model(config, manifest)
    version = CheckpointStore(config.run_dir).latest()
    version.load_shared(model)
    et = manifest.entity_types[0]
    emb = torch.cat([version.load_partition(et.name, p)[0] for p in range(len(et.partition_counts))])
    known: dict[tuple[str, int, int], set[int]] = {}
    for split in SPLITS:
        t = read_split(root, manifest, split)
        for h, r, tl in zip(t.heads.tolist(), t.rels.tolist(), t.tails.tolist()):
            known.setdefault(("rhs", h, r), set()).add(tl)
            known.setdefault(("lhs", tl, r), set()).add(h)
    test = read_split(root, manifest, "test")
    rr = []
    with torch.no_grad():
        for side, anchors, answers in (("rhs", test.heads, test.tails), ("lhs", test.tails, test.heads)):
            for s in range(0, len(test), batch):
                a, r, ans = anchors[s : s + batch], test.rels[s : s + batch], answers[s : s + batch]
                scores = model.score_candidates(side, emb[torch.from_numpy(a)], torch.from_numpy(r), emb)
                true = scores[torch.arange(len(a)), torch.from_numpy(ans)].clone()
                for q in range(len(a)):
                    scores[q, list(known[(side, int(a[q]), int(r[q]))])] = float("-inf")
                greater = (scores > true[:, None]).sum(1).double()
                equal = (scores == true[:, None]).sum(1).double()
                rr.append(1.0 / (1 + greater + equal / 2))
    return float(torch.cat(rr).mean())


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        _INDEX_CACHE.clear()  # every timing includes reading the dataset and building the filter, as the reference does
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", type=Path, help="partitioned dataset directories")
    parser.add_argument("--dim", type=int, default=400)
    parser.add_argument("--operator", default="complex_diagonal")
    parser.add_argument("--num-sampled", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="what to time (default: all); 'full' alone for a before/after of full ranking")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    rows = []
    for root in args.datasets:
        manifest = load_manifest(root)
        queries = 2 * manifest.split_count("test")
        with tempfile.TemporaryDirectory() as run_dir:
            base = {"dataset": str(root), "run_dir": run_dir, "model": {"dim": args.dim, "operator": args.operator}}
            config = config_from_dict(base)
            write_random_checkpoint(config, manifest)
            sampled = config_from_dict({**base, "eval": {"mode": "sampled", "num_sampled": args.num_sampled}})
            if "full" in args.methods:
                t_full, full = timed(lambda: evaluate(config, "test"), args.repeats)
                rows.append((root.name, manifest.num_partitions, "bigkg full", t_full, queries, full["mrr"]))
            if "sampled" in args.methods:
                t_sampled, _ = timed(lambda: evaluate(sampled, "test"), args.repeats)
                rows.append((root.name, manifest.num_partitions, f"bigkg sampled {args.num_sampled}", t_sampled, queries,
                             None))
            if "reference" in args.methods and manifest.num_partitions == 1 and len(manifest.entity_types) == 1:
                t_ref, ref_mrr = timed(lambda: dense_reference_mrr(config, manifest), args.repeats)
                rows.append((root.name, 1, "dense reference", t_ref, queries, ref_mrr))

    ref = {r[0]: r[3] for r in rows if r[2] == "dense reference"}
    print(f"dim {args.dim}, operator {args.operator}, {torch.get_num_threads()} torch threads, median of {args.repeats}")
    print(f"{'dataset':<16}{'P':>3}  {'method':<22}{'seconds':>9}{'queries/s':>11}{'vs dense':>10}{'MRR':>9}")
    for name, parts, method, secs, queries, mrr in rows:
        ratio = f"{ref[name] / secs:9.2f}x" if name in ref else f"{'-':>10}"
        mrr_text = f"{mrr:9.5f}" if mrr is not None else f"{'-':>9}"
        print(f"{name:<16}{parts:>3}  {method:<22}{secs:9.2f}{queries / secs:11.0f}{ratio}{mrr_text}")
    if args.json:
        fields = ("dataset", "partitions", "method", "seconds", "queries", "mrr")
        write_text_atomic(args.json, json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                 "rows": [dict(zip(fields, row)) for row in rows]}, indent=1))


if __name__ == "__main__":
    main()
