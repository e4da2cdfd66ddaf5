"""bigkg query CONFIG --head NAME --relation REL: the top-k tails (or --tail NAME: the top-k heads);
--heads FILE / --tails FILE answer every name of a file into Parquet (--out); --similar NAME:
the entities whose vectors are nearest to NAME's; --triples FILE: the score of every triple of
a file, into Parquet (--out)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from bigkg.config import Config
from bigkg.evaluation.query import answer_file, query, similar
from bigkg.evaluation.scoring import score_file
from bigkg.evaluation.source import EvaluationError, open_run
from bigkg.summary import write_summary
from launcher.commands._config_args import add_config_arguments, config_from_args

NAME = "query"
HELP = "top-k tails of (head, relation) or heads of (relation, tail), nearest entities, or scores of triples, by names"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    anchor = parser.add_mutually_exclusive_group(required=True)
    anchor.add_argument("--head", help="head entity name: rank tails")
    anchor.add_argument("--tail", help="tail entity name: rank heads")
    anchor.add_argument("--heads", metavar="FILE", help="a file of head names, one per line: rank tails for each (needs --out)")
    anchor.add_argument("--tails", metavar="FILE", help="a file of tail names, one per line: rank heads for each (needs --out)")
    anchor.add_argument("--similar", metavar="NAME", help="entity name: the entities of its type nearest to it "
                        "(cosine of their vectors), without a relation")
    anchor.add_argument("--triples", metavar="FILE", help="a file of triples, a line each: head, relation and tail "
                        "names separated by tabs: score each (needs --out)")
    parser.add_argument("--relation", help="relation name (every query but --similar and --triples)")
    parser.add_argument("--entity-type", help="with --similar: the type of NAME, when several types have that name")
    parser.add_argument("-k", "--top", type=int, default=10, help="number of answers (default 10)")
    parser.add_argument("--exclude-known", action="store_true",
                        help="leave out answers that are already true triples of the dataset")
    parser.add_argument("--out", metavar="PATH",
                        help="with --heads/--tails: Parquet of anchor, rank, answer, score, known (a row per answer); "
                        "with --triples: Parquet of head, relation, tail, score, known (a row per line)")
    parser.add_argument("--force", action="store_true", help="with --out: replace an existing file")
    parser.add_argument("--json", metavar="PATH", help="also write the answers (or, with --out, a summary) as JSON to PATH")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.similar is not None:
        return _print_similar(args, config)
    if args.triples:
        _check_out(args, "--triples writes its scores")
        summary = score_file(open_run(config), args.triples, args.out)
        print(f"wrote the scores of {summary['triples']} triples to {summary['path']}")
        return _summary(args, summary)
    if not args.relation:
        raise EvaluationError("--head, --tail, --heads and --tails need --relation NAME")
    if args.heads or args.tails:
        _check_out(args, "--heads and --tails write their answers")
        side, path = ("rhs", args.heads) if args.heads else ("lhs", args.tails)
        summary = answer_file(open_run(config), args.relation, side, path, args.top, args.out, exclude_known=args.exclude_known)
        print(f"wrote {summary['rows']} answers for {summary['anchors']} anchors to {summary['path']}")
        return _summary(args, summary)
    answers = query(open_run(config), args.relation, args.top, head=args.head, tail=args.tail,
                    exclude_known=args.exclude_known)
    what = f"({args.head}, {args.relation}, ?)" if args.head is not None else f"(?, {args.relation}, {args.tail})"
    print(f"top {len(answers)} for {what}; * = a known true triple")
    for rank, a in enumerate(answers, 1):
        print(f"{rank:4d}  {a.score:10.4f}  {'*' if a.known else ' '} {a.name}")
    if args.json:
        write_summary(args.json, {"query": what, "answers": [asdict(a) for a in answers]})
    return 0


def _check_out(args: argparse.Namespace, what: str) -> None:
    if not args.out:
        raise EvaluationError(f"{what} to a Parquet file: give --out PATH")
    if Path(args.out).exists() and not args.force:
        raise EvaluationError(f"{args.out} already exists (use --force to replace it)")


def _summary(args: argparse.Namespace, summary: dict) -> int:
    if args.json:
        write_summary(args.json, summary)
    return 0


def _print_similar(args: argparse.Namespace, config: Config) -> int:
    kind, neighbours = similar(open_run(config), args.similar, args.top, args.entity_type)
    print(f"top {len(neighbours)} entities of type {kind} nearest to {args.similar!r} (cosine of the vectors)")
    for rank, n in enumerate(neighbours, 1):
        print(f"{rank:4d}  {n.similarity:8.4f}  {n.name}")
    if args.json:
        write_summary(args.json, {"similar": args.similar, "entity_type": kind, "neighbours": [asdict(n) for n in neighbours]})
    return 0
