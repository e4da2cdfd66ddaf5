"""bigkg config: print every option with its default and help, or a resolved config."""

from __future__ import annotations

import argparse
import json

from bigkg.config import Config, config_to_yaml, describe_options
from launcher.commands._config_args import add_config_arguments, config_from_args

NAME = "config"
HELP = "list every config option with its default and help, or print a resolved config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, optional=True)
    parser.add_argument("--print-defaults", action="store_true", help="print every option, its default and help")


def run(args: argparse.Namespace) -> int:
    if args.config and not args.print_defaults:
        print(config_to_yaml(config_from_args(args)), end="")
        return 0
    for key, default, help_text, choices in describe_options(Config):
        allowed = f" [{' | '.join(map(str, choices))}]" if choices else ""
        print(f"{key} = {json.dumps(default)}{allowed}\n    {help_text}")
    return 0
