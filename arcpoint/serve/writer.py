"""The bounded background writer of routing decisions.

The route handler must answer in microseconds and never wait on the disk, so a decision is
handed to this writer (a `queue.Queue` of at most `max_queue` rows) and committed by one thread
in batches. The full policy, documented in the README and counted:

- **When the queue is full the decision is not stored** (`dropped` grows, exported as
  `arcpoint_decisions_dropped_total`), and the route response says `"recorded": false`. Routing
  itself never fails or slows down because the disk is slow: a router that stalls traffic to
  protect its own audit log is worse than one that counts what it could not log. An outcome
  later reported for a dropped decision is rejected as `unknown_decision`, so the loss stays
  visible in the outcome counts too.
- A batch that fails to commit is retried (`retries` times, with a short pause); a batch that
  still fails is counted in `failed` with the error kept in `last_error`, and the writer goes on.
- `flush_through(seq)` waits until every decision submitted up to `seq` is committed: the
  outcome handler calls it so an outcome never races ahead of its own decision.
- `close()` stops intake, drains what is queued and joins the thread within its timeout
  (SIGTERM and SIGINT come here through the app's shutdown).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class WriterStats:
    submitted: int = 0
    written: int = 0
    dropped: int = 0
    failed: int = 0
    batches: int = 0
    last_error: str | None = None


class DecisionWriter:
    """One thread that commits queued rows with `write(rows)` in batches of up to `batch`."""

    def __init__(
        self,
        write: Callable[[Sequence[Any]], Any],
        *,
        max_queue: int = 100_000,
        batch: int = 2000,
        linger_s: float = 0.02,
        retries: int = 3,
        retry_delay_s: float = 0.05,
        name: str = "arcpoint-decision-writer",
    ) -> None:
        if max_queue < 1 or batch < 1:
            raise ValueError("max_queue and batch must be >= 1")
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.max_queue = max_queue
        self._batch = batch
        self._linger_s = linger_s
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self.stats = WriterStats()
        self._done = 0
        """Sequence number of the last row taken off the queue and settled (written or failed)."""
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def submitted(self) -> int:
        return self.stats.submitted

    def submit(self, row: Any) -> bool:
        """Queue a row; False (and counted) when the queue is full or the writer closed."""
        if self._closed:
            self.stats.dropped += 1
            return False
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.stats.dropped += 1
            return False
        self.stats.submitted += 1
        return True

    def flush_through(self, seq: int, timeout: float = 5.0) -> bool:
        """Wait until the first `seq` submitted rows are settled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._settled() < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _settled(self) -> int:
        return self._done

    def close(self, timeout: float = 5.0) -> bool:
        """Stop intake, drain the queue, join. False if rows were still queued at the timeout."""
        if self._closed:
            return not self._thread.is_alive()
        self._closed = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(_STOP, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.error("decision writer: %d decisions still queued at shutdown", self.depth)
            return False
        return True

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            stop = item is _STOP
            rows = [] if stop else [item]
            if not stop:
                deadline = time.monotonic() + self._linger_s
                while len(rows) < self._batch:
                    try:
                        nxt = q.get_nowait()
                    except queue.Empty:
                        left = deadline - time.monotonic()
                        if left <= 0 or self._closed:
                            break
                        try:
                            nxt = q.get(timeout=left)
                        except queue.Empty:
                            break
                    if nxt is _STOP:
                        stop = True
                        break
                    rows.append(nxt)
            if rows:
                self._commit(rows)
            if stop:
                # Drain whatever was queued behind the stop marker (a racing submit).
                rest = []
                while True:
                    try:
                        nxt = q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is not _STOP:
                        rest.append(nxt)
                if rest:
                    self._commit(rest)
                return

    def _commit(self, rows: list[Any]) -> None:
        for attempt in range(self._retries + 1):
            try:
                self._write(rows)
            except Exception as exc:  # storage trouble: retry, then count and go on
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if attempt < self._retries:
                    time.sleep(self._retry_delay_s * (attempt + 1))
                    continue
                self.stats.failed += len(rows)
                log.error("decision writer: %d decisions not written: %s", len(rows), exc)
            else:
                self.stats.written += len(rows)
            break
        self.stats.batches += 1
        with self._cond:
            self._done += len(rows)
            self._cond.notify_all()
