"""bigkg config: print every option with its default and help, a resolved config, or a
PyTorch-BigGraph config file translated into a bigkg one (--from-pbg)."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from bigkg.atomic import write_text_atomic
from bigkg.config import Config, config_to_yaml, describe_options
from bigkg.pbg_config import Translation, translate_pbg_config
from launcher.commands._config_args import add_config_arguments, config_from_args
from launcher.commands._outputs import check_outputs

NAME = "config"
HELP = "list every config option with its default and help, print a resolved config, or translate a PBG config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, optional=True)
    parser.add_argument("--print-defaults", action="store_true", help="print every option, its default and help")
    parser.add_argument("--from-pbg", metavar="PBG_CONFIG", help="translate this PyTorch-BigGraph config file (Python, "
                        "get_torchbiggraph_config()) into bigkg's YAML, with notes on what moved elsewhere")
    parser.add_argument("--out", metavar="PATH", help="with --from-pbg: write the YAML here instead of standard output")
    parser.add_argument("--force", action="store_true", help="with --out: replace an existing file")


def run(args: argparse.Namespace) -> int:
    if args.from_pbg:
        return _from_pbg(args.from_pbg, args.out, args.force)
    if args.config and not args.print_defaults:
        print(config_to_yaml(config_from_args(args)), end="")
        return 0
    for key, default, help_text, choices in describe_options(Config):
        allowed = f" [{' | '.join(map(str, choices))}]" if choices else ""
        print(f"{key} = {json.dumps(default)}{allowed}\n    {help_text}")
    return 0


def _from_pbg(source: str, out: str | None, force: bool) -> int:
    if out:
        check_outputs(out, None, force)
    translation = translate_pbg_config(source)
    text = translated_yaml(source, translation)
    if out:
        write_text_atomic(out, text)
        print(f"wrote the bigkg config translated from {source} to {out}", file=sys.stderr)
    else:
        print(text, end="")
    for item in translation.untranslated:
        print(f"warning: not translated: {item}", file=sys.stderr)
    return 0


def translated_yaml(source: str, translation: Translation) -> str:
    """The config as YAML, headed by comments: where it came from, what moved, what has no translation."""
    lines = [f"# bigkg config translated from the PyTorch-BigGraph config {source} (bigkg config --from-pbg)."]
    if translation.untranslated:
        lines += ["#", "# NOT TRANSLATED (bigkg trains without them):"] + [f"#   {u}" for u in translation.untranslated]
    if translation.notes:
        lines += ["#", "# Notes:"] + [f"#   {n}" for n in translation.notes]
    lines += ["#", "# Give the dataset and run directory with --set dataset=DIR --set run_dir=DIR."]
    return "\n".join(lines) + "\n" + yaml.safe_dump(translation.config, sort_keys=False)
