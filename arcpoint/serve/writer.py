"""The bounded background writer of routing decisions.

The route handler must answer in microseconds and never wait on the disk, so a decision is
appended to this writer's buffer (at most `max_queue` rows) and committed by one thread in
batches. The thread wakes every `linger_s` (or at once when a flush is asked for) and takes
everything buffered: no thread wake-up per request, so routing does not pay a GIL hand-off for
each decision. The full policy, documented in the README and counted:

- **When the buffer is full the decision is not stored** (`dropped` grows, exported as
  `arcpoint_decisions_dropped_total`), and the route response says `"recorded": false`. Routing
  itself never fails or slows down because the disk is slow: a router that stalls traffic to
  protect its own audit log is worse than one that counts what it could not log. An outcome
  later reported for a dropped decision is rejected as `unknown_decision`, so the loss stays
  visible in the outcome counts too.
- A batch that fails to commit is retried (`retries` times, with a short pause); a batch that
  still fails is counted in `failed` with the error kept in `last_error`, and the writer goes on.
- `flush_through(seq)` waits until every decision submitted up to `seq` is committed: the
  outcome handler calls it so an outcome never races ahead of its own decision.
- `close()` stops intake, writes what is buffered and joins the thread within its timeout
  (SIGTERM and SIGINT come here through the app's shutdown).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class WriterStats:
    submitted: int = 0
    written: int = 0
    dropped: int = 0
    failed: int = 0
    batches: int = 0
    last_error: str | None = None


class Settling:
    """What both decision writers share (this one and `decision_process.DecisionProcess`):
    `_done` counts the rows settled so far (written, or counted failed), under `_cond`;
    setting `_wake` asks the writer to send or commit now."""

    _cond: threading.Condition
    _done: int
    _wake: threading.Event

    def flush_through(self, seq: int, timeout: float = 5.0) -> bool:
        """Wait until the first `seq` submitted rows are settled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._done < seq:
                self._wake.set()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True


class DecisionWriter(Settling):
    """One thread that commits buffered rows with `write(rows)` in batches of up to `batch`."""

    def __init__(
        self,
        write: Callable[[Sequence[Any]], Any],
        *,
        max_queue: int = 100_000,
        batch: int = 5000,
        linger_s: float = 0.02,
        retries: int = 3,
        retry_delay_s: float = 0.05,
        name: str = "arcpoint-decision-writer",
    ) -> None:
        if max_queue < 1 or batch < 1:
            raise ValueError("max_queue and batch must be >= 1")
        self._write = write
        self._buffer: deque[Any] = deque()
        self.max_queue = max_queue
        self._batch = batch
        self._linger_s = linger_s
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self.stats = WriterStats()
        self._done = 0
        """How many rows, from the first submitted, are settled (written or counted failed)."""
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._buffer)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def submitted(self) -> int:
        return self.stats.submitted

    def submit(self, row: Any) -> bool:
        """Buffer a row; False (and counted) when the buffer is full or the writer closed.

        Called from one thread (the event loop): `deque.append` needs no lock."""
        if self._closed or len(self._buffer) >= self.max_queue:
            self.stats.dropped += 1
            return False
        self._buffer.append(row)
        self.stats.submitted += 1
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Stop intake, write what is buffered, join. False if rows were left at the timeout."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("decision writer: %d decisions still buffered at shutdown", self.depth)
            return False
        return True

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        buf = self._buffer
        while True:
            self._wake.wait(self._linger_s)
            self._wake.clear()
            closing = self._closed
            while buf:
                n = min(len(buf), self._batch)
                self._commit([buf.popleft() for _ in range(n)])
            if closing:
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
