"""bigkg export CONFIG --format parquet|hdf5|npy|npz|tsv --out PATH [--relations PATH]: entity vectors with their
names, and the relation operators' parameters."""

from __future__ import annotations

import argparse
import contextlib

from bigkg.atomic import atomic_file
from bigkg.evaluation.source import open_run
from bigkg.export import FORMATS, export_embeddings, export_relations
from bigkg.summary import write_summary
from launcher.commands._config_args import add_config_arguments, config_from_args
from launcher.commands._outputs import FORMAT_HELP, check_outputs

NAME = "export"
HELP = "write every entity's name and vector from the latest checkpoint (Parquet, HDF5, NumPy, TSV)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="parquet", help=FORMAT_HELP)
    parser.add_argument("--out", required=True, help="output file (a directory for npy)")
    parser.add_argument("--relations", metavar="PATH",
                        help="also write the relation operators' parameters here (Parquet: a row per relation, "
                        "direction and parameter)")
    parser.add_argument("--force", action="store_true", help="replace existing outputs")
    parser.add_argument("--json", metavar="PATH", help="also write a JSON summary to PATH")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    check_outputs(args.out, args.relations, args.force)
    trained = open_run(config)
    with contextlib.ExitStack() as stack:
        relations = None
        if args.relations:
            # Written first under a temporary name, renamed only once the embeddings are in place too:
            # a failure of either leaves neither (nor replaces an old one).
            tmp = stack.enter_context(atomic_file(args.relations))
            relations = export_relations(trained.model, trained.manifest, config.model, tmp, force=True)
            relations["path"] = args.relations
        summary = export_embeddings(config.dataset, trained.manifest, trained.source, args.out, args.format, force=args.force)
    summary["checkpoint"] = trained.version.name
    print(f"wrote {summary['rows']} entities ({', '.join(f'{k}: {v}' for k, v in summary['entities'].items())}) "
          f"from checkpoint {summary['checkpoint']} to {summary['path']} ({summary['format']})")
    if relations is not None:
        summary["relations"] = relations
        print(f"wrote the parameters of {relations['relations']} relations to {args.relations} (parquet)")
    if args.json:
        write_summary(args.json, summary)
    return 0
