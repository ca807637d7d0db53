"""A forked worker pool that Ctrl-C and SIGTERM stop within seconds.

`multiprocessing.Pool` is the wrong tool for a command a person may interrupt: Ctrl-C reaches
every process of the terminal's group, a worker that dies of it is silently replaced, the task
it held never reports, and the parent waits in `join()` forever. Here:

- workers ignore SIGINT and take SIGTERM's default action (die at once), so only the parent
  decides what an interrupt means;
- the parent waits on the result queue in short slices, so a signal is acted on promptly, and a
  worker that died without answering (killed, out of memory) fails the run naming its task
  instead of hanging it;
- on any exit that is not a clean finish (an exception, KeyboardInterrupt, `Terminated`) every
  worker is sent SIGTERM, then SIGKILL after a grace period, and reaped before the exception
  propagates.

Workers are forked, so the task function and whatever it reads from module globals (a trained
forest) are inherited, never pickled; tasks and results travel through pipes and must pickle.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

POLL_S = 0.2
"""How often the parent checks on its workers while waiting for a result."""
GRACE_S = 2.0
"""How long a worker has to exit after SIGTERM before it is killed."""


class WorkerError(RuntimeError):
    """A task raised in its worker, or its worker died before answering."""


def _worker(
    fn: Callable[[Any], Any],
    tasks: Any,
    results: Any,
    owners: Any,
    initializer: Callable[[], None] | None,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler must not run here
    if initializer is not None:
        initializer()
    while True:
        item = tasks.get()
        if item is None:
            return
        index, task = item
        owners[index] = os.getpid()  # shared memory: visible at once, even if we die next
        try:
            out = fn(task)
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            results.put(("error", index, f"{detail}\n{traceback.format_exc()}"))
        else:
            results.put(("done", index, out))


def run_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    jobs: int,
    *,
    initializer: Callable[[], None] | None = None,
) -> Iterator[tuple[int, R]]:
    """Yield (index, result) for every task as it finishes (completion order).

    With `jobs <= 1` (or one task) the tasks run in this process, in order, with the same
    interface. A task that raises makes the iterator raise `WorkerError` (after the other
    workers are stopped); wrap `fn` to report failures as values when one broken task must not
    stop the rest. Closing the iterator early also stops the workers.
    """
    if jobs <= 1 or len(tasks) <= 1:
        if initializer is not None:
            initializer()
        for i, task in enumerate(tasks):
            yield i, fn(task)
        return
    ctx = mp.get_context("fork")
    task_q = ctx.Queue()
    result_q = ctx.Queue()
    for item in enumerate(tasks):
        task_q.put(item)
    jobs = min(jobs, len(tasks))
    for _ in range(jobs):
        task_q.put(None)
    owners = ctx.Array("q", len(tasks), lock=False)  # task index -> pid of its worker
    procs = [
        ctx.Process(target=_worker, args=(fn, task_q, result_q, owners, initializer), daemon=True)
        for _ in range(jobs)
    ]
    answered = [False] * len(tasks)
    done = 0
    clean = False
    try:
        for p in procs:
            p.start()
        while done < len(tasks):
            try:
                kind, index, payload = result_q.get(timeout=POLL_S)
            except queue.Empty:
                _check_alive(procs, owners, answered, tasks)
                continue
            if kind == "error":
                raise WorkerError(f"task {index} ({tasks[index]!r}) failed: {payload}")
            answered[index] = True
            done += 1
            yield index, payload
        clean = True
    finally:
        _stop(procs, graceful=clean)
        for q in (task_q, result_q):
            q.close()
            q.cancel_join_thread()


def _check_alive(procs: list[Any], owners: Any, answered: list[bool], tasks: Sequence[Any]) -> None:
    dead = {p.pid: p for p in procs if p.exitcode is not None}
    for index, pid in enumerate(owners):
        p = dead.get(pid)
        if p is not None and not answered[index] and p.exitcode != 0:
            raise WorkerError(
                f"the worker running task {index} ({tasks[index]!r}) died with exit code "
                f"{p.exitcode} before answering"
            )
    if all(p.exitcode is not None for p in procs):
        raise WorkerError("every worker exited with tasks still unanswered")


def _stop(procs: list[Any], *, graceful: bool) -> None:
    """Reap the workers: they are idle after a clean finish; otherwise TERM, then KILL."""
    if graceful:
        for p in procs:
            p.join(GRACE_S)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(GRACE_S)
        if p.is_alive():
            p.kill()
            p.join()
