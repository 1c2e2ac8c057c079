"""``fmolab``: one subcommand per stage (:mod:`fmolab.cli.parser`), each calling one function of its
stage (:mod:`fmolab.cli.commands`). Every config value is settable as ``section.key=value``."""
from __future__ import annotations

import sys

from fmolab.cli.parser import build_parser
from fmolab.config import ConfigError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted; completed work is kept (rerun the same command to resume)", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"fmolab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # ShardError, TrackingError, training failures
        print(f"fmolab {args.command}: error: {exc}", file=sys.stderr)
        return 1
