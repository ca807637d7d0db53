"""Read queries the context API needs and the Store does not offer, written over `store.conn`.

Why here and not in the Store: these are read-only shapes for the agents (a fleet snapshot, SLA
violations per time bucket, the router's cached forecasts at a time), not storage primitives.
Every query is chosen to use an existing index, because `decisions` is large (a demo writes
hundreds of thousands of rows) and has no index on time for resolved rows:

- resolved decisions are reached through `outcomes.decision_ts` (indexed), joined back to
  `decisions` by primary key;
- decisions still waiting for their outcome through the partial index over pending ones;
- expired ones (rare) through their own partial index.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from context_api.store import Store
from tools.telemetry import TelemetryPoint


def rows(
    store: Store, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
) -> list[dict[str, Any]]:
    """Rows as dicts (positional `?` or named `:name` parameters). Reads share the Store's one
    connection."""
    with _locked(store):
        cur = store.conn.execute(sql, params if isinstance(params, Mapping) else list(params))
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def scalar(store: Store, sql: str, params: Sequence[Any] = ()) -> Any:
    with _locked(store):
        row = store.conn.execute(sql, list(params)).fetchone()
    return None if row is None else row[0]


def tuples(store: Store, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with _locked(store):
        return store.conn.execute(sql, list(params)).fetchall()


def first(store: Store, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    found = tuples(store, sql, params)
    return found[0] if found else None


def _locked(store: Store) -> Any:
    """The Store's connection lock: a trace writer thread may share the connection."""
    return getattr(store, "_lock", None) or contextlib.nullcontext()


# --- telemetry ---------------------------------------------------------------------------------


def latest_telemetry_ts(store: Store) -> float | None:
    """The newest telemetry time in the file: the context API's default "now"."""
    value = scalar(store, "SELECT MAX(ts) FROM telemetry")
    return None if value is None else float(value)


def telemetry_backends(store: Store) -> list[str]:
    return [r["backend"] for r in rows(store, "SELECT DISTINCT backend FROM telemetry ORDER BY 1")]


def latest_points(store: Store, at: float) -> dict[str, TelemetryPoint]:
    """Each backend's newest telemetry point at or before `at` (index backend, ts)."""
    out: dict[str, TelemetryPoint] = {}
    for backend in telemetry_backends(store):
        row = first(
            store,
            "SELECT ts, backend, rps, p50_ms, p95_ms, error_rate, in_flight, load_known"
            " FROM telemetry WHERE backend = ? AND ts <= ? ORDER BY ts DESC, id DESC LIMIT 1",
            (backend, at),
        )
        if row is not None:
            out[backend] = TelemetryPoint(*row[:7], load_known=bool(row[7]))
    return out


def telemetry_window(
    store: Store, backend: str, since: float, until: float
) -> list[TelemetryPoint]:
    """One backend's points in [since, until], oldest first, one per timestamp."""
    found = tuples(
        store,
        "SELECT ts, backend, rps, p50_ms, p95_ms, error_rate, in_flight, load_known"
        " FROM telemetry WHERE backend = ? AND ts >= ? AND ts <= ? ORDER BY ts, id",
        (backend, since, until),
    )
    points: list[TelemetryPoint] = []
    for r in found:
        if points and r[0] <= points[-1].ts:
            continue  # a duplicate tick (two sources): keep the first
        points.append(TelemetryPoint(*r[:7], load_known=bool(r[7])))
    return points


# --- decisions ---------------------------------------------------------------------------------


def latest_decision_id(store: Store, at: float, tier: str | None = None) -> str | None:
    """The newest decision at or before `at` (optionally of one tier), resolved or pending."""
    best: tuple[float, str] | None = None
    resolved = first(
        store,
        "SELECT o.decision_ts, o.decision_id FROM outcomes AS o"
        + (" JOIN decisions AS d ON d.decision_id = o.decision_id" if tier else "")
        + " WHERE o.decision_ts <= ?"
        + (" AND d.tier = ?" if tier else "")
        + " ORDER BY o.decision_ts DESC LIMIT 1",
        (at, tier) if tier else (at,),
    )
    if resolved is not None:
        best = (float(resolved[0]), resolved[1])
    pending = first(
        store,
        "SELECT ts, decision_id FROM decisions WHERE status = 'pending' AND ts <= ?"
        + (" AND tier = ?" if tier else "")
        + " ORDER BY ts DESC LIMIT 1",
        (at, tier) if tier else (at,),
    )
    if pending is not None and (best is None or pending[0] > best[0]):
        best = (float(pending[0]), pending[1])
    return None if best is None else best[1]


def decision_candidates(store: Store, decision_id: str) -> tuple[float, list[dict[str, Any]]]:
    """(decision ts, the candidate list stored with it)."""
    row = first(store, "SELECT ts, candidates FROM decisions WHERE decision_id = ?", (decision_id,))
    if row is None:
        return math.nan, []
    cands = json.loads(row[1]) if row[1] else []
    return float(row[0]), cands if isinstance(cands, list) else []


_DECISION_WINDOW = """
WITH w AS (
    SELECT d.decision_id, d.ts, d.backend, d.tier, d.sla_ms, d.ambiguous, d.policy, d.reason,
           o.actual_latency_ms AS actual, 'resolved' AS status
    FROM outcomes AS o JOIN decisions AS d ON d.decision_id = o.decision_id
    WHERE o.decision_ts >= :since AND o.decision_ts < :until
    UNION ALL
    SELECT decision_id, ts, backend, tier, sla_ms, ambiguous, policy, reason, NULL, status
    FROM decisions WHERE status = 'pending' AND ts >= :since AND ts < :until
    UNION ALL
    SELECT decision_id, ts, backend, tier, sla_ms, ambiguous, policy, reason, NULL, status
    FROM decisions WHERE status = 'expired' AND expired_at IS NOT NULL
        AND ts >= :since AND ts < :until
)
"""


def sla_buckets(
    store: Store, since: float, until: float, bucket_s: float, default_sla_ms: float
) -> list[dict[str, Any]]:
    """Decisions per time bucket: total, over their SLA, without an outcome, escalated.

    A decision counts as a violation when its outcome exceeded its SLA, or when no outcome was
    ever reported for it (the replay reports no latency for a failed request, and a service
    whose call failed has none to report): both are requests that did not get a good answer.
    """
    sql = (
        _DECISION_WINDOW
        + """
    SELECT CAST((ts - :since) / :bucket AS INTEGER) AS k,
           COUNT(*) AS n,
           SUM(CASE WHEN actual IS NOT NULL AND actual > COALESCE(sla_ms, :sla) THEN 1 ELSE 0 END)
               AS over_sla,
           SUM(CASE WHEN actual IS NULL THEN 1 ELSE 0 END) AS no_outcome,
           SUM(ambiguous) AS ambiguous,
           SUM(CASE WHEN policy = 'router_agent' THEN 1 ELSE 0 END) AS agent_decided
    FROM w GROUP BY k ORDER BY k
    """
    )
    params = {"since": since, "until": until, "bucket": bucket_s, "sla": default_sla_ms}
    return rows(store, sql, params)


def sla_by_backend(
    store: Store, since: float, until: float, default_sla_ms: float
) -> list[dict[str, Any]]:
    """Per backend over a window: decisions, violations (as in `sla_buckets`), mean latency."""
    sql = (
        _DECISION_WINDOW
        + """
    SELECT backend, COUNT(*) AS n,
           SUM(CASE WHEN actual IS NOT NULL AND actual > COALESCE(sla_ms, :sla) THEN 1 ELSE 0 END)
               AS over_sla,
           SUM(CASE WHEN actual IS NULL THEN 1 ELSE 0 END) AS no_outcome,
           AVG(actual) AS mean_latency_ms
    FROM w GROUP BY backend ORDER BY backend
    """
    )
    return rows(store, sql, {"since": since, "until": until, "sla": default_sla_ms})


def recent_decisions(
    store: Store,
    since: float,
    until: float,
    *,
    backend: str | None = None,
    ambiguous_only: bool = False,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The newest decisions in a window (optionally one backend's, or ambiguous ones only)."""
    sql = _DECISION_WINDOW + "SELECT * FROM w WHERE 1 = 1"
    params: dict[str, Any] = {"since": since, "until": until, "limit": int(limit)}
    if backend is not None:
        sql += " AND backend = :backend"
        params["backend"] = backend
    if ambiguous_only:
        sql += " AND ambiguous = 1"
    sql += " ORDER BY ts DESC, decision_id DESC LIMIT :limit"
    return rows(store, sql, params)


def abs_errors_per_tick(store: Store, since: float, until: float) -> list[dict[str, Any]]:
    """Mean absolute forecast error per (backend, decision tick) in a window, oldest first.

    One value per tick and backend: the requests of one tick share one forecast, so their
    errors are far from independent; tests on per-request errors would overstate significance.
    """
    return rows(
        store,
        "SELECT backend, decision_ts AS ts, AVG(ABS(error_ms)) AS mae, COUNT(*) AS n,"
        " AVG(predicted_latency_ms) AS predicted"
        " FROM outcomes WHERE decision_ts >= ? AND decision_ts < ? AND error_ms IS NOT NULL"
        " GROUP BY backend, decision_ts ORDER BY decision_ts, backend",
        (since, until),
    )


def outcomes_since(store: Store, since: float) -> int:
    return int(scalar(store, "SELECT COUNT(*) FROM outcomes WHERE decision_ts >= ?", (since,)) or 0)


def table_counts(store: Store) -> dict[str, int]:
    """Row counts that tell whether there is anything to talk about."""
    out = {}
    for table in ("telemetry", "outcomes", "drift_reports", "anomalies", "experiments", "alerts"):
        out[table] = int(scalar(store, f"SELECT COUNT(*) FROM {table}") or 0)
    for status in ("pending", "expired"):  # each has a partial index
        out[f"decisions_{status}"] = int(
            scalar(store, f"SELECT COUNT(*) FROM decisions WHERE status = '{status}'") or 0
        )
    out["decisions"] = out["outcomes"] + out["decisions_pending"] + out["decisions_expired"]
    return out


def telemetry_summary(store: Store, since: float, until: float) -> dict[str, dict[str, float]]:
    out = {}
    for r in rows(
        store,
        "SELECT backend, AVG(p95_ms) AS p95, MAX(error_rate) AS err FROM telemetry"
        " WHERE ts >= ? AND ts < ? GROUP BY backend",
        (since, until),
    ):
        out[r["backend"]] = {"p95": r["p95"], "err": r["err"]}
    return out


def telemetry_stats(store: Store, since: float, until: float) -> dict[str, dict[str, Any]]:
    """Per backend over [since, until): ticks, latency (mean p50 and p95, max p95), errors (mean
    and max rate), load (mean rps, and whether it is known) and the time span covered."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows(
        store,
        "SELECT backend, COUNT(*) AS ticks, MIN(ts) AS first_ts, MAX(ts) AS last_ts,"
        " AVG(p50_ms) AS p50_mean, AVG(p95_ms) AS p95_mean, MAX(p95_ms) AS p95_max,"
        " AVG(error_rate) AS err_mean, MAX(error_rate) AS err_max,"
        " AVG(CASE WHEN load_known = 1 THEN rps END) AS rps_mean,"
        " MIN(load_known) AS load_known"
        " FROM telemetry WHERE ts >= ? AND ts < ? GROUP BY backend ORDER BY backend",
        (since, until),
    ):
        out[r["backend"]] = r
    return out


def ticks_over(store: Store, since: float, until: float, sla_ms: float) -> dict[str, int]:
    """Per backend: telemetry ticks whose p95 exceeded `sla_ms`."""
    return {
        r["backend"]: int(r["n"])
        for r in rows(
            store,
            "SELECT backend, COUNT(*) AS n FROM telemetry WHERE ts >= ? AND ts < ? AND p95_ms > ?"
            " GROUP BY backend",
            (since, until, sla_ms),
        )
    }
