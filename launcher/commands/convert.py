"""bigkg convert PBG_CHECKPOINT --out PATH [--format ...] [--entities DIR] [--version N]: a
PyTorch-BigGraph checkpoint's entity vectors with their names, written as ``bigkg export``
writes them, so that ``model.init_from`` can start a bigkg run from them."""

from __future__ import annotations

import argparse
import json

from bigkg.atomic import write_text_atomic
from bigkg.export import FORMATS, write_entity_tables
from bigkg.pbg_checkpoint import PBGCheckpoint

NAME = "convert"
HELP = "write a PyTorch-BigGraph checkpoint's entity names and vectors as bigkg export does (Parquet, HDF5, NumPy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="PBG checkpoint directory (its checkpoint_path, or an epoch_<k> snapshot)")
    parser.add_argument("--out", required=True, help="output file (a directory for npy)")
    parser.add_argument("--format", choices=FORMATS, default="parquet",
                        help="parquet (one row per entity), hdf5 (a group per type), npy (a directory), npz")
    parser.add_argument("--entities", metavar="DIR",
                        help="PBG's entity_path, where its importer wrote entity_names_<type>_<part>.json "
                        "(default: the one in the checkpoint's config.json)")
    parser.add_argument("--version", type=int, help="checkpoint version (default: checkpoint_version.txt's)")
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    parser.add_argument("--json", metavar="PATH", help="also write a JSON summary to PATH")


def run(args: argparse.Namespace) -> int:
    checkpoint = PBGCheckpoint(args.checkpoint, entities=args.entities, version=args.version)
    summary = write_entity_tables(checkpoint.tables(), args.out, args.format, force=args.force)
    summary["pbg_checkpoint"] = {"path": str(checkpoint.root), "version": checkpoint.version}
    print(f"wrote {summary['rows']} entities ({', '.join(f'{k}: {v}' for k, v in summary['entities'].items())}) "
          f"of PBG checkpoint {checkpoint.root} version {checkpoint.version} to {summary['path']} ({summary['format']})")
    if args.json:
        write_text_atomic(args.json, json.dumps(summary, indent=2) + "\n")
    return 0
