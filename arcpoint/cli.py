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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with `only` that one when it names a command module.

    Some commands' `register` imports what their options list (detector variants, monitors),
    which costs seconds; a command run by name loads only its own module.
    """
    parser = argparse.ArgumentParser(
        prog="arcpoint",
        description=(
            "Predictive router and closed-loop monitor for a fleet of model-serving backends."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(commands.__path__)
        if not info.name.startswith("_")
    )
    if only in names:
        names = [only]
    for name in names:
        importlib.import_module(f"arcpoint.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from context_api.redact import install_log_redaction

    install_log_redaction()  # secrets never reach a log line, whoever logs them
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from arcpoint.settings import ConfigurationError
    from context_api.runs import Terminated, interruption_exit_code, terminate_raises

    # Ctrl-C raises KeyboardInterrupt and SIGTERM raises Terminated, so every command unwinds
    # (workers stopped, its run marked interrupted) and exits 130 or 143 as a shell expects.
    try:
        with terminate_raises():
            return int(args.func(args) or 0)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        print(
            "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated", file=sys.stderr
        )
        return interruption_exit_code(exc)
    except BrokenPipeError:
        # The reader went away (`arcpoint models | head`): stop quietly, as Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
