"""The decision writer in a worker process, off the interpreter that serves requests.

Storing a decision costs far more than choosing it: every candidate's predictions and note
(~20 us), the row and its ~1.5 KB candidates JSON (~12 us), the SQLite insert (~40 us). On a
thread of the serving process that work held the GIL in runs of milliseconds (a batch every
`linger_s`), and each request that arrived meanwhile waited for it: the route's p99 at
concurrency 1 was 7x the no-op endpoint's. Here the event loop only pickles what the decision
was made from (its fields and the pending candidate build: a few lists and numbers, ~5 us), a
sender thread writes the pickles to a pipe in batches, and a child process
(`python -m arcpoint.serve.decision_process DB`) builds the candidates and rows and commits them
on its own SQLite connection (WAL: the server's readers and outcome commits go on beside it).

The router agent's traces (`submit_trace`, from the escalation threads) go the same way: the
server only pickles the finished record, the child scrubs, hashes and appends it (~1 ms each
with its SQLite inserts, which on the server's trace-writer thread held the GIL just as the
decision rows did). When the child is gone or `MAX_TRACES` wait, `submit_trace` says no and
the caller writes the trace in process: never dropped.

What repeats across decisions (the tick's `FleetView`, the prediction grid snapshot) is sent
once and referenced by a number afterwards (`SHARED_TYPES`; the child keeps the last `KEEP`).
A decision whose candidates cannot be pickled this way (an unknown policy's build) is sent as
its finished row, built on the loop: slower, never lost.

The same policy as the thread writer (`arcpoint.serve.writer`, which the service uses for an
in-memory database), documented in the README and counted:

- **When `max_queue` decisions are waiting (submitted, not yet committed by the child), a new
  one is not stored**: `dropped` grows, `arcpoint_decisions_dropped_total` counts it, the route
  answers `"recorded": false`. Routing never waits on the disk.
- A batch that fails to commit is retried (`retries`, with a short pause), then counted in
  `failed` with `last_error`; the child goes on.
- `flush_through(seq)`: wait until the first `seq` submitted rows are committed (the outcome
  handler calls it, so an outcome never races ahead of its own decision; outcomes themselves
  are committed by the server and acknowledged only once durable).
- `close()`: stop intake, send what is buffered, the child commits it and exits (SIGTERM and
  SIGINT reach it through the app's shutdown; the child ignores both signals itself, so a
  Ctrl-C to the process group cannot cut its last batch short). If the server is killed, the
  child reads the end of its pipe, commits what it received, and exits.
- A child that dies stops intake (`alive` is False, `/readyz` says so, later decisions are
  counted as dropped); what it had not committed is counted in `failed`.
"""

from __future__ import annotations

import copyreg
import io
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import IO, Any, NamedTuple

from arcpoint.serve.writer import Settling, WriterStats

log = logging.getLogger(__name__)

FRAME = struct.Struct("<III")
"""Each message on either pipe: its length, how many decisions and reasons it holds and how
many traces, then its bytes."""
PRELOAD = (
    "agents.router",
    "tools.routers.registry",
    "tools.routers.predictive.policy",
    "context_api.traces",
)
"""What the child imports before it says it is ready: what unpickling decisions and traces
needs, so the first batch does not wait seconds for imports."""
KEEP = 64
"""Shared objects (fleet views, grid snapshots) the child keeps, the newest by number."""
PROTOCOL = pickle.HIGHEST_PROTOCOL
MAX_TRACES = 1000
"""Traces waiting for the child at most; past that the caller writes in process."""


class ReasonUpdate(NamedTuple):
    """A stored decision's reason, now with the router agent's advice (advisory escalation)."""

    decision_id: str
    reason: str


def _shared_types() -> tuple[type, ...]:
    """Types whose instances are immutable snapshots shared by many decisions."""
    from tools.routers.predictive.table import GridSnapshot
    from tools.routing import FleetView

    return (FleetView, GridSnapshot)


_CACHE: dict[int, Any] = {}
"""In the child: shared objects by number."""


def _shared(token: int) -> Any:
    """In the child: a shared object the parent sent before (unpickling a reference)."""
    return _CACHE[token]


def _fields(d: Any) -> tuple[Any, ...]:
    """A decision's fields in `DeferredDecision.deferred`'s order (after `build`)."""
    return (
        d.decision_id,
        d.request_id,
        d.ts,
        d.backend,
        d.policy,
        d.reason,
        d.sla_ms,
        d.tier,
        d.ambiguous,
        d.ambiguous_reason,
        d.model_version,
    )


class Packer:
    """Pickles decisions for the child on the event loop: one reusable pickler; shared
    snapshots by reference, each sent once (as a `def` item before the first use)."""

    def __init__(self, keep: int = KEEP) -> None:
        self._buf = io.BytesIO()
        table = dict(copyreg.dispatch_table)
        for t in _shared_types():
            table[t] = self._ref
        # The C pickler reads `dispatch_table` once, when it is made: a class attribute.
        pickler = type("SharingPickler", (pickle.Pickler,), {"dispatch_table": table})
        self._pickler = pickler(self._buf, protocol=PROTOCOL)
        self._keep = keep
        self._known: OrderedDict[int, tuple[int, Any]] = OrderedDict()
        self.shared_sent = 0
        """Shared objects sent so far (each numbered by its order)."""
        self._defs: list[bytes] = []
        self.rows_sent = 0
        """Decisions sent as finished rows (candidates already built, or not picklable)."""

    def _ref(self, obj: Any) -> tuple[Callable[[int], Any], tuple[int]]:
        known = self._known.get(id(obj))
        if known is None or known[1] is not obj:
            token = self.shared_sent
            self.shared_sent += 1
            self._defs.append(pickle.dumps(("def", token, obj), protocol=PROTOCOL))
            self._known[id(obj)] = (token, obj)
            while len(self._known) > self._keep:
                self._known.popitem(last=False)
            return _shared, (token,)
        return _shared, (known[0],)

    def _dump(self, item: Any) -> bytes:
        buf, p = self._buf, self._pickler
        buf.seek(0)
        buf.truncate()
        p.clear_memo()
        p.dump(item)
        return buf.getvalue()

    def pack(self, item: Any) -> bytes:
        """The bytes that make `item` (a decision or a `ReasonUpdate`) in the child."""
        if type(item) is ReasonUpdate:
            return self._dump(("r", item.decision_id, item.reason))
        build = getattr(item, "_build", None)  # a DeferredDecision's pending candidates
        if build is not None:
            defs = self._defs
            try:
                body = self._dump(("d", _fields(item), build))
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                del defs[:]
                self._known.clear()  # a half-sent definition must not be referenced later
                if not self.rows_sent:
                    log.warning("decision candidates not picklable (%s): sending rows", exc)
            else:
                if defs:
                    body = b"".join((*defs, body))
                    del defs[:]
                return body
        self.rows_sent += 1
        from context_api.store import decision_row

        return self._dump(("row", decision_row(item)))


class DecisionProcess(Settling):
    """See the module docstring. `submit` is called from one thread (the event loop);
    `flush_through` (from `Settling`) also returns once a dead child's rows are counted."""

    def __init__(
        self,
        db: str,
        *,
        max_queue: int = 100_000,
        linger_s: float = 0.02,
        retries: int = 3,
        outcome_max_age_s: float = 3600.0,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.max_queue = max_queue
        self._linger_s = linger_s
        self.stats = WriterStats()
        self._packer = Packer()
        self._buffer: deque[bytes] = deque()
        self._traces: deque[bytes] = deque()
        self._trace_lock = threading.Lock()
        self.traces_submitted = 0
        self.traces_done = 0
        self.traces_failed = 0
        self._done = 0
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._closed = False
        self._dead = False
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "arcpoint.serve.decision_process",
                str(db),
                str(outcome_max_age_s),
                str(retries),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._sender = threading.Thread(
            target=self._send, name="arcpoint-decision-send", daemon=True
        )
        self._reader = threading.Thread(
            target=self._read, name="arcpoint-decision-acks", daemon=True
        )
        self._sender.start()
        self._reader.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the child has imported what it needs and opened the database (the
        service waits here before it serves); RuntimeError if it died or took too long."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self._dead or self.proc.poll() is not None:
                raise RuntimeError(
                    f"the decision writer process exited ({self.proc.poll()}) before it was "
                    "ready; see the log above"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the decision writer process was not ready in {timeout} s")

    @property
    def depth(self) -> int:
        """Decisions submitted and not yet committed (buffered, in the pipe, or in the child)."""
        return self.stats.submitted - self._done

    @property
    def trace_depth(self) -> int:
        """Traces handed over and not yet appended by the child."""
        return self.traces_submitted - self.traces_done

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc.poll() is None

    @property
    def submitted(self) -> int:
        return self.stats.submitted

    def submit(self, item: Any) -> bool:
        """Queue a decision or a `ReasonUpdate`; False (and counted) when `max_queue` are
        waiting, the writer is closed, or its process is gone."""
        stats = self.stats
        if self._closed or self._dead or stats.submitted - self._done >= self.max_queue:
            stats.dropped += 1
            return False
        self._buffer.append(self._packer.pack(item))
        stats.submitted += 1
        return True

    def submit_trace(self, record: Any) -> bool:
        """Hand a finished trace (`TraceRecord`) to the child; False when the child is gone,
        the writer is closed or `MAX_TRACES` wait (the caller then writes it itself). Any
        thread."""
        data = pickle.dumps(("t", record), protocol=PROTOCOL)
        with self._trace_lock:
            if self._closed or self._dead or self.trace_depth >= MAX_TRACES:
                return False
            self._traces.append(data)
            self.traces_submitted += 1
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Stop intake, send what is buffered, let the child commit it and exit; False if it
        did not finish within `timeout` (it is then killed; its uncommitted rows are logged)."""
        deadline = time.monotonic() + timeout
        self._closed = True
        self._wake.set()
        self._sender.join(max(0.0, deadline - time.monotonic()))
        try:
            self.proc.wait(max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("decision writer: %d decisions not committed at shutdown", self.depth)
            self.proc.kill()
            self.proc.wait()
        self._reader.join(max(0.05, deadline - time.monotonic()))
        return self._done >= self.stats.submitted

    # -- the sender and the acknowledgement reader (threads) --------------------------------

    def _send(self) -> None:
        buf, traces = self._buffer, self._traces
        pipe = self.proc.stdin
        assert pipe is not None
        try:
            while True:
                self._wake.wait(self._linger_s)
                self._wake.clear()
                closing = self._closed
                if buf or traces:
                    chunk = [buf.popleft() for _ in range(len(buf))]
                    counted = len(chunk)  # decisions and reasons: what flush_through counts
                    chunk += [traces.popleft() for _ in range(len(traces))]
                    payload = b"".join(chunk)
                    pipe.write(FRAME.pack(len(payload), counted, len(chunk) - counted))
                    pipe.write(payload)
                    pipe.flush()
                if closing:
                    pipe.close()  # the child commits what it read, then exits
                    return
        except (BrokenPipeError, OSError, ValueError) as exc:
            self._died(f"pipe to the decision writer broke: {exc}")

    def _read(self) -> None:
        pipe = self.proc.stdout
        assert pipe is not None
        while True:
            frame = _read_frame(pipe)
            if frame is None:
                break
            done, written, failed, batches, last_error, t_done, t_failed = pickle.loads(frame[0])
            self.traces_done, self.traces_failed = t_done, t_failed
            stats = self.stats
            stats.written, stats.failed, stats.batches = written, failed, batches
            if last_error is not None:
                stats.last_error = last_error
            with self._cond:
                self._done = done
                self._cond.notify_all()
            self._ready.set()  # the first acknowledgement says the child is ready
        if not self._closed:
            self._died(f"decision writer process exited ({self.proc.wait()})")

    def _died(self, why: str) -> None:
        if self._dead:
            return
        self._dead = True
        lost = self.stats.submitted - self._done
        self.stats.failed += lost
        with self._trace_lock:
            self.traces_failed += self.trace_depth
            self.traces_done = self.traces_submitted
        self.stats.last_error = why
        log.error("%s; %d decisions not written", why, lost)
        with self._cond:
            self._done = self.stats.submitted
            self._cond.notify_all()


def _read_frame(pipe: IO[bytes]) -> tuple[bytes, int, int] | None:
    """(payload, decisions and reasons, traces), or None at the end of the pipe."""
    head = pipe.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    n, items, traces = FRAME.unpack(head)
    body = pipe.read(n)
    return (body, items, traces) if len(body) == n else None


# -- the child ---------------------------------------------------------------------------------


def _rows(payload: bytes) -> tuple[list[Any], list[tuple[str, str]], list[Any]]:
    """The decision rows, reason updates and traces in one frame."""
    from context_api.store import decision_row
    from tools.routing import DeferredDecision

    rows: list[Any] = []
    updates: list[tuple[str, str]] = []
    traces: list[Any] = []
    f = io.BytesIO(payload)
    end = len(payload)
    while f.tell() < end:
        item = pickle.load(f)  # one unpickler per item: each was pickled with a fresh memo
        kind = item[0]
        if kind == "def":
            _, token, obj = item
            _CACHE[token] = obj
            _CACHE.pop(token - KEEP, None)
            continue
        if kind == "d":
            _, fields, build = item
            rows.append(decision_row(DeferredDecision.deferred(build, *fields)))
        elif kind == "row":
            rows.append(item[1])
        elif kind == "t":
            traces.append(item[1])
        else:  # "r": an advisory escalation's reason
            updates.append((item[1], item[2]))
    return rows, updates, traces


def child_main(argv: list[str]) -> int:
    """The worker: read frames from standard input until it ends, commit each, acknowledge
    on standard output with (done, written, failed, batches, last_error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    db, max_age, retries = argv[0], float(argv[1]), int(argv[2])
    import importlib

    from context_api.store import Store
    from context_api.traces import TraceStore

    for name in PRELOAD:
        importlib.import_module(name)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    done = written = failed = batches = 0
    t_done = t_failed = 0
    last_error: str | None = None
    with Store(db, outcome_max_age_s=max_age) as store:
        trace_store = TraceStore(store)
        _ack(out, (0, 0, 0, 0, None, 0, 0))  # ready
        while True:
            frame = _read_frame(inp)
            if frame is None:
                return 0
            payload, n, n_traces = frame
            traces: list[Any] = []
            for attempt in range(retries + 1):
                try:
                    rows, updates, traces = _rows(payload)
                    with store.transaction():
                        store.insert_decisions(rows)
                        if updates:
                            store.set_decision_reasons(updates)
                except Exception as exc:  # storage trouble: retry, then count and go on
                    last_error = f"{type(exc).__name__}: {exc}"
                    if attempt < retries:
                        time.sleep(0.05 * (attempt + 1))
                        continue
                    failed += n
                    log.error("decision writer: %d decisions not written: %s", n, exc)
                else:
                    written += n
                break
            done += n
            batches += 1
            # traces of a frame that could not be read at all are counted as failed too
            t_failed += n_traces - len(traces) + _append_traces(trace_store, traces)
            t_done += n_traces
            _ack(out, (done, written, failed, batches, last_error, t_done, t_failed))


def _ack(out: IO[bytes], counts: tuple[Any, ...]) -> None:
    data = pickle.dumps(counts, protocol=PROTOCOL)
    try:
        out.write(FRAME.pack(len(data), 1, 0) + data)
        out.flush()
    except (BrokenPipeError, OSError):  # the server is gone: keep committing its input
        pass


def _append_traces(trace_store: Any, traces: list[Any]) -> int:
    """Append the frame's traces in one transaction, or one by one if that fails (a trace
    already stored is refused alone); returns how many could not be written (logged)."""
    if not traces:
        return 0
    try:
        trace_store.append_many(traces)
        return 0
    except Exception:
        failed = 0
        for record in traces:
            try:
                trace_store.append(record)
            except Exception as exc:
                failed += 1
                log.error("trace %s not written: %s", record.trace_id, exc)
        return failed


if __name__ == "__main__":
    # The module by its name, not `__main__`: unpickled references resolve in its `_CACHE`.
    from arcpoint.serve.decision_process import child_main as _main

    sys.exit(_main(sys.argv[1:]))
