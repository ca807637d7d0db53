"""Joining late outcomes to the decisions they judge: validation, idempotency, rejections, expiry.

An outcome (the latency a request really saw) arrives seconds to minutes after its decision
(label lag). Each one ends in exactly one of three states:

- accepted: the first valid outcome for a pending decision. Stored in `outcomes` with the lag
  (`observed_at - decision ts`) and the error (`actual - predicted`), and the decision becomes
  `resolved`.
- duplicate: the same decision id with the same value again (a retried report). Nothing new is
  stored except a counter on the outcome row, so retries are idempotent and still visible.
- rejected: a row we cannot trust. The row and a reason code are stored in `outcome_rejections`,
  so nothing is silently lost and rejections can be counted by reason.

The batch path validates in one tight Python pass, looks the decisions up in chunks and writes
with `executemany`, all inside the caller's single transaction: that is what reaches 50k rows/s.
The functions here take an open `sqlite3.Connection` and never commit; the Store owns
transactions.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from operator import itemgetter
from typing import Literal, TypedDict

from pydantic import BaseModel, Field

from context_api.bounds import DEFAULT_BOUNDS, ValueBounds


class RejectReason(StrEnum):
    """Why an outcome was not accepted. Stable codes: they are stored and counted."""

    MALFORMED = "malformed"
    """Missing fields, a non-string id or a non-numeric value."""
    UNKNOWN_DECISION = "unknown_decision"
    NOT_A_NUMBER = "not_a_number"
    INFINITE = "infinite"
    NEGATIVE = "negative"
    TOO_LARGE = "too_large"
    """Above the physical bound on a latency (`ValueBounds.max_latency_ms`)."""
    BAD_OBSERVED_AT = "bad_observed_at"
    """`observed_at` is NaN or infinite."""
    OBSERVED_BEFORE_DECISION = "observed_before_decision"
    LAG_TOO_LONG = "lag_too_long"
    """Observed longer after the decision than `ValueBounds.max_label_lag_s` (often: the
    observation time was sent in milliseconds)."""
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    """Same decision id as an accepted outcome, but a different value."""
    EXPIRED = "expired"
    """The decision already expired waiting for its outcome; expiry is final so counts stay put."""


class OutcomeRow(TypedDict):
    decision_id: str
    actual_latency_ms: float
    observed_at: float


OutcomeInput = OutcomeRow | Mapping[str, object] | Sequence[object]
"""A mapping with the OutcomeRow keys, or a (decision_id, actual_latency_ms, observed_at) tuple."""


class OutcomeResult(BaseModel):
    decision_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    reason: RejectReason | None = None
    detail: str | None = None
    lag_s: float | None = None
    """Seconds from the decision to the observation (accepted and duplicate only)."""
    error_ms: float | None = None
    """actual - predicted, when the decision carried a prediction."""


class OutcomeBatchResult(BaseModel):
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.accepted + self.duplicate + self.rejected


class OutcomeStats(BaseModel):
    """Where every decision and every reported outcome ended up, for dashboards and tests."""

    accepted: int
    duplicates: int
    rejected: int
    rejected_by_reason: dict[str, int]
    pending: int
    resolved: int
    expired: int


_LOOKUP_CHUNK = 900
_INF = math.inf

_INSERT_OUTCOME = (
    "INSERT INTO outcomes (decision_id, actual_latency_ms, observed_at, recorded_at, decision_ts,"
    " backend, model_version, predicted_latency_ms, lag_s, error_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_REJECTION = (
    "INSERT INTO outcome_rejections (decision_id, value, value_text, observed_at, reason,"
    " detail, at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _lookup(
    conn: sqlite3.Connection, ids: list[str]
) -> dict[str, tuple[float, float | None, str, str, str | None, float | None]]:
    """decision_id -> (ts, predicted, status, backend, model_version, stored actual or None)."""
    found: dict[str, tuple[float, float | None, str, str, str | None, float | None]] = {}
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        cursor = conn.execute(
            "SELECT d.decision_id, d.ts, d.predicted_latency_ms, d.status, d.backend,"
            " d.model_version, o.actual_latency_ms FROM decisions AS d"
            " LEFT JOIN outcomes AS o ON o.decision_id = d.decision_id"
            f" WHERE d.decision_id IN ({marks})",
            chunk,
        )
        for did, *rest in cursor:
            found[did] = tuple(rest)  # type: ignore[assignment]
    return found


def _safe_float(value: object) -> float | None:
    """Numbers, numpy scalars and numeric strings (as read from CSV) as float; else None."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:  # an int past float's range: infinite, and rejected as such
        return math.inf if value > 0 else -math.inf  # type: ignore[operator]
    except (TypeError, ValueError):
        return None


def record_outcomes(
    conn: sqlite3.Connection,
    batch: Iterable[OutcomeInput],
    *,
    now: float,
    want_results: bool = False,
    bounds: ValueBounds = DEFAULT_BOUNDS,
) -> tuple[OutcomeBatchResult, list[OutcomeResult]]:
    """Validate, join and write a batch of outcomes inside the caller's open transaction.

    Returns the counts and, when `want_results`, one `OutcomeResult` per input row in order.
    """
    rejections: list[tuple[object, ...]] = []
    results: list[OutcomeResult | None] = []
    valid: list[tuple[int, str, float, float]] = []

    def reject(
        index: int,
        did: object,
        value: object,
        observed: object,
        reason: RejectReason,
        detail: str | None = None,
    ) -> None:
        fval = _safe_float(value)
        fobs = _safe_float(observed)
        rejections.append(
            (
                did if isinstance(did, str) else (None if did is None else repr(did)),
                fval,
                repr(value),
                fobs,
                reason.value,
                detail,
                now,
            )
        )
        if want_results:
            results[index] = OutcomeResult(
                decision_id=did if isinstance(did, str) else None,
                status="rejected",
                reason=reason,
                detail=detail,
            )

    max_latency, max_lag = bounds.max_latency_ms, bounds.max_label_lag_s
    # Pass 1: shape and value checks, no I/O.
    for index, row in enumerate(batch):
        if want_results:
            results.append(None)
        try:
            if isinstance(row, Mapping):
                did = row["decision_id"]
                value = row["actual_latency_ms"]
                observed = row["observed_at"]
            else:
                did, value, observed = row
        except (KeyError, TypeError, ValueError):
            reject(
                index,
                None,
                row,
                None,
                RejectReason.MALFORMED,
                "expected decision_id, value, observed_at",
            )
            continue
        if type(did) is not str or not did:
            reject(
                index,
                did,
                value,
                observed,
                RejectReason.MALFORMED,
                "decision_id must be a non-empty string",
            )
            continue
        v = _safe_float(value)
        if v is None:
            reject(
                index,
                did,
                value,
                observed,
                RejectReason.MALFORMED,
                "actual_latency_ms is not a number",
            )
            continue
        obs = _safe_float(observed)
        if obs is None or obs != obs or obs == _INF or obs == -_INF:
            reject(
                index,
                did,
                value,
                observed,
                RejectReason.BAD_OBSERVED_AT,
                "observed_at must be finite seconds",
            )
            continue
        if v != v:
            reject(index, did, value, obs, RejectReason.NOT_A_NUMBER)
        elif v == _INF or v == -_INF:
            reject(index, did, value, obs, RejectReason.INFINITE)
        elif v < 0.0:
            reject(index, did, value, obs, RejectReason.NEGATIVE)
        elif v > max_latency:
            reject(
                index,
                did,
                value,
                obs,
                RejectReason.TOO_LARGE,
                f"{v!r} ms is above the bound of {max_latency:g} ms",
            )
        else:
            valid.append((index, did, v, obs))

    # Pass 2: join to the decisions and to outcomes already stored.
    # Sorted ids walk the decisions b-tree in order: several times faster than hash order.
    known = _lookup(conn, sorted({row[1] for row in valid}))
    accepted: list[tuple[object, ...]] = []
    duplicate_ids: list[tuple[str]] = []
    in_batch: dict[str, float] = {}
    for index, did, v, obs in valid:
        info = known.get(did)
        if info is None:
            reject(index, did, v, obs, RejectReason.UNKNOWN_DECISION)
            continue
        ts, predicted, status, backend, model_version, stored = info
        if stored is None:
            stored = in_batch.get(did)
        if stored is not None:
            if stored == v:
                duplicate_ids.append((did,))
                if want_results:
                    results[index] = OutcomeResult(
                        decision_id=did,
                        status="duplicate",
                        lag_s=obs - ts,
                        error_ms=None if predicted is None else v - predicted,
                    )
            else:
                reject(
                    index,
                    did,
                    v,
                    obs,
                    RejectReason.CONFLICTING_DUPLICATE,
                    f"already recorded {stored!r} ms",
                )
            continue
        if status == "expired":
            reject(index, did, v, obs, RejectReason.EXPIRED, "decision expired before its outcome")
            continue
        if obs < ts:
            reject(
                index,
                did,
                v,
                obs,
                RejectReason.OBSERVED_BEFORE_DECISION,
                f"observed_at {obs!r} < decision ts {ts!r}",
            )
            continue
        lag = obs - ts
        if lag > max_lag:
            hint = " (observed_at in milliseconds?)" if obs > 1e11 else ""
            reject(
                index,
                did,
                v,
                obs,
                RejectReason.LAG_TOO_LONG,
                f"observed {lag:.6g} s after the decision, above the bound of {max_lag:g} s{hint}",
            )
            continue
        error = None if predicted is None else v - predicted
        accepted.append((did, v, obs, now, ts, backend, model_version, predicted, lag, error))
        in_batch[did] = v
        if want_results:
            results[index] = OutcomeResult(
                decision_id=did, status="accepted", lag_s=lag, error_ms=error
            )

    # Pass 3: write. Duplicates update after inserts: they may point at a row from this batch.
    if accepted:
        accepted.sort(key=itemgetter(0))  # key order: in-order b-tree inserts and updates
        conn.executemany(_INSERT_OUTCOME, accepted)
        conn.executemany(
            "UPDATE decisions SET status = 'resolved' WHERE decision_id = ?",
            [(row[0],) for row in accepted],
        )
    if duplicate_ids:
        conn.executemany(
            "UPDATE outcomes SET duplicates = duplicates + 1 WHERE decision_id = ?", duplicate_ids
        )
    if rejections:
        conn.executemany(_INSERT_REJECTION, rejections)

    by_reason = Counter(r[4] for r in rejections)
    summary = OutcomeBatchResult(
        accepted=len(accepted),
        duplicate=len(duplicate_ids),
        rejected=len(rejections),
        rejected_by_reason=dict(by_reason),
    )
    return summary, [r for r in results if r is not None]


def expire_pending(conn: sqlite3.Connection, *, now_ts: float, max_age_s: float) -> int:
    """Mark decisions still waiting after `max_age_s` as expired; return how many."""
    if not (math.isfinite(now_ts) and math.isfinite(max_age_s)) or max_age_s <= 0:
        raise ValueError("now_ts must be finite and max_age_s finite and > 0")
    cursor = conn.execute(
        "UPDATE decisions SET status = 'expired', expired_at = ?"
        " WHERE status = 'pending' AND ts < ?",
        (now_ts, now_ts - max_age_s),
    )
    return cursor.rowcount


def outcome_stats(conn: sqlite3.Connection) -> OutcomeStats:
    accepted, duplicates = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(duplicates), 0) FROM outcomes"
    ).fetchone()
    by_reason = dict(
        conn.execute(
            "SELECT reason, COUNT(*) FROM outcome_rejections GROUP BY reason ORDER BY reason"
        ).fetchall()
    )
    (pending,) = conn.execute("SELECT COUNT(*) FROM decisions WHERE status = 'pending'").fetchone()
    (expired,) = conn.execute("SELECT COUNT(*) FROM decisions WHERE status = 'expired'").fetchone()
    return OutcomeStats(
        accepted=accepted,
        duplicates=duplicates,
        rejected=sum(by_reason.values()),
        rejected_by_reason=by_reason,
        pending=pending,
        resolved=accepted,
        expired=expired,
    )
