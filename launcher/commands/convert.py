"""bigkg convert PBG_CHECKPOINT --out PATH [--relations PATH] [--format ...] [--entities DIR] [--version N]:
a PyTorch-BigGraph checkpoint's entity vectors with their names, and its relation parameters,
written as ``bigkg export`` writes them, so that ``model.init_from`` and
``model.init_relations_from`` can start a bigkg run from them (and ``bigkg eval`` rank it)."""

from __future__ import annotations

import argparse
import contextlib

from bigkg.atomic import atomic_file
from bigkg.export import FORMATS, ExportError, write_entity_tables, write_relation_rows
from bigkg.pbg_checkpoint import PBGCheckpoint
from bigkg.summary import write_summary
from launcher.commands._outputs import FORMAT_HELP, check_outputs

NAME = "convert"
HELP = "write a PyTorch-BigGraph checkpoint's entity names and vectors as bigkg export does (Parquet, HDF5, NumPy, TSV)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="PBG checkpoint directory (its checkpoint_path, or an epoch_<k> snapshot)")
    parser.add_argument("--out", required=True, help="output file (a directory for npy)")
    parser.add_argument("--relations", metavar="PATH",
                        help="also write the relation operators' parameters here (Parquet, as bigkg export --relations; "
                        "PBG models with dynamic_relations)")
    parser.add_argument("--format", choices=FORMATS, default="parquet", help=FORMAT_HELP)
    parser.add_argument("--entities", metavar="DIR",
                        help="PBG's entity_path, where its importer wrote entity_names_<type>_<part>.json "
                        "(default: the one in the checkpoint's config.json)")
    parser.add_argument("--version", type=int, help="checkpoint version (default: checkpoint_version.txt's)")
    parser.add_argument("--rename-type", dest="rename", action="append", default=[], metavar="PBG=BIGKG",
                        help="write PBG's entity type PBG as BIGKG, the type of the bigkg dataset the output is for "
                        "(e.g. all=entity: bigkg partition names its one type 'entity'); repeatable")
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    parser.add_argument("--json", metavar="PATH", help="also write a JSON summary to PATH")


def _pair(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not (sep and old and new):
        raise ExportError(f"--rename-type {text!r}: expected PBG_TYPE=BIGKG_TYPE")
    return old, new


def run(args: argparse.Namespace) -> int:
    check_outputs(args.out, args.relations, args.force)
    rename = dict(_pair(text) for text in args.rename)
    checkpoint = PBGCheckpoint(args.checkpoint, entities=args.entities, version=args.version, rename=rename)
    with contextlib.ExitStack() as stack:
        relations = None
        if args.relations:
            rows, structure = checkpoint.relation_rows()
            # Renamed into place only once the entities are written too: a failure leaves neither.
            write_relation_rows(rows, structure, stack.enter_context(atomic_file(args.relations)))
            relations = {"path": args.relations, "rows": len(rows), "model": structure}
        summary = write_entity_tables(checkpoint.tables(), args.out, args.format, force=True)
    summary["pbg_checkpoint"] = {"path": str(checkpoint.root), "version": checkpoint.version}
    print(f"wrote {summary['rows']} entities ({', '.join(f'{k}: {v}' for k, v in summary['entities'].items())}) "
          f"of PBG checkpoint {checkpoint.root} version {checkpoint.version} to {summary['path']} ({summary['format']})")
    if relations is not None:
        summary["relations"] = relations
        print(f"wrote {relations['rows']} relation parameter rows ({relations['model']['operator']} operators, "
              f"{relations['model']['comparator']} comparator, reciprocal) to {args.relations}")
    if args.json:
        write_summary(args.json, summary)
    return 0
