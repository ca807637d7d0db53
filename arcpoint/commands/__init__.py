"""Subcommands of `arcpoint`: one module each, each with `register(subparsers)`.

A command module sets `func` on its parser (`parser.set_defaults(func=run)`); `run(args)`
returns the process exit code. Keep heavy imports inside `run` so `arcpoint --help` stays fast.
"""
