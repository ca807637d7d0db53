"""LLM request outcomes: end-to-end latency through the store's outcome path, plus TTFT and status.

A calling service reports, for each routed request, how it ended (`ok`, `timeout`, `error`,
`rejected`), its end-to-end latency and, when it streamed, its time to first token. The
end-to-end latency is the outcome the store already knows (`outcomes.actual_latency_ms`, with
the store's own validation, idempotency and rejection reasons); TTFT and status go to
`outcome_details` in the same transaction, so a row is either wholly stored or not at all.

Rows that fail the checks made here (an unknown status, a TTFT that is negative, not finite or
larger than the end-to-end latency) are stored in `outcome_rejections` with their reason, like
every other rejection: nothing is dropped silently. When this returns, the batch is committed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from context_api import outcomes as _outcomes
from context_api.store import Store

STATUSES = ("ok", "timeout", "error", "rejected")

BAD_STATUS = "bad_status"
BAD_TTFT = "bad_ttft"

_INSERT_DETAIL = "INSERT INTO outcome_details (decision_id, ttft_ms, status) VALUES (?, ?, ?)"
_INSERT_REJECTION = (
    "INSERT INTO outcome_rejections (decision_id, value, value_text, observed_at, reason,"
    " detail, at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class LLMOutcome:
    decision_id: str
    e2e_ms: float
    observed_at: float
    status: str = "ok"
    ttft_ms: float | None = None


@dataclass(frozen=True, slots=True)
class RowResult:
    """What became of one row: `accepted`, `duplicate` or `rejected` (with a reason code)."""

    index: int
    decision_id: str | None
    status: str
    reason: str | None = None
    detail: str | None = None


def _detail_problem(row: LLMOutcome) -> tuple[str, str] | None:
    if row.status not in STATUSES:
        return BAD_STATUS, f"status must be one of {', '.join(STATUSES)}, got {row.status!r}"
    ttft = row.ttft_ms
    if ttft is None:
        return None
    if not math.isfinite(ttft) or ttft < 0:
        return BAD_TTFT, f"ttft_ms must be a finite number >= 0, got {ttft!r}"
    if math.isfinite(row.e2e_ms) and ttft > row.e2e_ms:
        return BAD_TTFT, f"ttft_ms {ttft!r} is larger than e2e_ms {row.e2e_ms!r}"
    return None


def record_rejections(
    store: Store, rows: Sequence[tuple[int, str | None, str, str]], *, now: float | None = None
) -> None:
    """Store rows refused before they reached the outcome path (index, id, reason, detail):
    for example a row that is not an object. Committed when this returns."""
    if not rows:
        return
    at = time.time() if now is None else now
    with store.transaction() as conn:
        conn.executemany(
            _INSERT_REJECTION,
            [(did, None, None, None, reason, detail, at) for _, did, reason, detail in rows],
        )


class _NotClean(Exception):
    pass


def _all_accepted(store: Store, batch: list[tuple[str, float, float]], at: float) -> bool:
    """Record `batch` without per-row results inside a savepoint, and keep it only when every
    row was accepted; otherwise roll the savepoint back (the caller records it row by row)."""
    try:
        with store.transaction() as conn:  # nested: a savepoint
            summary, _ = _outcomes.record_outcomes(conn, batch, now=at)
            if summary.accepted != len(batch):
                raise _NotClean
    except _NotClean:
        return False
    return True


def record_llm_outcomes(
    store: Store, rows: Sequence[LLMOutcome], *, now: float | None = None
) -> list[RowResult]:
    """Validate and store a batch in one transaction; one `RowResult` per row, in order."""
    at = time.time() if now is None else now
    results: list[RowResult | None] = [None] * len(rows)
    rejected: list[tuple[object, ...]] = []
    passed: list[int] = []
    for i, row in enumerate(rows):
        problem = _detail_problem(row)
        if problem is None:
            passed.append(i)
            continue
        reason, detail = problem
        results[i] = RowResult(i, row.decision_id, "rejected", reason, detail)
        value = row.e2e_ms if math.isfinite(row.e2e_ms) else None
        rejected.append(
            (row.decision_id, value, repr(row.e2e_ms), row.observed_at, reason, detail, at)
        )
    with store.transaction() as conn:
        if rejected:
            conn.executemany(_INSERT_REJECTION, rejected)
        if passed:
            batch = [(rows[i].decision_id, rows[i].e2e_ms, rows[i].observed_at) for i in passed]
            if _all_accepted(store, batch, at):  # the common case: one pass, no per-row objects
                conn.executemany(
                    _INSERT_DETAIL,
                    [(rows[i].decision_id, rows[i].ttft_ms, rows[i].status) for i in passed],
                )
                for i in passed:
                    results[i] = RowResult(i, rows[i].decision_id, "accepted")
                return [r for r in results if r is not None]
            _, per_row = _outcomes.record_outcomes(conn, batch, now=at, want_results=True)
            details = []
            for i, res in zip(passed, per_row, strict=True):
                reason = res.reason.value if res.reason is not None else None
                results[i] = RowResult(i, res.decision_id, res.status, reason, res.detail)
                if res.status == "accepted":
                    details.append((rows[i].decision_id, rows[i].ttft_ms, rows[i].status))
            if details:
                conn.executemany(_INSERT_DETAIL, details)
    return [r for r in results if r is not None]
