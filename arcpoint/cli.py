"""The `arcpoint` command line.

Each subcommand lives in its own module under `arcpoint.commands` and exposes
`register(subparsers)`; this module only discovers and dispatches them, so adding a command
never touches another command's code.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from arcpoint import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arcpoint",
        description=(
            "Predictive router and closed-loop monitor for a fleet of model-serving backends."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"arcpoint.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from context_api.redact import install_log_redaction

    install_log_redaction()  # secrets never reach a log line, whoever logs them
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from context_api.runs import Terminated, interruption_exit_code, terminate_raises

    # Ctrl-C raises KeyboardInterrupt and SIGTERM raises Terminated, so every command unwinds
    # (workers stopped, its run marked interrupted) and exits 130 or 143 as a shell expects.
    try:
        with terminate_raises():
            return int(args.func(args) or 0)
    except (KeyboardInterrupt, Terminated) as exc:
        print(
            "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated", file=sys.stderr
        )
        return interruption_exit_code(exc)


if __name__ == "__main__":
    raise SystemExit(main())
