"""`cardedge` command: the parser of every subcommand, `config check`, and the entry point.

Each subcommand lives in its own module of edge.cli and adds itself with `register(subparsers)`:
identify, bench, serve and bench-live, bundle ..., doctor, lists ...
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from edge.cli import bench, identify
from edge.config import Settings, format_validation_error, read_config_file
from edge.errors import ConfigError, EdgeError

logger = logging.getLogger(__name__)

# Modules whose `register(subparsers)` adds their subcommands after identify, bench and config
# (serve and bench-live, bundle ..., doctor, lists ...).
SUBSYSTEM_COMMANDS = ("edge.cli.serve", "edge.cli.bundle", "edge.cli.doctor", "edge.cli.lists")


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a config file: every problem on its own line with its dotted path, or 'ok'."""
    try:
        data = read_config_file(args.file)
        Settings(**data)
    except ConfigError as e:
        print(e.message)
        return 1
    except ValidationError as e:
        for problem in format_validation_error(e):
            print(problem)
        return 1
    print("ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full `cardedge` argument parser."""
    parser = argparse.ArgumentParser(prog="cardedge", description="Trading-card recognition.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)

    identify.register(sub)
    bench.register(sub)
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file", type=Path, help="TOML or YAML config file")
    check.set_defaults(func=cmd_config_check)

    for module in SUBSYSTEM_COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cardedge` script."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(int(args.verbose), 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        code: int = args.func(args)
    except EdgeError as e:
        print(
            json.dumps({"error": e.to_dict()})
            if getattr(args, "json", False)
            else f"error [{e.code}]: {e.message}" + (f"\n  hint: {e.hint}" if e.hint else ""),
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
