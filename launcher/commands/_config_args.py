"""The config arguments every run-level command shares: ``CONFIG [--set KEY=VALUE ...]``."""

from __future__ import annotations

import argparse

from bigkg.config import Config, load_config


def add_config_arguments(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    parser.add_argument("config", nargs="?" if optional else None, help="YAML config of the run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config option, e.g. --set training.epochs=5 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
