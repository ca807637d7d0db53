"""Writing traces off the caller's thread: `TraceWriter` drains a bounded queue into a
`TraceStore` on one background thread, so an escalation or chat turn does not wait on the disk.

A trace is never dropped: a full queue writes on the caller's thread, a failed append is retried,
logged and kept for the caller, and writers left open at exit are flushed by an `atexit` hook.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from context_api.redact import redact_text
from context_api.trace_records import TraceRecord

if TYPE_CHECKING:
    from context_api.traces import TraceStore

log = logging.getLogger(__name__)


@dataclass
class TraceWriterStats:
    submitted: int = 0
    written: int = 0
    written_inline: int = 0
    """Traces written on the caller's thread because the queue was full (none are dropped)."""
    failed: int = 0
    """Traces whose append raised after retries; each is logged at ERROR with its id, and kept in
    `TraceWriter.failed_records` so the caller can retry or save them."""
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)


class TraceWriter:
    """Appends traces on one background thread, so an escalation or chat turn does not wait on
    the disk. Bounded: `max_queue` traces at most wait in memory.

    When the queue is full, `submit` writes the trace synchronously on the caller's thread (and
    counts it in `stats.written_inline`) rather than drop it: losing an audit record silently is
    worse than one slow escalation, and a full queue means the disk is the bottleneck anyway.
    The Router's fast path never reaches here. `flush()` waits until everything submitted so far
    is written; `close()` flushes and stops the thread. Writers still open when the interpreter
    exits are closed (and so flushed) by an `atexit` hook; a close that times out logs how many
    traces were left unwritten.
    """

    _STOP = object()

    def __init__(
        self,
        traces: TraceStore,
        *,
        max_queue: int = 1000,
        retries: int = 2,
        retry_delay_s: float = 0.05,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.traces = traces
        self.stats = TraceWriterStats()
        self.failed_records: list[TraceRecord] = []
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="arcpoint-trace-writer", daemon=True)
        self._thread.start()
        _OPEN_WRITERS.add(self)

    def submit(self, record: TraceRecord) -> None:
        """Queue a trace for writing; never drops it, never raises for storage errors."""
        if not isinstance(record, TraceRecord):
            raise TypeError(f"expected a TraceRecord, got {type(record).__name__}")
        with self._lock:
            if self._closed:
                raise RuntimeError("TraceWriter is closed")
            self.stats.submitted += 1
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            if self._write(record):
                with self._lock:
                    self.stats.written_inline += 1

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every trace submitted so far is written (or failed). False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def close(self, timeout_s: float | None = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(self._STOP)
        self._thread.join(timeout_s)
        _OPEN_WRITERS.discard(self)
        left = max(0, self._queue.unfinished_tasks - 1)  # the stop marker is not a trace
        if self._thread.is_alive() and left:
            log.error("TraceWriter closed with %d trace(s) not yet written", left)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is self._STOP:
                    return
                batch = [item]
                # Drain what is already waiting into one transaction (cheaper per trace).
                while len(batch) < 64:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is self._STOP:
                        self._queue.put(self._STOP)  # stop after this batch
                        self._queue.task_done()
                        break
                    batch.append(nxt)
                self._write_batch(batch)
                for _ in batch[1:]:
                    self._queue.task_done()
            finally:
                self._queue.task_done()

    def _write_batch(self, batch: list[TraceRecord]) -> None:
        if len(batch) > 1:
            try:
                self.traces.append_many(batch)
                with self._lock:
                    self.stats.written += len(batch)
                return
            except Exception:  # fall back to one by one: one bad trace must not sink the rest
                pass
        for record in batch:
            self._write(record)

    def _write(self, record: TraceRecord) -> bool:
        error: Exception | None = None
        for attempt in range(self._retries + 1):
            try:
                self.traces.append(record)
                with self._lock:
                    self.stats.written += 1
                return True
            except ValueError as exc:  # duplicate id or invalid record: retrying cannot help
                error = exc
                break
            except Exception as exc:
                error = exc
                if attempt < self._retries:
                    time.sleep(self._retry_delay_s * (2**attempt))
        message = f"trace {record.trace_id} ({record.kind}) not written: {type(error).__name__}"
        detail = redact_text(str(error))
        log.error("%s: %s", message, detail)
        with self._lock:
            self.stats.failed += 1
            self.stats.last_error = f"{message}: {detail}"
            self.stats.errors.append(self.stats.last_error)
            del self.stats.errors[:-20]
            self.failed_records.append(record)
        return False


_OPEN_WRITERS: weakref.WeakSet[TraceWriter] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    """Flush writers their owners forgot to close: their thread is a daemon."""
    for writer in list(_OPEN_WRITERS):
        with contextlib.suppress(Exception):
            writer.close()
