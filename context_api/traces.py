"""Reasoning traces: why each escalated decision, chat answer and monitor run came out as it did.

An auditor must be able to read a trace and trust that nobody has edited it since. So a trace
(`context_api.trace_records.TraceRecord`, built with `context_api.trace_builder.TraceBuilder`)
is scrubbed of secrets by `context_api.redact` and then appended here, by `TraceStore`, to a
hash chain in the store's SQLite file; `TraceStore.verify` walks the chain
(`context_api.trace_verify`) and names the first trace that was edited, deleted or reordered.
Tables and columns: docs/traces.md and `context_api/schema.py` (migration 5).

The API other modules code against::

    from context_api.trace_builder import TraceBuilder
    from context_api.traces import TraceStore, TraceWriter

    tb = TraceBuilder("escalation", parent_id=decision.decision_id, inputs={...})
    with tb.node("route"):
        tb.tool_call("get_fleet_state", {"backend": "a"}, result, duration_s=0.002)
    record = tb.finish(final={"backend": "b"}, fallback_reason=None, backend="b")

    traces = TraceStore(store)                  # a context_api.store.Store, or a path
    traces.append(record)                       # synchronous; returns a TraceReceipt
    writer = TraceWriter(traces)                # or off the caller's thread:
    writer.submit(record); writer.flush(); writer.close()

`TraceWriter` lives in `context_api.trace_writer` and is exported here too, beside the store it
writes to. Trace writes are off the routine routing path: the Router's fast path never builds or
writes a trace; only escalations, chat turns and monitor runs do.

Concurrency: `append` reads the chain head inside a `BEGIN IMMEDIATE` transaction, so appends from
several threads (one Store connection under its lock) or several processes (SQLite's write lock)
always extend the chain one at a time.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from context_api.trace_records import (
    GENESIS_HASH,
    StoredTrace,
    TraceReceipt,
    TraceRecord,
    TraceSummary,
    chain_hash,
)
from context_api.trace_rows import (
    INSERT_FTS,
    INSERT_STEP,
    INSERT_TRACE,
    final_text,
    fts_query,
    prepare_trace,
    search_body,
    stored_trace,
)
from context_api.trace_verify import VerifyReport, verify_chain
from context_api.trace_writer import TraceWriter

if TYPE_CHECKING:
    from context_api.store import Store

__all__ = ["TraceStore", "TraceWriter"]


class TraceStore:
    """Append, read, search, export and verify traces in an Arcpoint SQLite file.

    `TraceStore(store)` uses an open `context_api.store.Store` (its connection and lock);
    `TraceStore(path)` opens (creating and migrating) its own Store and closes it on `close()`,
    as it does a Store handed over with `own_store=True`.
    `redact=False` skips secret scrubbing: only for tests and benchmarks measuring its cost.
    """

    def __init__(
        self, store: Store | str | Path, *, redact: bool = True, own_store: bool = False
    ) -> None:
        from context_api.store import Store

        if isinstance(store, str | Path):
            self.store = Store(store)
            self._owns = True
        else:
            self.store = store
            self._owns = own_store
        self._redact = redact

    def close(self) -> None:
        if self._owns:
            self.store.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --

    def append(self, record: TraceRecord) -> TraceReceipt:
        """Scrub, hash and append one trace; returns its place in the chain (seq and hashes).

        Raises `ValueError` if a trace with this id is already stored (a trace is written once).
        """
        return self.append_many([record])[0]

    def append_many(self, records: Iterable[TraceRecord]) -> list[TraceReceipt]:
        """Append several traces in one transaction (in the given order); all or none.

        Everything but the hash is computed before the write lock is taken, so concurrent
        writers hold it only for the inserts.
        """
        prepared = [prepare_trace(r, scrub=self._redact) for r in records]
        if not prepared:
            return []
        stored: list[TraceReceipt] = []
        now = time.time()
        try:
            with self.store.transaction() as conn:
                seq, prev = self._head_for_append(conn)
                for item in prepared:
                    seq += 1
                    digest = chain_hash(prev, seq, item.text)
                    cols = item.columns
                    conn.execute(INSERT_TRACE, (seq, *cols.values(), item.text, prev, digest, now))
                    if item.steps:
                        conn.executemany(INSERT_STEP, item.steps)
                    conn.execute(
                        INSERT_FTS, (cols["trace_id"], cols["kind"], cols["final"], item.body)
                    )
                    stored.append(TraceReceipt(cols["trace_id"], seq, prev, digest, now))
                    prev = digest
        except sqlite3.IntegrityError as exc:
            if "trace_id" in str(exc) or "UNIQUE" in str(exc):
                raise ValueError(f"a trace with one of these ids is already stored: {exc}") from exc
            raise
        return stored

    @staticmethod
    def _head_for_append(conn: sqlite3.Connection) -> tuple[int, str]:
        """(last seq ever issued, hash of the newest stored trace) inside the write transaction.

        The next seq comes from AUTOINCREMENT's counter, not from MAX(seq): if the newest traces
        were deleted, the next append leaves a visible gap instead of silently reusing their seqs.
        """
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'traces'").fetchone()
        issued = int(row[0]) if row else 0
        head = conn.execute("SELECT seq, hash FROM traces ORDER BY seq DESC LIMIT 1").fetchone()
        if head is None:
            return issued, GENESIS_HASH
        return max(issued, int(head[0])), str(head[1])

    # -- reading --

    def count(self) -> int:
        with self.store._lock:
            return int(self.store.conn.execute("SELECT COUNT(*) FROM traces").fetchone()[0])

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest trace: publish it elsewhere to anchor the chain."""
        with self.store._lock:
            row = self.store.conn.execute(
                "SELECT seq, hash FROM traces ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def seq_of_hash(self, digest: str) -> int | None:
        """The seq of the trace with this chain hash (to check a published anchor)."""
        with self.store._lock:
            row = self.store.conn.execute(
                "SELECT seq FROM traces WHERE hash = ? ORDER BY seq LIMIT 1", (digest,)
            ).fetchone()
        return None if row is None else int(row[0])

    def get(self, trace_id: str) -> StoredTrace | None:
        """The trace with this id, else the one whose id uniquely starts or ends with it (at least
        6 characters: ids start with the time, so their random *end* is the handy part to type).
        Raises `ValueError` when several ids match."""
        select = "SELECT seq, content_json, prev_hash, hash, recorded_at, trace_id FROM traces "
        with self.store._lock:
            conn = self.store.conn
            row = conn.execute(select + "WHERE trace_id = ?", (trace_id,)).fetchone()
            if row is None and len(trace_id) >= 6:
                escaped = trace_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                for pattern in (f"{escaped}%", f"%{escaped}"):
                    rows = conn.execute(
                        select + "WHERE trace_id LIKE ? ESCAPE '\\' LIMIT 3", (pattern,)
                    ).fetchall()
                    if len(rows) > 1:
                        shown = ", ".join(r[5] for r in rows[:2])
                        raise ValueError(
                            f"trace id {trace_id!r} is ambiguous ({shown}, ...): give more of it"
                        )
                    if rows:
                        row = rows[0]
                        break
        return None if row is None else stored_trace(row[:5])

    def list(
        self,
        *,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        backend: str | None = None,
        parent_id: str | None = None,
        llm: str | None = None,
        search: str | None = None,
        limit: int | None = 50,
        newest_first: bool = True,
    ) -> list[TraceSummary]:
        """Trace summaries matching every given filter. `search` is full-text (FTS5) over the
        kind, final answer, inputs and step text; every word must appear."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("t.kind = ?", kind),
            ("t.started_at >= ?", since),
            ("t.started_at < ?", until),
            ("t.backend = ?", backend),
            ("t.parent_id = ?", parent_id),
            ("t.llm = ?", llm),
        ):
            if value is not None:
                clauses.append(column)
                params.append(value)
        if search is not None:
            clauses.append(
                "t.trace_id IN (SELECT trace_id FROM traces_fts WHERE traces_fts MATCH ?)"
            )
            params.append(fts_query(search))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        cols = ", ".join(f"t.{c}" for c in TraceSummary.model_fields)
        sql = f"SELECT {cols} FROM traces t{where} ORDER BY t.seq {order}{lim}"
        with self.store._lock:
            cur = self.store.conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return [TraceSummary(**dict(zip(names, r, strict=True))) for r in rows]

    def iter_traces(
        self, *, since: float | None = None, kind: str | None = None, batch: int = 500
    ) -> Iterator[StoredTrace]:
        """Every stored trace (optionally filtered) in chain order, read in batches."""
        last = 0
        while True:
            clauses = ["seq > ?"]
            params: list[Any] = [last]
            if since is not None:
                clauses.append("started_at >= ?")
                params.append(since)
            if kind is not None:
                clauses.append("kind = ?")
                params.append(kind)
            with self.store._lock:
                rows = self.store.conn.execute(
                    "SELECT seq, content_json, prev_hash, hash, recorded_at FROM traces "
                    f"WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT {int(batch)}",
                    params,
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield stored_trace(row)
            last = int(rows[-1][0])

    # -- verification --

    def verify(self, *, max_problems: int = 20) -> VerifyReport:
        """Walk the chain from the first trace: recompute each hash, check each link, the seq
        order, the copied columns and the `trace_steps` rows against the hashed content.

        Streams both tables in chain order inside one read transaction (one consistent snapshot;
        WAL lets other processes keep appending meanwhile). After a break the walk continues
        from the stored hash, so later problems are reported too; `first_bad` is the earliest.
        Deleting the *newest* traces and resetting AUTOINCREMENT's counter cannot be seen from
        the file alone: compare `head_hash` with a copy kept elsewhere (`--expect-head`).
        """
        with self.store._lock:
            conn = self.store.conn
            own_txn = not conn.in_transaction
            if own_txn:
                conn.execute("BEGIN")
            try:
                return verify_chain(conn, max_problems)
            finally:
                if own_txn and conn.in_transaction:
                    conn.execute("COMMIT")

    def rebuild_search_index(self) -> int:
        """Rebuild `traces_fts` from the hashed content (it is an index, not evidence)."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM traces_fts")
            n = 0
            for (text,) in conn.execute("SELECT content_json FROM traces ORDER BY seq").fetchall():
                content = json.loads(text)
                conn.execute(
                    INSERT_FTS,
                    (
                        content["trace_id"],
                        content["kind"],
                        final_text(content.get("final")),
                        search_body(text),
                    ),
                )
                n += 1
        return n
