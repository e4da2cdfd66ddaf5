"""The ``bigkg`` command: dispatches to the modules in ``launcher.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from types import ModuleType

import launcher.commands as commands_pkg
from bigkg.errors import BigKGError


def command_names() -> list[str]:
    """Every sub-command; a command's module is named after it."""
    return sorted(info.name for info in pkgutil.iter_modules(commands_pkg.__path__) if not info.name.startswith("_"))


def load_commands(names: list[str]) -> list[ModuleType]:
    return [importlib.import_module(f"{commands_pkg.__name__}.{name}") for name in names]


def requested_command(argv: list[str]) -> str | None:
    """The sub-command named on the command line, if it is a known one."""
    names = command_names()
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in names else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that command's, so that e.g.
    ``bigkg partition`` does not import torch through the training commands."""
    parser = argparse.ArgumentParser(prog="bigkg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in load_commands([only] if only else command_names()):
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(requested_command(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except BigKGError as exc:
        print(f"bigkg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`bigkg eval ... | head`): not an error of ours. Point stdout at
        # /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
