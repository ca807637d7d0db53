"""Verifying the chain: walk every trace in order, recompute each hash, check each link and seq,
and check the copied columns and `trace_steps` rows against the hashed content.

After a break the walk goes on from the stored hash, so every problem is found, and the first
one is named; the report also says whether the append-only triggers are still in place.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from context_api.trace_records import GENESIS_HASH, canonical_json, chain_hash
from context_api.trace_rows import (
    DERIVED_TRACE_COLUMNS,
    STEP_COLUMNS,
    TRACE_COLUMNS,
    step_rows,
    trace_columns,
)


class TraceProblem(BaseModel):
    seq: int | None
    trace_id: str | None
    problem: str


class VerifyReport(BaseModel):
    """What `verify` found. `ok` only when the whole chain and every copy check out."""

    ok: bool
    checked: int
    head_seq: int | None
    head_hash: str | None
    first_bad: TraceProblem | None
    problems: list[TraceProblem]
    problems_truncated: bool = False
    append_only_triggers: bool
    """Whether the append-only triggers are still in place (their absence alone is not a failure:
    the chain is the authority, but it shows someone altered the file)."""


def verify_chain(conn: sqlite3.Connection, max_problems: int) -> VerifyReport:
    """The walk itself, inside the caller's read transaction (see `TraceStore.verify`)."""
    check = _ChainCheck(max_problems)
    rows = conn.execute(f"SELECT {', '.join(TRACE_COLUMNS)} FROM traces ORDER BY seq")
    step_cursor = conn.execute(
        f"SELECT {', '.join('s.' + c for c in STEP_COLUMNS)}, t.seq FROM trace_steps s "
        "JOIN traces t ON t.trace_id = s.trace_id ORDER BY t.seq, s.idx"
    )
    steps = _StepStream(step_cursor)
    for row in rows:
        check.trace(row, steps.take(int(row[0])))
    issued_row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'traces'").fetchone()
    issued = int(issued_row[0]) if issued_row else 0
    if issued > (check.head_seq or 0):
        check.bad(
            None,
            None,
            f"traces after seq {check.head_seq or 0} up to {issued} are missing "
            "(the newest traces were deleted)",
        )
    orphan = conn.execute(
        "SELECT COUNT(DISTINCT trace_id), MIN(trace_id) FROM trace_steps "
        "WHERE trace_id NOT IN (SELECT trace_id FROM traces)"
    ).fetchone()
    if orphan and orphan[0]:
        check.bad(None, orphan[1], f"{orphan[0]} trace(s) have steps but no trace row (deleted)")
    triggers = conn.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' "
        "AND name IN ('traces_no_update', 'traces_no_delete', "
        "'trace_steps_no_update', 'trace_steps_no_delete')"
    ).fetchone()[0]
    return check.report(append_only_triggers=int(triggers) == 4)


class _StepStream:
    """The `trace_steps` rows of consecutive traces, from one cursor ordered by trace seq."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self._pending: tuple[Any, ...] | None = None
        self._done = False

    def take(self, seq: int) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        while True:
            if self._pending is None and not self._done:
                row = self._cursor.fetchone()
                if row is None:
                    self._done = True
                else:
                    self._pending = tuple(row)
            if self._pending is None or int(self._pending[-1]) > seq:
                return out
            if int(self._pending[-1]) == seq:
                out.append(self._pending[:-1])
            self._pending = None


_COL = {c: i for i, c in enumerate(TRACE_COLUMNS)}


class _ChainCheck:
    """The state of one walk along the chain: the previous hash, the expected seq, problems."""

    def __init__(self, max_problems: int) -> None:
        self.max_problems = max_problems
        self.problems: list[TraceProblem] = []
        self.truncated = False
        self.prev_hash = GENESIS_HASH
        self.expected_seq = 1
        self.checked = 0
        self.head_seq: int | None = None
        self.head_hash: str | None = None
        self.prev_id: str | None = None
        self.prev_clean = False

    def bad(self, seq: int | None, trace_id: str | None, text: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(TraceProblem(seq=seq, trace_id=trace_id, problem=text))
        else:
            self.truncated = True

    def trace(self, row: Sequence[Any], got_steps: list[tuple[Any, ...]]) -> None:
        seq = int(row[_COL["seq"]])
        trace_id = str(row[_COL["trace_id"]])
        stored_prev = str(row[_COL["prev_hash"]])
        stored_hash = str(row[_COL["hash"]])
        text = str(row[_COL["content_json"]])
        self.checked += 1
        if seq != self.expected_seq:
            gap = (
                f"seq {self.expected_seq}"
                if seq == self.expected_seq + 1
                else f"seqs {self.expected_seq}..{seq - 1}"
            )
            self.bad(seq, trace_id, f"{gap} missing before this trace (deleted)")
        own_hash_ok = chain_hash(stored_prev, seq, text) == stored_hash
        if stored_prev != self.prev_hash:
            if seq == self.expected_seq and own_hash_ok and self.prev_clean and self.prev_id:
                # This trace is consistent and in place, so the one before it was re-hashed
                # after an edit: name that one.
                self.bad(
                    seq - 1,
                    self.prev_id,
                    "hash was rewritten (content edited and re-hashed): the next trace links "
                    f"to {stored_prev[:16]}…, not to this trace's hash",
                )
            else:
                self.bad(
                    seq,
                    trace_id,
                    "prev_hash is not the hash of the trace before it "
                    "(a trace before it was deleted, edited or moved)",
                )
        if not own_hash_ok:
            self.bad(seq, trace_id, "hash does not match its content (edited or moved)")
        before = len(self.problems)
        self._content(seq, trace_id, row, text, got_steps)
        self.prev_clean = own_hash_ok and len(self.problems) == before and seq == self.expected_seq
        self.prev_id = trace_id
        self.prev_hash = stored_hash
        self.expected_seq = seq + 1
        self.head_seq, self.head_hash = seq, stored_hash

    def _content(
        self,
        seq: int,
        trace_id: str,
        row: Sequence[Any],
        text: str,
        got_steps: list[tuple[Any, ...]],
    ) -> None:
        try:
            content = json.loads(text)
            if canonical_json(content) != text:
                self.bad(seq, trace_id, "content_json is not in canonical form (edited)")
            if content.get("trace_id") != trace_id:
                self.bad(seq, trace_id, "trace_id column differs from the hashed content")
                return
            expected = trace_columns(content)
            for column in DERIVED_TRACE_COLUMNS:
                if not _same(row[_COL[column]], expected[column]):
                    self.bad(seq, trace_id, f"column {column} differs from the hashed content")
            want_steps = step_rows(content)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.bad(seq, trace_id, f"content_json is not a valid trace ({exc})")
            return
        if len(got_steps) != len(want_steps):
            self.bad(
                seq,
                trace_id,
                f"trace_steps holds {len(got_steps)} rows, the hashed content "
                f"{len(want_steps)} steps (steps deleted or added)",
            )
            return
        for got, want in zip(got_steps, want_steps, strict=True):
            if not all(_same(g, w) for g, w in zip(got, want, strict=True)):
                self.bad(
                    seq, trace_id, f"trace_steps row {want[1]} differs from the hashed content"
                )
                return

    def report(self, *, append_only_triggers: bool) -> VerifyReport:
        ranked = [p for p in self.problems if p.seq is not None]
        first = min(ranked, key=lambda p: p.seq or 0) if ranked else None
        if first is None and self.problems:
            first = self.problems[0]
        return VerifyReport(
            ok=not self.problems,
            checked=self.checked,
            head_seq=self.head_seq,
            head_hash=self.head_hash,
            first_bad=first,
            problems=self.problems,
            problems_truncated=self.truncated,
            append_only_triggers=append_only_triggers,
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return float(a) == float(b)
    return a == b
