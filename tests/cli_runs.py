"""Helpers for tests that run `arcpoint` commands as a user would: small, fast argument sets
built from each command's own parser, so they keep working when a command's options change."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from arcpoint.cli import build_parser

REPO = Path(__file__).resolve().parents[1]

# Small values for the demo's options, used only where the demo still has the option. Each one
# shrinks the run; none changes what the command is asked to do.
_FAST_DEMO = {
    "--history-hours": "1",
    "--trees": "5",
    "--scenarios": "latency_spike",
    "--seed": "0",
    "--seeds": "1",
}


def subcommand_options(*names: str) -> set[str]:
    """The option strings of `arcpoint NAME [SUB]`."""
    parser: argparse.ArgumentParser = build_parser()
    for name in names:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {s for a in parser._actions for s in a.option_strings}


def fast_demo_args(db: Path, *, policies: Sequence[str] = ("predictive",)) -> list[str]:
    """`arcpoint demo` arguments for a run of a few seconds on `db`."""
    options = subcommand_options("demo")
    args = ["demo", "--db", str(db)]
    for flag, value in _FAST_DEMO.items():
        if flag in options:
            args += [flag, value]
    if "--policies" in options:
        args += ["--policies", ",".join(policies)]
    if "--jobs" in options:
        args += ["--jobs", "2"]
    return args


def arcpoint(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """Start `python -m arcpoint ARGS` in its own process group (as a shell job would be)."""
    return subprocess.Popen(
        [sys.executable, "-m", "arcpoint", *args],
        cwd=kw.pop("cwd", REPO),
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )


def run_statuses(db: Path, command: str | None = None) -> list[str]:
    """Statuses of the runs in `db`, oldest first (read-only: the test must not take locks)."""
    if not db.is_file():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        where = " WHERE command = ?" if command else ""
        rows = conn.execute(
            f"SELECT status FROM runs{where} ORDER BY started_at, run_id",
            (command,) if command else (),
        ).fetchall()
    except sqlite3.OperationalError:  # the schema is still being created
        return []
    finally:
        conn.close()
    return [r[0] for r in rows]


def wait_for(predicate, *, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll `predicate` until it is truthy; fail (killing `proc`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited {proc.returncode} before {what}:\n{out}\n{err}")
        time.sleep(0.1)
    if proc is not None:
        kill_group(proc)
    raise AssertionError(f"timed out waiting for {what}")


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still alive (zombies of reaped parents excluded)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A process that has exited but whose parent has not reaped it still counts for killpg.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            return True
    return False
