"""Run bookkeeping: every command that writes does so under a run with an id and a status.

A run starts `running` and ends `finished`, `failed` (an error), `interrupted` (Ctrl-C or
SIGTERM) or, later, `replaced` (a rerun of the same command deleted its rows). Every row a run
writes carries its `run_id`, so `Store.delete_run_rows` can take a run back out.

`RunLog` opens the store only for its own bookkeeping and closes it again, so it can wrap work
that forks processes (a SQLite connection must never cross a fork) or opens its own stores.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from context_api.store import Run, Store


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt is for SIGINT.

    A BaseException so that `except Exception` blocks do not swallow it.
    """


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"terminated by signal {signum}")


@contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (then restored)."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption_exit_code(exc: BaseException) -> int:
    """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


class RunLog:
    """A run of `command` in the store at `db`, closed with the status the block ended in.

        with RunLog(db, "demo", params, replace_previous=True) as run:
            ... write rows with run.run_id ...
            run.summary = {...}

    `replace_previous`: the rows of earlier runs of the same command are deleted first (their
    runs kept, marked `replaced`), so running the command again replaces its data instead of
    adding a second copy. An interrupted or failed run keeps the rows it wrote, marked by its
    status; the next replacing run removes them.
    """

    def __init__(
        self,
        db: str | Path,
        command: str,
        params: Mapping[str, Any] | None = None,
        *,
        replace_previous: bool = False,
    ) -> None:
        self.db = str(db)
        self.command = command
        self.params = dict(params or {})
        self.replace_previous = replace_previous
        self.run: Run | None = None
        self.replaced: list[Run] = []
        self.summary: dict[str, Any] | None = None

    @property
    def run_id(self) -> str:
        if self.run is None:
            raise RuntimeError("the run has not started")
        return self.run.run_id

    def __enter__(self) -> RunLog:
        with Store(self.db) as store:
            self.run = store.start_run(self.command, params=self.params)
            if self.replace_previous:
                self.replaced = store.replace_runs(self.command, keep=self.run.run_id)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if self.run is None:
            return
        if exc is None:
            status = "finished"
        elif isinstance(exc, KeyboardInterrupt | Terminated):
            status = "interrupted"
        else:
            status = "failed"
        summary = self.summary
        if exc is not None:
            summary = {**(summary or {}), "error": f"{type(exc).__name__}: {exc}"[:500]}
        try:
            with Store(self.db) as store:
                store.finish_run(self.run.run_id, summary=summary, status=status)
        except Exception as err:  # the original exception matters more than the bookkeeping
            print(f"warning: could not mark run {self.run.run_id} {status}: {err}", file=sys.stderr)
            if exc is None:
                raise


def mark_running_interrupted(db: str | Path) -> int:
    """Mark every run still `running` in a file this process owns alone as `interrupted`.

    For private stores (an eval's work files) whose writers were stopped from outside.
    """
    path = Path(db)
    if not path.is_file():
        return 0
    with Store(path) as store, store.transaction() as conn:
        return conn.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'",
            (time.time(),),
        ).rowcount
