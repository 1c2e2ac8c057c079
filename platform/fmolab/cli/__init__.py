"""``fmolab``: one subcommand per stage (:mod:`fmolab.cli.parser`), each calling one function of its
stage (:mod:`fmolab.cli.commands`). Every config value is settable as ``section.key=value``."""
from __future__ import annotations

import signal
import sys
import threading

from fmolab.cli.parser import build_parser
from fmolab.config import ConfigError

__all__ = ["build_parser", "main"]


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from fmolab.runtime import quiet_third_party

    quiet_third_party()
    # SIGTERM (a scheduler, `kill`, a stopped job) ends a command as Ctrl-C does: runs are closed as
    # KILLED with their reason, checkpoints stay, and the same command resumes.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _run(args)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted; completed work is kept (rerun the same command to resume)", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"fmolab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # ShardError, TrackingError, training failures
        from fmolab.tracking.ending import error_text

        # a Train worker's error itself (its logs above have the traceback), not Ray's snippet of it
        wrapped = getattr(exc, "worker_failures", None) or getattr(exc, "controller_failure", None)
        text = error_text(exc) if wrapped else str(exc)
        print(f"fmolab {args.command}: error: {text}", file=sys.stderr)
        return 1
