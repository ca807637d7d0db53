"""Arcpoint's durable state: one SQLite file, opened through sqlite-utils, behind a small interface.

Why these settings:

- WAL journal: readers never block the writer, so the monitors can query while the router writes.
- `synchronous=NORMAL` (default): in WAL mode a commit has written its pages to the WAL file
  (through the OS page cache) before `COMMIT` returns, so an acknowledged write survives the
  *process* being killed at any moment (tests/test_store_durability.py kills a writer with
  SIGKILL). What NORMAL gives up is the fsync per commit: an OS crash or power loss can lose the
  last commits since the previous checkpoint, never corrupt the file. Pass `synchronous="FULL"`
  when that matters more than commit latency.
- busy timeout: another process holding the write lock makes us wait (default 5 s per attempt,
  retried up to `write_wait_s`, default 30 s), not fail. Every write transaction starts with
  `BEGIN IMMEDIATE`, so the wait happens up front, where it can be retried, rather than as an
  unretryable upgrade failure half-way through.
- One connection per Store, shared by threads under a lock. Open one Store per process.

The schema lives in `context_api/schema.py` as ordered migrations; opening a file upgrades it.
`StoreProtocol` lists what the rest of Arcpoint may call, so another backend (PostgreSQL) can
stand in without touching callers.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, NotRequired, Protocol, Required, TypedDict

import orjson
import sqlite_utils
from pydantic import BaseModel, Field

from context_api import outcomes as _outcomes
from context_api import schema as _schema
from context_api.bounds import DEFAULT_BOUNDS, ValueBounds
from context_api.outcomes import (
    OutcomeBatchResult,
    OutcomeInput,
    OutcomeResult,
    OutcomeStats,
    RejectReason,
)
from context_api.schema import LATEST_VERSION, SchemaTooNewError
from tools.experiment_stats import ExperimentVerdict
from tools.telemetry import TelemetryPoint

__all__ = [
    "Alert",
    "AlertDelivery",
    "Anomaly",
    "DecisionRow",
    "DriftReport",
    "ErrorSummary",
    "Event",
    "Experiment",
    "ExperimentResult",
    "IngestRejection",
    "IngestRejectionCount",
    "ModelActivation",
    "ModelVersion",
    "OutcomeBatchResult",
    "OutcomeRejection",
    "OutcomeResult",
    "OutcomeStats",
    "RejectReason",
    "Run",
    "SchemaTooNewError",
    "Store",
    "StoreProtocol",
    "decision_row",
    "new_id",
]

Synchronous = Literal["NORMAL", "FULL", "EXTRA"]
RunStatus = Literal["running", "finished", "failed", "interrupted", "replaced"]
SEVERITY_LEVELS = ("none", "low", "medium", "high", "critical")
ALERT_SEVERITIES = ("info", "low", "medium", "high", "critical")


_ids = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.randbits(128)))


def new_id() -> str:
    """A time-ordered unique id (hex nanoseconds + 32 random bits).

    Time order keeps inserts into the `decision_id` b-tree appending at the right edge, which is
    measurably faster than random UUIDs at high rates, and sorts ids by creation. The random
    bits only separate ids made in the same nanosecond, so they come from a generator seeded
    from the OS once per process (reseeded in a forked child), not from `os.urandom` per id:
    that call releases the GIL, and on a busy server getting it back cost the event loop up
    to a thread switch interval (5 ms) for each id.
    """
    return f"{time.time_ns():016x}{_ids.getrandbits(32):08x}"


# --- JSON helpers -------------------------------------------------------------------------------

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _dumps(obj: Any) -> str:
    """Compact, valid JSON (NaN and infinities become null rather than invalid tokens)."""
    try:
        return _encode(obj)
    except ValueError:
        return _encode(_finite(obj))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# --- rows in and out ----------------------------------------------------------------------------


class DecisionRow(TypedDict):
    """One routing decision as `insert_decisions` takes it. A plain dict: built per request."""

    decision_id: Required[str]
    ts: Required[float]
    backend: Required[str]
    request_id: NotRequired[str | None]
    tier: NotRequired[str | None]
    sla_ms: NotRequired[float | None]
    policy: NotRequired[str | None]
    reason: NotRequired[str | None]
    ambiguous: NotRequired[bool | int]
    ambiguous_reason: NotRequired[str | None]
    model_version: NotRequired[str | None]
    predicted_latency_ms: NotRequired[float | None]
    predicted_lo_ms: NotRequired[float | None]
    predicted_hi_ms: NotRequired[float | None]
    candidates: NotRequired[str | list[Any] | dict[str, Any] | None]
    """A JSON string (cheapest) or a JSON-able list/dict."""
    run_id: NotRequired[str | None]


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def decision_row(decision: Any, *, run_id: str | None = None) -> DecisionRow:
    """A `DecisionRow` from a `tools.routing.Decision`; the prediction is the chosen candidate's.

    The candidates are encoded by orjson, which writes NaN and infinities as null itself: a
    serving process builds this row for every decision (on its writer thread, but holding the
    GIL the event loop needs), and the stdlib encoder with a finiteness check per field cost
    about 20 us of it."""
    chosen = decision.chosen
    candidates = [
        {
            "backend": c.backend,
            "forecast_ms": c.forecast_ms,
            "lo_ms": c.lo_ms,
            "hi_ms": c.hi_ms,
            "cost": c.cost_per_request,
            "share": c.share,
            "ejected": c.ejected,
            "p_meet_slo": c.p_meet_slo,
            "ttft_ms": c.ttft_ms,
            "ttft_lo_ms": c.ttft_lo_ms,
            "ttft_hi_ms": c.ttft_hi_ms,
            "e2e_ms": c.e2e_ms,
            "e2e_lo_ms": c.e2e_lo_ms,
            "e2e_hi_ms": c.e2e_hi_ms,
            "note": c.note,
        }
        for c in decision.candidates
    ]
    return DecisionRow(
        decision_id=decision.decision_id,
        ts=decision.ts,
        backend=decision.backend,
        request_id=decision.request_id,
        tier=decision.tier,
        sla_ms=decision.sla_ms,
        policy=decision.policy,
        reason=decision.reason,
        ambiguous=decision.ambiguous,
        ambiguous_reason=decision.ambiguous_reason,
        model_version=decision.model_version,
        predicted_latency_ms=_num(chosen.forecast_ms) if chosen else None,
        predicted_lo_ms=_num(chosen.lo_ms) if chosen else None,
        predicted_hi_ms=_num(chosen.hi_ms) if chosen else None,
        candidates=orjson.dumps(candidates).decode(),
        run_id=run_id,
    )


class OutcomeRejection(BaseModel):
    id: int
    decision_id: str | None
    value: float | None
    value_text: str | None
    observed_at: float | None
    reason: str
    detail: str | None
    at: float


class IngestRejection(BaseModel):
    id: int | None = None
    source: str
    line: int | None = None
    reason: str
    raw: str | None = None
    at: float = Field(default_factory=time.time)
    run_id: str | None = None


class IngestRejectionCount(BaseModel):
    """All rejections of one reason in one source by one run (the rows kept are a sample)."""

    source: str
    reason: str
    count: int
    kept: int
    first_line: int | None = None
    last_line: int | None = None
    run_id: str | None = None
    at: float = Field(default_factory=time.time)


class ErrorSummary(BaseModel):
    """Forecast error of resolved decisions for one group (e.g. one model version and backend)."""

    model_version: str | None = None
    backend: str | None = None
    n: int
    mae: float
    rmse: float
    bias: float
    """Mean of actual - predicted: positive means the model under-predicts latency."""
    mean_lag_s: float


class ModelVersion(BaseModel):
    version_id: str
    parent_id: str | None
    kind: str
    created_at: float
    trained_from_ts: float | None
    trained_to_ts: float | None
    metrics: dict[str, Any]
    artifact_path: str | None
    status: Literal["registered", "active", "retired"]
    activated_at: float | None
    note: str | None


class ModelActivation(BaseModel):
    id: int
    ts: float
    kind: str
    version_id: str
    previous_version_id: str | None
    action: Literal["activate", "rollback"]
    reason: str | None


class DriftReport(BaseModel):
    id: int | None = None
    ts: float
    kind: str
    """What drifted: 'data', 'prediction', 'concept' (or another detector's own name)."""
    test: str
    severity: Literal["none", "low", "medium", "high", "critical"]
    model_version: str | None = None
    backend: str | None = None
    feature: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    n_reference: int | None = None
    n_current: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None


class Anomaly(BaseModel):
    id: int | None = None
    ts: float
    backend: str
    score: float
    severity: float = Field(ge=0.0, le=1.0)
    detector: str
    features: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None


class Experiment(BaseModel):
    experiment_id: str
    name: str | None
    champion_id: str
    challenger_id: str
    mode: Literal["shadow", "split"]
    status: Literal["running", "concluded", "aborted"]
    started_at: float
    ended_at: float | None
    params: dict[str, Any]
    verdict: str | None
    winner_id: str | None
    run_id: str | None


class ExperimentResult(BaseModel):
    id: int | None = None
    experiment_id: str
    ts: float
    n_champion: int
    n_challenger: int
    verdict: str
    champion_mae: float | None = None
    challenger_mae: float | None = None
    p_value: float | None = None
    ci_lo: float | None = None
    ci_hi: float | None = None
    srm_p_value: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_verdict(
        cls,
        experiment_id: str,
        ts: float,
        verdict: ExperimentVerdict,
        detail: dict[str, Any],
        srm_p_value: float | None = None,
    ) -> ExperimentResult:
        """One look of an experiment as stored, whichever of the monitor or the tool took it."""
        return cls(
            experiment_id=experiment_id,
            ts=ts,
            n_champion=verdict.n_champion,
            n_challenger=verdict.n_challenger,
            verdict=verdict.state,
            champion_mae=verdict.mae_champion_ms,
            challenger_mae=verdict.mae_challenger_ms,
            p_value=verdict.p_value,
            ci_lo=verdict.ci_low_ms,
            ci_hi=verdict.ci_high_ms,
            srm_p_value=srm_p_value,
            detail=detail,
        )


class AlertDelivery(BaseModel):
    alert_id: str
    channel: str
    state: Literal["pending", "delivered", "failed", "dead"]
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    updated_at: float
    delivered_at: float | None


class Alert(BaseModel):
    alert_id: str
    kind: str
    subject: str
    severity: Literal["info", "low", "medium", "high", "critical"]
    evidence: dict[str, Any]
    recommended_action: str | None
    created_at: float
    dedup_key: str
    suppressed: bool
    suppressed_reason: str | None
    run_id: str | None
    duplicate_of: str | None = None
    """For a suppressed duplicate: the alert it repeats."""
    deliveries: list[AlertDelivery] = Field(default_factory=list)


class Event(BaseModel):
    id: int
    ts: float
    kind: str
    subject: str | None
    detail: dict[str, Any]
    run_id: str | None


class Run(BaseModel):
    run_id: str
    started_at: float
    finished_at: float | None
    command: str
    params: dict[str, Any]
    summary: dict[str, Any] | None
    status: RunStatus


# --- the interface ------------------------------------------------------------------------------


class StoreProtocol(Protocol):
    """What the rest of Arcpoint may ask of storage. SQLite implements it; PostgreSQL could."""

    def close(self) -> None: ...

    # decisions and outcomes
    def insert_decisions(self, rows: Iterable[DecisionRow]) -> int: ...
    def set_decision_reasons(self, reasons: Iterable[tuple[str, str]]) -> int: ...
    def get_decision(self, decision_id: str) -> dict[str, Any] | None: ...
    def record_outcome(
        self, decision_id: str, actual_latency_ms: float, observed_at: float
    ) -> OutcomeResult: ...
    def record_outcomes(self, batch: Iterable[OutcomeInput]) -> OutcomeBatchResult: ...
    def expire_pending(self, now_ts: float, max_age_s: float | None = None) -> int: ...
    def outcome_stats(self) -> OutcomeStats: ...
    def list_outcome_rejections(
        self, reason: str | None = None, limit: int = 100
    ) -> list[OutcomeRejection]: ...
    def resolved_decisions(
        self,
        since: float | None = None,
        until: float | None = None,
        *,
        backend: str | None = None,
        model_version: str | None = None,
        run_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...
    def error_summary(
        self,
        since: float | None = None,
        until: float | None = None,
        *,
        by: Sequence[Literal["model_version", "backend"]] = ("model_version", "backend"),
    ) -> list[ErrorSummary]: ...

    # telemetry and ingest
    def insert_telemetry(
        self,
        points: Iterable[TelemetryPoint],
        *,
        source: str | None = None,
        run_id: str | None = None,
        simulated: bool = False,
    ) -> int: ...
    def stored_timestamps(self, backend: str, lo: float, hi: float) -> set[float]: ...
    def list_telemetry(
        self,
        backend: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[TelemetryPoint]: ...
    def record_ingest_rejections(
        self,
        rows: Iterable[IngestRejection],
        counts: Iterable[IngestRejectionCount] | None = None,
    ) -> int: ...
    def list_ingest_rejections(
        self, source: str | None = None, limit: int = 100
    ) -> list[IngestRejection]: ...
    def ingest_rejection_counts(self, source: str | None = None) -> dict[str, int]: ...

    # model versions
    def register_model_version(self, version_id: str, kind: str, **fields: Any) -> ModelVersion: ...
    def activate_model_version(
        self,
        version_id: str,
        *,
        reason: str | None = None,
        at: float | None = None,
        action: Literal["activate", "rollback"] = "activate",
    ) -> ModelVersion: ...
    def rollback_model(
        self,
        kind: str,
        *,
        to_version: str | None = None,
        reason: str = "rollback",
        at: float | None = None,
    ) -> ModelVersion: ...
    def get_model_version(self, version_id: str) -> ModelVersion | None: ...
    def active_model_version(self, kind: str) -> ModelVersion | None: ...
    def list_model_versions(self, kind: str | None = None) -> list[ModelVersion]: ...
    def model_history(self, kind: str | None = None) -> list[ModelActivation]: ...

    # monitoring
    def insert_drift_reports(self, reports: Iterable[DriftReport]) -> list[int]: ...
    def list_drift_reports(self, **filters: Any) -> list[DriftReport]: ...
    def insert_anomalies(self, anomalies: Iterable[Anomaly]) -> int: ...
    def list_anomalies(self, **filters: Any) -> list[Anomaly]: ...

    # experiments
    def create_experiment(
        self, experiment_id: str, champion_id: str, challenger_id: str, mode: str, **fields: Any
    ) -> Experiment: ...
    def get_experiment(self, experiment_id: str) -> Experiment | None: ...
    def list_experiments(self, status: str | None = None) -> list[Experiment]: ...
    def record_experiment_predictions(self, rows: Iterable[Sequence[Any]]) -> int: ...
    def experiment_errors(self, experiment_id: str) -> list[dict[str, Any]]: ...
    def record_experiment_result(self, result: ExperimentResult) -> ExperimentResult: ...
    def list_experiment_results(self, experiment_id: str) -> list[ExperimentResult]: ...
    def conclude_experiment(
        self, experiment_id: str, *, verdict: str, winner_id: str | None, **fields: Any
    ) -> Experiment: ...

    # alerts
    def insert_alert(self, kind: str, subject: str, severity: str, **fields: Any) -> Alert: ...
    def get_alert(self, alert_id: str) -> Alert | None: ...
    def alert_occurrences(self, alert_ids: Sequence[str]) -> dict[str, int]: ...
    def list_alerts(self, **filters: Any) -> list[Alert]: ...
    def last_alert(self, dedup_key: str, *, include_suppressed: bool = False) -> Alert | None: ...
    def update_delivery(self, alert_id: str, channel: str, **fields: Any) -> AlertDelivery: ...
    def due_deliveries(
        self, now: float, channel: str | None = None, limit: int = 100
    ) -> list[AlertDelivery]: ...

    # timeline and runs
    def record_event(self, kind: str, **fields: Any) -> int: ...
    def list_events(self, **filters: Any) -> list[Event]: ...
    def start_run(self, command: str, **fields: Any) -> Run: ...
    def finish_run(self, run_id: str, **fields: Any) -> Run: ...
    def get_run(self, run_id: str) -> Run | None: ...
    def list_runs(self, limit: int | None = 20, *, command: str | None = None) -> list[Run]: ...
    def delete_run_rows(self, run_id: str) -> dict[str, int]: ...
    def replace_runs(self, command: str, *, keep: str) -> list[Run]: ...


# --- the SQLite store ---------------------------------------------------------------------------

_DECISION_COLUMNS = (
    "decision_id",
    "ts",
    "request_id",
    "tier",
    "sla_ms",
    "backend",
    "policy",
    "reason",
    "ambiguous",
    "ambiguous_reason",
    "model_version",
    "predicted_latency_ms",
    "predicted_lo_ms",
    "predicted_hi_ms",
    "candidates",
    "run_id",
)
_INSERT_DECISION = (
    f"INSERT INTO decisions ({', '.join(_DECISION_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_DECISION_COLUMNS))})"
    " ON CONFLICT (decision_id) DO NOTHING"
)


def _where(clauses: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """SQL WHERE from (fragment, value) pairs, skipping pairs whose value is None."""
    parts = [frag for frag, value in clauses if value is not None]
    params = [value for _, value in clauses if value is not None]
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def _limit(limit: int | None) -> str:
    if limit is None:
        return ""
    if limit < 0:
        raise ValueError("limit must be >= 0")
    return f" LIMIT {int(limit)}"


class Store:
    """The SQLite implementation of `StoreProtocol`.

    `Store(path)` opens (creating and migrating) the file. Use as a context manager or call
    `close()`. `outcome_max_age_s` is the default age after which `expire_pending` gives up on an
    outcome. `migrate=False` refuses to touch an out-of-date file instead of upgrading it.
    `bounds` are the physical limits outcomes are checked against (context_api/bounds.py).
    """

    def __init__(
        self,
        path: str | Path = "arcpoint.db",
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_s: float = 5.0,
        outcome_max_age_s: float = 3600.0,
        migrate: bool = True,
        bounds: ValueBounds = DEFAULT_BOUNDS,
        write_wait_s: float = 30.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be NORMAL, FULL or EXTRA (OFF would lose commits)")
        if not (math.isfinite(outcome_max_age_s) and outcome_max_age_s > 0):
            raise ValueError("outcome_max_age_s must be finite and > 0")
        self.path = str(path)
        self.outcome_max_age_s = float(outcome_max_age_s)
        self.bounds = bounds
        self.write_wait_s = float(write_wait_s)
        self._lock = threading.RLock()
        self._savepoints = itertools.count()
        conn = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False)
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        self.conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if self.path != ":memory:":
                self.db.enable_wal()
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB
            conn.execute("PRAGMA temp_store = MEMORY")
            if migrate:
                _schema.migrate(conn, where=self.path)
            else:
                version = _schema.current_version(conn)
                if version > LATEST_VERSION:
                    raise SchemaTooNewError(
                        f"{self.path} has schema version {version}, newer than {LATEST_VERSION}"
                    )
                if version < LATEST_VERSION:
                    raise RuntimeError(
                        f"{self.path} has schema version {version} < {LATEST_VERSION}; "
                        "open it with migrate=True to upgrade"
                    )
        except BaseException:
            conn.close()
            raise

    # -- lifecycle and transactions --

    def close(self) -> None:
        with self._lock:
            with suppress(sqlite3.Error):
                self.conn.execute("PRAGMA optimize")
            self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return _schema.current_version(self.conn)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (`BEGIN IMMEDIATE`); nested use becomes a savepoint.

        Every Store write runs inside one, so callers may group several writes atomically.
        """
        with self._lock:
            conn = self.conn
            if conn.in_transaction:
                name = f"arcpoint_sp{next(self._savepoints)}"
                conn.execute(f"SAVEPOINT {name}")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute(f"ROLLBACK TO {name}")
                        conn.execute(f"RELEASE {name}")
                    raise
                else:
                    conn.execute(f"RELEASE {name}")
                return
            self._begin_write(conn)
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def _begin_write(self, conn: sqlite3.Connection) -> None:
        """`BEGIN IMMEDIATE`, waiting up to `write_wait_s` for another writer to finish.

        SQLite's busy timeout covers one attempt; a writer that keeps the lock longer (a large
        ingest between its chunks, a migration) is waited for again, within the bound, so a
        short write (a reasoning trace) is never lost to a busy file.
        """
        deadline = time.monotonic() + self.write_wait_s
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, list(params)))

    # -- decisions and outcomes --

    def insert_decisions(self, rows: Iterable[DecisionRow]) -> int:
        """Insert decisions in one transaction; returns how many were new.

        An id already stored is skipped (a retried write is idempotent). A malformed row (no id,
        non-finite ts, no backend) raises ValueError naming its index, and a value of the wrong
        type in another column raises ValueError too; either way nothing is written.
        """
        encode = _dumps
        values: list[tuple[Any, ...]] = []
        append = values.append
        for i, r in enumerate(rows):
            try:
                did = r["decision_id"]
                ts = r["ts"]
                backend = r["backend"]
                if type(did) is not str or not did:
                    raise ValueError("decision_id must be a non-empty string")
                if ts - ts != 0.0:  # NaN or infinite
                    raise ValueError(f"ts must be finite, got {ts!r}")
                if type(backend) is not str or not backend:
                    raise ValueError("backend must be a non-empty string")
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"decision row {i}: {exc!s}") from None
            g = r.get
            cand = g("candidates")
            if cand is not None and type(cand) is not str:
                cand = encode(cand)
            append(
                (
                    did,
                    ts,
                    g("request_id"),
                    g("tier"),
                    g("sla_ms"),
                    backend,
                    g("policy"),
                    g("reason"),
                    1 if g("ambiguous") else 0,
                    g("ambiguous_reason"),
                    g("model_version"),
                    g("predicted_latency_ms"),
                    g("predicted_lo_ms"),
                    g("predicted_hi_ms"),
                    cand,
                    g("run_id"),
                )
            )
        try:
            with self.transaction() as conn:
                before = conn.total_changes
                conn.executemany(_INSERT_DECISION, values)
                return conn.total_changes - before
        except sqlite3.IntegrityError as exc:  # a wrong type in an optional column (STRICT)
            raise ValueError(f"decisions refused, nothing written: {exc}") from None

    def set_decision_reasons(self, reasons: Iterable[tuple[str, str]]) -> int:
        """Replace stored decisions' reasons, given as (decision_id, reason) (an advisory
        escalation settled after its decision was written); returns how many rows changed."""
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "UPDATE decisions SET reason = ? WHERE decision_id = ?",
                [(reason, did) for did, reason in reasons],
            )
            return conn.total_changes - before

    def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        """The decision with its outcome columns (None when no outcome yet)."""
        rows = self._query(
            "SELECT d.*, o.actual_latency_ms, o.observed_at, o.lag_s, o.error_ms, o.duplicates"
            " FROM decisions AS d LEFT JOIN outcomes AS o ON o.decision_id = d.decision_id"
            " WHERE d.decision_id = ?",
            [decision_id],
        )
        if not rows:
            return None
        row = rows[0]
        row["candidates"] = _loads(row["candidates"])
        row["ambiguous"] = bool(row["ambiguous"])
        return row

    def record_outcome(
        self, decision_id: str, actual_latency_ms: float, observed_at: float
    ) -> OutcomeResult:
        """Join one late outcome to its decision. Committed (durable) when this returns."""
        with self.transaction() as conn:
            _, results = _outcomes.record_outcomes(
                conn,
                [(decision_id, actual_latency_ms, observed_at)],
                now=time.time(),
                want_results=True,
                bounds=self.bounds,
            )
        return results[0]

    def record_outcomes(self, batch: Iterable[OutcomeInput]) -> OutcomeBatchResult:
        """Batch form of `record_outcome`: one transaction, counts by status and reason."""
        with self.transaction() as conn:
            summary, _ = _outcomes.record_outcomes(conn, batch, now=time.time(), bounds=self.bounds)
        return summary

    def expire_pending(self, now_ts: float, max_age_s: float | None = None) -> int:
        """Expire decisions older than `max_age_s` (default: the Store's) still lacking an outcome.

        The count is returned, visible in `outcome_stats().expired`, and logged as an event.
        """
        age = self.outcome_max_age_s if max_age_s is None else max_age_s
        with self.transaction() as conn:
            n = _outcomes.expire_pending(conn, now_ts=now_ts, max_age_s=age)
            if n:
                self.record_event(
                    "outcomes_expired",
                    subject="decisions",
                    detail={"count": n, "max_age_s": age},
                    ts=now_ts,
                )
        return n

    def outcome_stats(self) -> OutcomeStats:
        with self._lock:
            return _outcomes.outcome_stats(self.conn)

    def list_outcome_rejections(
        self, reason: str | None = None, limit: int = 100
    ) -> list[OutcomeRejection]:
        where, params = _where([("reason = ?", reason)])
        rows = self._query(
            f"SELECT * FROM outcome_rejections{where} ORDER BY id DESC{_limit(limit)}", params
        )
        return [OutcomeRejection(**r) for r in rows]

    def resolved_decisions(
        self,
        since: float | None = None,
        until: float | None = None,
        *,
        backend: str | None = None,
        model_version: str | None = None,
        run_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Decisions with their outcomes, by decision time in [since, until), oldest first."""
        where, params = _where(
            [
                ("o.decision_ts >= ?", since),
                ("o.decision_ts < ?", until),
                ("o.backend = ?", backend),
                ("o.model_version = ?", model_version),
                ("d.run_id = ?", run_id),
            ]
        )
        return self._query(
            "SELECT d.decision_id, d.ts, d.request_id, d.tier, d.sla_ms, d.backend, d.policy,"
            " d.reason, d.ambiguous, d.model_version, d.predicted_latency_ms, d.predicted_lo_ms,"
            " d.predicted_hi_ms, d.run_id, o.actual_latency_ms, o.observed_at, o.lag_s,"
            " o.error_ms FROM outcomes AS o JOIN decisions AS d ON d.decision_id = o.decision_id"
            f"{where} ORDER BY o.decision_ts{_limit(limit)}",
            params,
        )

    def error_summary(
        self,
        since: float | None = None,
        until: float | None = None,
        *,
        by: Sequence[Literal["model_version", "backend"]] = ("model_version", "backend"),
    ) -> list[ErrorSummary]:
        """MAE, RMSE, bias and mean lag of resolved decisions grouped by version and/or backend."""
        groups = [g for g in by if g in ("model_version", "backend")]
        if len(groups) != len(by):
            raise ValueError("group by model_version and/or backend")
        where, params = _where([("decision_ts >= ?", since), ("decision_ts < ?", until)])
        where = (where + " AND " if where else " WHERE ") + "error_ms IS NOT NULL"
        cols = ", ".join(groups)
        select = (cols + ", ") if groups else ""
        group = f" GROUP BY {cols} ORDER BY {cols}" if groups else ""
        rows = self._query(
            f"SELECT {select}COUNT(*) AS n, AVG(ABS(error_ms)) AS mae,"
            " AVG(error_ms * error_ms) AS mse, AVG(error_ms) AS bias, AVG(lag_s) AS mean_lag_s"
            f" FROM outcomes{where}{group}",
            params,
        )
        out = []
        for r in rows:
            if not r["n"]:
                continue
            mse = r.pop("mse")
            out.append(ErrorSummary(rmse=math.sqrt(mse), **r))
        return out

    # -- telemetry and ingest --

    def insert_telemetry(
        self,
        points: Iterable[TelemetryPoint],
        *,
        source: str | None = None,
        run_id: str | None = None,
        simulated: bool = False,
    ) -> int:
        """Store telemetry points (already validated at ingest) in one transaction.

        The file holds one measurement per backend and time: a point whose (backend, ts) is
        already stored is skipped, and the count returned is of rows newly stored. Real
        telemetry (the default) shares one scope; a simulated run (`simulated=True`, with its
        `run_id`) is a fleet of its own, unique within the run.
        """
        if simulated and not run_id:
            raise ValueError("simulated telemetry needs its run_id")
        scope = run_id if simulated else ""
        values = [
            (
                p.ts,
                p.backend,
                p.rps,
                p.p50_ms,
                p.p95_ms,
                p.error_rate,
                p.in_flight,
                1 if p.load_known else 0,
                source,
                run_id,
                scope,
            )
            for p in points
        ]
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO telemetry (ts, backend, rps, p50_ms, p95_ms, error_rate, in_flight,"
                " load_known, source, run_id, scope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                values,
            )
            return conn.total_changes - before

    def stored_timestamps(self, backend: str, lo: float, hi: float) -> set[float]:
        """Real-fleet timestamps already stored for `backend` in [lo, hi] (an index range)."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT ts FROM telemetry WHERE backend = ? AND ts >= ? AND ts <= ? AND scope = ''",
                (backend, lo, hi),
            ).fetchall()
        return {r[0] for r in rows}

    def list_telemetry(
        self,
        backend: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        *,
        run_id: str | None = None,
    ) -> list[TelemetryPoint]:
        """Telemetry in [since, until), oldest first (by ts, then insertion)."""
        where, params = _where(
            [
                ("backend = ?", backend),
                ("ts >= ?", since),
                ("ts < ?", until),
                ("run_id = ?", run_id),
            ]
        )
        with self._lock:
            rows = self.conn.execute(
                "SELECT ts, backend, rps, p50_ms, p95_ms, error_rate, in_flight, load_known"
                f" FROM telemetry{where} ORDER BY ts, id{_limit(limit)}",
                params,
            ).fetchall()
        return [TelemetryPoint(*r[:7], load_known=bool(r[7])) for r in rows]

    def record_ingest_rejections(
        self,
        rows: Iterable[IngestRejection],
        counts: Iterable[IngestRejectionCount] | None = None,
    ) -> int:
        """Store rejected rows and, per (source, reason), how many there were in all.

        Without `counts`, each row counts for itself. Returns the rows stored.
        """
        values = [(r.source, r.line, r.reason, r.raw, r.at, r.run_id) for r in rows]
        if counts is None:
            tally: dict[tuple[str, str, str | None], list[Any]] = {}
            for source, line, reason, _, at, run_id in values:
                entry = tally.setdefault((source, reason, run_id), [0, line, line, at])
                entry[0] += 1
                entry[1] = line if entry[1] is None or (line or 0) < entry[1] else entry[1]
                entry[2] = line if entry[2] is None or (line or 0) > entry[2] else entry[2]
            counts = [
                IngestRejectionCount(
                    source=s,
                    reason=r,
                    count=n,
                    kept=n,
                    first_line=lo,
                    last_line=hi,
                    run_id=run,
                    at=at,
                )
                for (s, r, run), (n, lo, hi, at) in tally.items()
            ]
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO ingest_rejections (source, line, reason, raw, at, run_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )
            conn.executemany(
                "INSERT INTO ingest_rejection_counts"
                " (run_id, source, reason, count, kept, first_line, last_line, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (c.run_id, c.source, c.reason, c.count, c.kept, c.first_line, c.last_line, c.at)
                    for c in counts
                ],
            )
        return len(values)

    def list_ingest_rejections(
        self, source: str | None = None, limit: int = 100
    ) -> list[IngestRejection]:
        where, params = _where([("source = ?", source)])
        rows = self._query(
            f"SELECT * FROM ingest_rejections{where} ORDER BY id{_limit(limit)}", params
        )
        return [IngestRejection(**r) for r in rows]

    def ingest_rejection_counts(self, source: str | None = None) -> dict[str, int]:
        where, params = _where([("source = ?", source)])
        rows = self._query(
            f"SELECT reason, SUM(count) AS n FROM ingest_rejection_counts{where} GROUP BY reason",
            params,
        )
        return {r["reason"]: r["n"] for r in rows}

    # -- model versions --

    @staticmethod
    def _model(row: dict[str, Any]) -> ModelVersion:
        row["metrics"] = _loads(row["metrics"]) or {}
        return ModelVersion(**row)

    def register_model_version(
        self,
        version_id: str,
        kind: str,
        *,
        parent_id: str | None = None,
        created_at: float | None = None,
        trained_from_ts: float | None = None,
        trained_to_ts: float | None = None,
        metrics: Mapping[str, Any] | None = None,
        artifact_path: str | None = None,
        note: str | None = None,
    ) -> ModelVersion:
        """Record a trained model (status 'registered'; `activate_model_version` puts it live)."""
        if not version_id or not kind:
            raise ValueError("version_id and kind are required")
        if parent_id is not None and self.get_model_version(parent_id) is None:
            raise ValueError(f"unknown parent model version {parent_id!r}")
        with self.transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO model_versions (version_id, parent_id, kind, created_at,"
                    " trained_from_ts, trained_to_ts, metrics, artifact_path, note)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        version_id,
                        parent_id,
                        kind,
                        time.time() if created_at is None else created_at,
                        trained_from_ts,
                        trained_to_ts,
                        _dumps(dict(metrics or {})),
                        artifact_path,
                        note,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"model version {version_id!r} already exists") from None
        version = self.get_model_version(version_id)
        assert version is not None
        return version

    def activate_model_version(
        self,
        version_id: str,
        *,
        reason: str | None = None,
        at: float | None = None,
        action: Literal["activate", "rollback"] = "activate",
    ) -> ModelVersion:
        """Make this version the active one of its kind (retiring the previous), atomically.

        Writes the activation history and a 'model_change' event in the same transaction.
        Activating the version already active changes nothing.
        """
        ts = time.time() if at is None else at
        with self.transaction() as conn:
            target = self.get_model_version(version_id)
            if target is None:
                raise ValueError(f"unknown model version {version_id!r}")
            previous = self.active_model_version(target.kind)
            if previous is not None and previous.version_id == version_id:
                return previous
            conn.execute(
                "UPDATE model_versions SET status = 'retired' WHERE kind = ? AND status = 'active'",
                (target.kind,),
            )
            conn.execute(
                "UPDATE model_versions SET status = 'active', activated_at = ?"
                " WHERE version_id = ?",
                (ts, version_id),
            )
            prev_id = previous.version_id if previous else None
            conn.execute(
                "INSERT INTO model_activations"
                " (ts, kind, version_id, previous_version_id, action, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (ts, target.kind, version_id, prev_id, action, reason),
            )
            self.record_event(
                "model_change",
                subject=target.kind,
                detail={
                    "version_id": version_id,
                    "previous_version_id": prev_id,
                    "action": action,
                    "reason": reason,
                },
                ts=ts,
            )
        active = self.get_model_version(version_id)
        assert active is not None
        return active

    def rollback_model(
        self,
        kind: str,
        *,
        to_version: str | None = None,
        reason: str = "rollback",
        at: float | None = None,
    ) -> ModelVersion:
        """Restore an earlier version of this kind.

        `to_version` names it; by default it is the most recently active version that was not
        itself rolled back from, so a second rollback walks further back instead of bouncing
        between two versions.
        """
        with self.transaction():
            if to_version is not None:
                target = self.get_model_version(to_version)
                if target is None or target.kind != kind:
                    raise ValueError(f"no {kind!r} model version {to_version!r}")
                return self.activate_model_version(
                    to_version, reason=reason, at=at, action="rollback"
                )
            current = self.active_model_version(kind)
            history = self.model_history(kind)
            excluded = {current.version_id} if current else set()
            excluded.update(
                h.previous_version_id
                for h in history
                if h.action == "rollback" and h.previous_version_id
            )
            for h in reversed(history):
                if h.version_id not in excluded:
                    return self.activate_model_version(
                        h.version_id, reason=reason, at=at, action="rollback"
                    )
            raise ValueError(f"no earlier active {kind!r} model to roll back to")

    def get_model_version(self, version_id: str) -> ModelVersion | None:
        rows = self._query("SELECT * FROM model_versions WHERE version_id = ?", [version_id])
        return self._model(rows[0]) if rows else None

    def active_model_version(self, kind: str) -> ModelVersion | None:
        rows = self._query(
            "SELECT * FROM model_versions WHERE kind = ? AND status = 'active'", [kind]
        )
        return self._model(rows[0]) if rows else None

    def list_model_versions(self, kind: str | None = None) -> list[ModelVersion]:
        where, params = _where([("kind = ?", kind)])
        rows = self._query(
            f"SELECT * FROM model_versions{where} ORDER BY created_at, version_id", params
        )
        return [self._model(r) for r in rows]

    def model_history(self, kind: str | None = None) -> list[ModelActivation]:
        """Every activation (including rollbacks), oldest first."""
        where, params = _where([("kind = ?", kind)])
        rows = self._query(f"SELECT * FROM model_activations{where} ORDER BY id", params)
        return [ModelActivation(**r) for r in rows]

    # -- drift reports and anomalies --

    def insert_drift_reports(self, reports: Iterable[DriftReport]) -> list[int]:
        ids = []
        with self.transaction() as conn:
            for r in reports:
                cur = conn.execute(
                    "INSERT INTO drift_reports (ts, kind, model_version, backend, feature, test,"
                    " statistic, p_value, severity, n_reference, n_current, detail, run_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.ts,
                        r.kind,
                        r.model_version,
                        r.backend,
                        r.feature,
                        r.test,
                        r.statistic,
                        r.p_value,
                        r.severity,
                        r.n_reference,
                        r.n_current,
                        _dumps(r.detail),
                        r.run_id,
                    ),
                )
                ids.append(int(cur.lastrowid or 0))
        return ids

    def list_drift_reports(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        kind: str | None = None,
        backend: str | None = None,
        model_version: str | None = None,
        min_severity: str | None = None,
        run_id: str | None = None,
        limit: int | None = 100,
    ) -> list[DriftReport]:
        """Most recent first."""
        severities = None
        if min_severity is not None:
            if min_severity not in SEVERITY_LEVELS:
                raise ValueError(f"min_severity must be one of {SEVERITY_LEVELS}")
            severities = SEVERITY_LEVELS[SEVERITY_LEVELS.index(min_severity) :]
        where, params = _where(
            [
                ("ts >= ?", since),
                ("ts < ?", until),
                ("kind = ?", kind),
                ("backend = ?", backend),
                ("model_version = ?", model_version),
                ("run_id = ?", run_id),
            ]
        )
        if severities:
            marks = ", ".join("?" * len(severities))
            where = (where + " AND " if where else " WHERE ") + f"severity IN ({marks})"
            params += list(severities)
        rows = self._query(
            f"SELECT * FROM drift_reports{where} ORDER BY ts DESC, id DESC{_limit(limit)}", params
        )
        for r in rows:
            r["detail"] = _loads(r["detail"]) or {}
        return [DriftReport(**r) for r in rows]

    def insert_anomalies(self, anomalies: Iterable[Anomaly]) -> int:
        values = [
            (a.ts, a.backend, a.score, a.severity, a.detector, _dumps(a.features), a.run_id)
            for a in anomalies
        ]
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO anomalies (ts, backend, score, severity, detector, features, run_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        return len(values)

    def list_anomalies(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        backend: str | None = None,
        min_severity: float | None = None,
        run_id: str | None = None,
        limit: int | None = 100,
    ) -> list[Anomaly]:
        """Most recent first."""
        where, params = _where(
            [
                ("ts >= ?", since),
                ("ts < ?", until),
                ("backend = ?", backend),
                ("severity >= ?", min_severity),
                ("run_id = ?", run_id),
            ]
        )
        rows = self._query(
            f"SELECT * FROM anomalies{where} ORDER BY ts DESC, id DESC{_limit(limit)}", params
        )
        for r in rows:
            r["features"] = _loads(r["features"]) or {}
        return [Anomaly(**r) for r in rows]

    # -- experiments --

    @staticmethod
    def _experiment(row: dict[str, Any]) -> Experiment:
        row["params"] = _loads(row["params"]) or {}
        return Experiment(**row)

    def create_experiment(
        self,
        experiment_id: str,
        champion_id: str,
        challenger_id: str,
        mode: str,
        *,
        name: str | None = None,
        started_at: float | None = None,
        params: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> Experiment:
        """Start a champion-vs-challenger experiment ('shadow' or 'split' mode)."""
        if mode not in ("shadow", "split"):
            raise ValueError("mode must be 'shadow' or 'split'")
        if champion_id == challenger_id:
            raise ValueError("champion and challenger must differ")
        for version in (champion_id, challenger_id):
            if self.get_model_version(version) is None:
                raise ValueError(f"unknown model version {version!r}")
        with self.transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO experiments (experiment_id, name, champion_id, challenger_id,"
                    " mode, started_at, params, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        experiment_id,
                        name,
                        champion_id,
                        challenger_id,
                        mode,
                        time.time() if started_at is None else started_at,
                        _dumps(dict(params or {})),
                        run_id,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"experiment {experiment_id!r} already exists") from None
        experiment = self.get_experiment(experiment_id)
        assert experiment is not None
        return experiment

    def get_experiment(self, experiment_id: str) -> Experiment | None:
        rows = self._query("SELECT * FROM experiments WHERE experiment_id = ?", [experiment_id])
        return self._experiment(rows[0]) if rows else None

    def list_experiments(self, status: str | None = None) -> list[Experiment]:
        where, params = _where([("status = ?", status)])
        rows = self._query(f"SELECT * FROM experiments{where} ORDER BY started_at", params)
        return [self._experiment(r) for r in rows]

    def record_experiment_predictions(self, rows: Iterable[Sequence[Any]]) -> int:
        """Store both arms' predictions: tuples of
        (experiment_id, decision_id, arm, model_version, predicted_latency_ms, routed).

        Errors come later by joining to outcomes (`experiment_errors`). A repeated
        (experiment, decision, arm) is ignored. Returns rows newly stored.
        """
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO experiment_predictions (experiment_id, decision_id, arm,"
                " model_version, predicted_latency_ms, routed) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                rows,
            )
            return conn.total_changes - before

    def experiment_errors(self, experiment_id: str) -> list[dict[str, Any]]:
        """Per arm and decision: prediction, actual latency and absolute error (resolved only)."""
        return self._query(
            "SELECT p.arm, p.decision_id, p.model_version, p.predicted_latency_ms, p.routed,"
            " o.actual_latency_ms, ABS(o.actual_latency_ms - p.predicted_latency_ms) AS abs_error,"
            " o.decision_ts FROM experiment_predictions AS p"
            " JOIN outcomes AS o ON o.decision_id = p.decision_id"
            " WHERE p.experiment_id = ? ORDER BY o.decision_ts, p.arm",
            [experiment_id],
        )

    def record_experiment_result(self, result: ExperimentResult) -> ExperimentResult:
        """Append an interim or final analysis of an experiment."""
        with self.transaction() as conn:
            if self.get_experiment(result.experiment_id) is None:
                raise ValueError(f"unknown experiment {result.experiment_id!r}")
            cur = conn.execute(
                "INSERT INTO experiment_results (experiment_id, ts, n_champion, n_challenger,"
                " champion_mae, challenger_mae, p_value, ci_lo, ci_hi, srm_p_value, verdict,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.experiment_id,
                    result.ts,
                    result.n_champion,
                    result.n_challenger,
                    result.champion_mae,
                    result.challenger_mae,
                    result.p_value,
                    result.ci_lo,
                    result.ci_hi,
                    result.srm_p_value,
                    result.verdict,
                    _dumps(result.detail),
                ),
            )
        return result.model_copy(update={"id": cur.lastrowid})

    def list_experiment_results(self, experiment_id: str) -> list[ExperimentResult]:
        rows = self._query(
            "SELECT * FROM experiment_results WHERE experiment_id = ? ORDER BY ts, id",
            [experiment_id],
        )
        for r in rows:
            r["detail"] = _loads(r["detail"]) or {}
        return [ExperimentResult(**r) for r in rows]

    def conclude_experiment(
        self,
        experiment_id: str,
        *,
        verdict: str,
        winner_id: str | None,
        status: Literal["concluded", "aborted"] = "concluded",
        ended_at: float | None = None,
    ) -> Experiment:
        """Close an experiment with its verdict. Promotion itself is `activate_model_version`."""
        ts = time.time() if ended_at is None else ended_at
        with self.transaction() as conn:
            experiment = self.get_experiment(experiment_id)
            if experiment is None:
                raise ValueError(f"unknown experiment {experiment_id!r}")
            if experiment.status != "running":
                raise ValueError(f"experiment {experiment_id!r} is already {experiment.status}")
            if winner_id not in (None, experiment.champion_id, experiment.challenger_id):
                raise ValueError("winner must be the champion, the challenger or None")
            conn.execute(
                "UPDATE experiments SET status = ?, ended_at = ?, verdict = ?, winner_id = ?"
                " WHERE experiment_id = ?",
                (status, ts, verdict, winner_id, experiment_id),
            )
            self.record_event(
                "experiment_verdict",
                subject=experiment_id,
                detail={"verdict": verdict, "winner_id": winner_id, "status": status},
                ts=ts,
                run_id=experiment.run_id,
            )
        done = self.get_experiment(experiment_id)
        assert done is not None
        return done

    # -- alerts --

    def _deliveries(self, alert_ids: Sequence[str]) -> dict[str, list[AlertDelivery]]:
        out: dict[str, list[AlertDelivery]] = {a: [] for a in alert_ids}
        if not alert_ids:
            return out
        marks = ", ".join("?" * len(alert_ids))
        for r in self._query(
            f"SELECT * FROM alert_deliveries WHERE alert_id IN ({marks}) ORDER BY channel",
            list(alert_ids),
        ):
            out[r["alert_id"]].append(AlertDelivery(**r))
        return out

    def _alerts(self, rows: list[dict[str, Any]]) -> list[Alert]:
        deliveries: dict[str, list[AlertDelivery]] = {}
        ids = [r["alert_id"] for r in rows]
        for start in range(0, len(ids), 500):
            deliveries.update(self._deliveries(ids[start : start + 500]))
        alerts = []
        for r in rows:
            r["evidence"] = _loads(r["evidence"]) or {}
            r["suppressed"] = bool(r["suppressed"])
            alerts.append(Alert(**r, deliveries=deliveries.get(r["alert_id"], [])))
        return alerts

    def insert_alert(
        self,
        kind: str,
        subject: str,
        severity: str,
        *,
        evidence: Mapping[str, Any] | None = None,
        recommended_action: str | None = None,
        dedup_key: str | None = None,
        created_at: float | None = None,
        channels: Sequence[str] = (),
        suppressed: bool = False,
        suppressed_reason: str | None = None,
        run_id: str | None = None,
        alert_id: str | None = None,
        duplicate_of: str | None = None,
    ) -> Alert:
        """Store an alert, and a pending delivery per channel unless it was suppressed.

        Every alert is stored, suppressed ones (deduplicated or rate limited) included, so the
        record is complete; only unsuppressed ones get deliveries. `dedup_key` defaults to
        "kind:subject". A suppressed duplicate may name the alert it repeats (`duplicate_of`),
        which `alert_occurrences` counts.
        """
        if severity not in ALERT_SEVERITIES:
            raise ValueError(f"severity must be one of {ALERT_SEVERITIES}")
        if duplicate_of is not None and not suppressed:
            raise ValueError("only a suppressed alert can be a duplicate of another")
        ts = time.time() if created_at is None else created_at
        alert_id = alert_id or new_id()
        with self.transaction() as conn:
            if duplicate_of is not None and self.get_alert(duplicate_of) is None:
                raise ValueError(f"unknown alert {duplicate_of!r}")
            conn.execute(
                "INSERT INTO alerts (alert_id, kind, subject, severity, evidence,"
                " recommended_action, created_at, dedup_key, suppressed, suppressed_reason,"
                " run_id, duplicate_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert_id,
                    kind,
                    subject,
                    severity,
                    _dumps(dict(evidence or {})),
                    recommended_action,
                    ts,
                    dedup_key or f"{kind}:{subject}",
                    1 if suppressed else 0,
                    suppressed_reason,
                    run_id,
                    duplicate_of,
                ),
            )
            if not suppressed:
                conn.executemany(
                    "INSERT INTO alert_deliveries (alert_id, channel, state, next_attempt_at,"
                    " updated_at) VALUES (?, ?, 'pending', ?, ?)",
                    [(alert_id, channel, ts, ts) for channel in dict.fromkeys(channels)],
                )
        alert = self.get_alert(alert_id)
        assert alert is not None
        return alert

    def get_alert(self, alert_id: str) -> Alert | None:
        rows = self._query("SELECT * FROM alerts WHERE alert_id = ?", [alert_id])
        return self._alerts(rows)[0] if rows else None

    def list_alerts(
        self,
        *,
        since: float | None = None,
        kind: str | None = None,
        subject: str | None = None,
        min_severity: str | None = None,
        include_suppressed: bool = True,
        run_id: str | None = None,
        limit: int | None = 50,
    ) -> list[Alert]:
        """Most recent first, with their deliveries."""
        clauses: list[tuple[str, Any]] = [
            ("created_at >= ?", since),
            ("kind = ?", kind),
            ("subject = ?", subject),
            ("run_id = ?", run_id),
            ("suppressed = ?", None if include_suppressed else 0),
        ]
        where, params = _where(clauses)
        if min_severity is not None:
            if min_severity not in ALERT_SEVERITIES:
                raise ValueError(f"min_severity must be one of {ALERT_SEVERITIES}")
            allowed = ALERT_SEVERITIES[ALERT_SEVERITIES.index(min_severity) :]
            where = (where + " AND " if where else " WHERE ") + (
                f"severity IN ({', '.join('?' * len(allowed))})"
            )
            params += list(allowed)
        rows = self._query(
            f"SELECT * FROM alerts{where} ORDER BY created_at DESC, alert_id DESC{_limit(limit)}",
            params,
        )
        return self._alerts(rows)

    def alert_occurrences(self, alert_ids: Sequence[str]) -> dict[str, int]:
        """How many times each alert fired: 1 + the suppressed duplicates that name it."""
        counts = dict.fromkeys(alert_ids, 1)
        ids = list(counts)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for row in self._query(
                "SELECT duplicate_of, COUNT(*) AS n FROM alerts"
                f" WHERE duplicate_of IN ({', '.join('?' * len(chunk))}) GROUP BY duplicate_of",
                chunk,
            ):
                counts[row["duplicate_of"]] += row["n"]
        return counts

    def last_alert(self, dedup_key: str, *, include_suppressed: bool = False) -> Alert | None:
        """The newest alert with this key: what dedup and rate limiting compare against."""
        extra = "" if include_suppressed else " AND suppressed = 0"
        rows = self._query(
            f"SELECT * FROM alerts WHERE dedup_key = ?{extra} ORDER BY created_at DESC LIMIT 1",
            [dedup_key],
        )
        return self._alerts(rows)[0] if rows else None

    def update_delivery(
        self,
        alert_id: str,
        channel: str,
        *,
        state: Literal["pending", "delivered", "failed", "dead"],
        attempts: int | None = None,
        next_attempt_at: float | None = None,
        last_error: str | None = None,
        at: float | None = None,
    ) -> AlertDelivery:
        """Record a delivery attempt's outcome. `attempts` defaults to one more than before.

        'failed' with a `next_attempt_at` is retried by whoever polls `due_deliveries`; 'dead'
        means the sender gave up (the alert itself stays stored).
        """
        ts = time.time() if at is None else at
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE alert_deliveries SET state = ?, attempts = COALESCE(?, attempts + 1),"
                " next_attempt_at = ?, last_error = ?, updated_at = ?,"
                " delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END"
                " WHERE alert_id = ? AND channel = ?",
                (
                    state,
                    attempts,
                    next_attempt_at if state in ("pending", "failed") else None,
                    last_error,
                    ts,
                    state,
                    ts,
                    alert_id,
                    channel,
                ),
            )
            if cur.rowcount == 0:
                raise ValueError(f"no delivery of alert {alert_id!r} on channel {channel!r}")
        rows = self._query(
            "SELECT * FROM alert_deliveries WHERE alert_id = ? AND channel = ?", [alert_id, channel]
        )
        return AlertDelivery(**rows[0])

    def due_deliveries(
        self, now: float, channel: str | None = None, limit: int = 100
    ) -> list[AlertDelivery]:
        """Pending or failed deliveries whose next attempt is due, oldest first."""
        where, params = _where([("channel = ?", channel)])
        where = (where + " AND " if where else " WHERE ") + (
            "state IN ('pending', 'failed') AND next_attempt_at <= ?"
        )
        params.append(now)
        rows = self._query(
            f"SELECT * FROM alert_deliveries{where} ORDER BY next_attempt_at{_limit(limit)}",
            params,
        )
        return [AlertDelivery(**r) for r in rows]

    # -- events and runs --

    def record_event(
        self,
        kind: str,
        *,
        subject: str | None = None,
        detail: Mapping[str, Any] | None = None,
        ts: float | None = None,
        run_id: str | None = None,
    ) -> int:
        """Append to the timeline (chaos injected, incident, model change, expiry, ...)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO events (ts, kind, subject, detail, run_id) VALUES (?, ?, ?, ?, ?)",
                (
                    time.time() if ts is None else ts,
                    kind,
                    subject,
                    _dumps(dict(detail or {})),
                    run_id,
                ),
            )
            return int(cur.lastrowid or 0)

    def list_events(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        kind: str | None = None,
        subject: str | None = None,
        run_id: str | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Oldest first: a timeline."""
        where, params = _where(
            [
                ("ts >= ?", since),
                ("ts < ?", until),
                ("kind = ?", kind),
                ("subject = ?", subject),
                ("run_id = ?", run_id),
            ]
        )
        rows = self._query(f"SELECT * FROM events{where} ORDER BY ts, id{_limit(limit)}", params)
        for r in rows:
            r["detail"] = _loads(r["detail"]) or {}
        return [Event(**r) for r in rows]

    @staticmethod
    def _run(row: dict[str, Any]) -> Run:
        row["params"] = _loads(row["params"]) or {}
        row["summary"] = _loads(row["summary"])
        return Run(**row)

    def start_run(
        self,
        command: str,
        *,
        params: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        started_at: float | None = None,
    ) -> Run:
        run_id = run_id or new_id()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, started_at, command, params) VALUES (?, ?, ?, ?)",
                (
                    run_id,
                    time.time() if started_at is None else started_at,
                    command,
                    _dumps(dict(params or {})),
                ),
            )
        run = self.get_run(run_id)
        assert run is not None
        return run

    def finish_run(
        self,
        run_id: str,
        *,
        summary: Mapping[str, Any] | None = None,
        status: Literal["finished", "failed", "interrupted"] = "finished",
        finished_at: float | None = None,
    ) -> Run:
        """Close a run. A summary of None keeps the one already stored."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET finished_at = ?, summary = COALESCE(?, summary), status = ?"
                " WHERE run_id = ?",
                (
                    time.time() if finished_at is None else finished_at,
                    None if summary is None else _dumps(dict(summary)),
                    status,
                    run_id,
                ),
            )
            if cur.rowcount == 0:
                raise ValueError(f"unknown run {run_id!r}")
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> Run | None:
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return self._run(rows[0]) if rows else None

    def list_runs(self, limit: int | None = 20, *, command: str | None = None) -> list[Run]:
        """Newest first."""
        where, params = _where([("command = ?", command)])
        rows = self._query(
            f"SELECT * FROM runs{where} ORDER BY started_at DESC, run_id DESC{_limit(limit)}",
            params,
        )
        return [self._run(r) for r in rows]

    def delete_run_rows(self, run_id: str) -> dict[str, int]:
        """Delete every row a run wrote (telemetry, decisions and their outcomes, events,
        anomalies, drift reports, experiments, alerts); the `runs` row stays as history.

        Reasoning traces are append-only and stay. Returns rows deleted per table.
        """
        statements = (
            (
                "outcomes",
                "DELETE FROM outcomes WHERE decision_id IN"
                " (SELECT decision_id FROM decisions WHERE run_id = ?)",
            ),
            (
                "experiment_predictions",
                "DELETE FROM experiment_predictions WHERE experiment_id IN"
                " (SELECT experiment_id FROM experiments WHERE run_id = ?)",
            ),
            (
                "experiment_results",
                "DELETE FROM experiment_results WHERE experiment_id IN"
                " (SELECT experiment_id FROM experiments WHERE run_id = ?)",
            ),
            ("experiments", "DELETE FROM experiments WHERE run_id = ?"),
            ("decisions", "DELETE FROM decisions WHERE run_id = ?"),
            ("telemetry", "DELETE FROM telemetry WHERE run_id = ?"),
            ("events", "DELETE FROM events WHERE run_id = ?"),
            ("anomalies", "DELETE FROM anomalies WHERE run_id = ?"),
            ("drift_reports", "DELETE FROM drift_reports WHERE run_id = ?"),
            (
                "alert_deliveries",
                "DELETE FROM alert_deliveries WHERE alert_id IN"
                " (SELECT alert_id FROM alerts WHERE run_id = ?)",
            ),
            ("alerts", "DELETE FROM alerts WHERE run_id = ?"),
            ("ingest_rejections", "DELETE FROM ingest_rejections WHERE run_id = ?"),
            ("ingest_rejection_counts", "DELETE FROM ingest_rejection_counts WHERE run_id = ?"),
        )
        deleted: dict[str, int] = {}
        with self.transaction() as conn:
            for table, sql in statements:
                n = conn.execute(sql, (run_id,)).rowcount
                if n:
                    deleted[table] = n
        return deleted

    def replace_runs(self, command: str, *, keep: str) -> list[Run]:
        """Delete the rows of every earlier run of `command` except `keep`, marking them
        'replaced' (one transaction): a rerun replaces what the last one wrote."""
        replaced = []
        with self.transaction() as conn:
            for run in self.list_runs(limit=None, command=command):
                if run.run_id == keep or run.status == "replaced":
                    continue
                deleted = self.delete_run_rows(run.run_id)
                conn.execute(
                    "UPDATE runs SET status = 'replaced', summary = ? WHERE run_id = ?",
                    (
                        _dumps({**(run.summary or {}), "replaced_by": keep, "deleted": deleted}),
                        run.run_id,
                    ),
                )
                replaced.append(run)
        return replaced
