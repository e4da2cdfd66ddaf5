"""bigkg eval CONFIG: filtered MRR, MR, Hits@k and their chance-adjusted forms (and Recall/NDCG@K) from a run's latest checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from bigkg.evaluation import evaluate
from bigkg.summary import write_summary
from launcher.commands._config_args import add_config_arguments, config_from_args

NAME = "eval"
HELP = "evaluate the latest checkpoint: filtered MRR, MR, Hits@k, adjusted AMR/AMRI/AMRRI (and Recall/NDCG@K)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--split", choices=("train", "valid", "test"), help="split to rank (default: eval.split)")
    parser.add_argument("--json", metavar="PATH", help="also write the metrics as JSON to PATH")
    parser.add_argument("--by-relation", action="store_true",
                        help="also report MRR and Hits@k per relation and per category (1-1, 1-N, N-1, N-N from the training edges)")


def _hits_keys(result: dict[str, Any]) -> list[str]:
    """The result's ``hits@k`` keys, by increasing k."""
    return sorted((key for key in result if key.startswith("hits@")), key=lambda key: int(key.split("@")[1]))


def format_table(result: dict[str, Any]) -> str:
    hits = _hits_keys(result)
    head = f"{'':8}{'MRR':>8}{'MR':>10}" + "".join(f"{h:>9}" for h in hits) + f"{'AMRI':>9}{'count':>9}"
    lines = [
        f"split {result['split']}, checkpoint {result['checkpoint']} (epoch {result['epoch']}), "
        f"{result['mode']} ranking, {result['triples']} triples "
        f"({result['unseen_entity_triples']} with an entity unseen in training, kept)",
        head,
    ]
    for label, m in (("both", result), ("tails", result["tails"]), ("heads", result["heads"])):
        lines.append(f"{label:8}{m['mrr']:8.4f}{m['mr']:10.2f}" + "".join(f"{m[h]:9.4f}" for h in hits)
                     + f"{m['amri']:9.4f}{m['count']:9d}")
    if "relations" in result:
        lines += _breakdown_lines(result)
    rec = sorted((k for k in result if k.startswith(("recall@", "ndcg@"))), key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
    if rec:
        lines.append(f"{result['rec_relation']} ({result['rec_users']} users): " + ", ".join(f"{k} {result[k]:.4f}" for k in rec))
    lines.append(f"rank: {result['rank']}")
    return "\n".join(lines)


def _breakdown_lines(result: dict[str, Any]) -> list[str]:
    """MRR of both directions, tails and heads, and Hits@ the largest k, per category, then
    per relation (largest first)."""
    hits = (_hits_keys(result) or [None])[-1]
    head = f"{'MRR both':>10}{'tails':>8}{'heads':>8}" + (f"{hits:>9}" if hits else "") + f"{'count':>8}"

    def mrrs(m: dict[str, Any]) -> str:
        return (f"{m['mrr']:10.4f}{m['tails']['mrr']:8.4f}{m['heads']['mrr']:8.4f}"
                + (f"{m[hits]:9.4f}" if hits else "") + f"{m['count']:8d}")

    lines = [f"{'category':10}{'relations':>10}" + head]
    lines += [f"{category:10}{m['relations']:10d}" + mrrs(m) for category, m in result["categories"].items()]
    width = max(len("relation"), *(len(name) for name in result["relations"]))
    lines.append(f"{'relation':{width}}{'category':>9}" + head)
    by_count = sorted(result["relations"].items(), key=lambda item: -item[1]["count"])
    lines += [f"{name:{width}}{m['category'] or '-':>9}" + mrrs(m) for name, m in by_count]
    return lines


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = evaluate(config, args.split or config.eval.split, by_relation=args.by_relation)
    print(format_table(result))
    if args.json:
        write_summary(args.json, result)
    return 0
