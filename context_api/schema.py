"""The store's schema as an ordered list of migrations.

A database file records which migrations it has seen in `schema_version`. Opening a file runs the
missing ones in order, each in its own transaction together with its `schema_version` row, so a
crash mid-upgrade leaves the file at the previous version, never half-way. Changing the schema
means appending a migration here: never edit one that has shipped, since files in the field
already hold its result.

Design choices that the statements encode:

- `decisions` and `outcomes` are `WITHOUT ROWID` tables keyed by `decision_id`: one b-tree per
  table instead of two, which is what lets `insert_decisions` pass 200k rows/s.
- `decisions` carries only partial secondary indexes: one over *pending* decisions, so expiring
  stale predictions never scans the resolved history, and one over the (rare) expired ones.
  Time-window queries over resolved decisions go through `outcomes`, which copies the
  decision's time, backend and model version (fixed once written) and indexes the time.
- CHECKs on hot tables are written with OR, not `IN (...)`: SQLite builds an ephemeral table
  for an IN list on every row of an `executemany`, which cost 30% of decision insert time.
- Tables are STRICT: a value of the wrong type (text in a REAL column) is refused at insert
  instead of surfacing later as a crash in arithmetic. It costs nothing measurable.
- Timestamps are unix seconds (REAL). JSON columns are TEXT holding compact JSON.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class SchemaTooNewError(RuntimeError):
    """The file was written by a newer Arcpoint than this one; we must not guess at its schema."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    apply: Callable[[sqlite3.Connection], None] | None = field(default=None)
    """Optional data step run after the statements, inside the same transaction."""


_V1_CORE = (
    """
    CREATE TABLE decisions (
        decision_id TEXT PRIMARY KEY NOT NULL,
        ts REAL NOT NULL,
        request_id TEXT,
        tier TEXT,
        sla_ms REAL,
        backend TEXT NOT NULL,
        policy TEXT,
        reason TEXT,
        ambiguous INTEGER NOT NULL DEFAULT 0,
        ambiguous_reason TEXT,
        model_version TEXT,
        predicted_latency_ms REAL,
        predicted_lo_ms REAL,
        predicted_hi_ms REAL,
        candidates TEXT,
        run_id TEXT,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status = 'pending' OR status = 'resolved' OR status = 'expired'),
        expired_at REAL
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX decisions_pending_ts ON decisions (ts) WHERE status = 'pending'",
    "CREATE INDEX decisions_expired ON decisions (expired_at) WHERE status = 'expired'",
    """
    CREATE TABLE outcomes (
        decision_id TEXT PRIMARY KEY NOT NULL REFERENCES decisions (decision_id),
        actual_latency_ms REAL NOT NULL,
        observed_at REAL NOT NULL,
        recorded_at REAL NOT NULL,
        decision_ts REAL NOT NULL,
        backend TEXT NOT NULL,
        model_version TEXT,
        predicted_latency_ms REAL,
        lag_s REAL NOT NULL,
        error_ms REAL,
        duplicates INTEGER NOT NULL DEFAULT 0
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX outcomes_decision_ts ON outcomes (decision_ts)",
    """
    CREATE TABLE outcome_rejections (
        id INTEGER PRIMARY KEY,
        decision_id TEXT,
        value REAL,
        value_text TEXT,
        observed_at REAL,
        reason TEXT NOT NULL,
        detail TEXT,
        at REAL NOT NULL
    ) STRICT
    """,
    "CREATE INDEX outcome_rejections_reason ON outcome_rejections (reason)",
    """
    CREATE TABLE telemetry (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        backend TEXT NOT NULL,
        rps REAL NOT NULL,
        p50_ms REAL NOT NULL,
        p95_ms REAL NOT NULL,
        error_rate REAL NOT NULL,
        in_flight REAL NOT NULL,
        load_known INTEGER NOT NULL DEFAULT 1,
        source TEXT,
        run_id TEXT
    ) STRICT
    """,
    "CREATE INDEX telemetry_backend_ts ON telemetry (backend, ts)",
    """
    CREATE TABLE ingest_rejections (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        line INTEGER,
        reason TEXT NOT NULL,
        raw TEXT,
        at REAL NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE model_versions (
        version_id TEXT PRIMARY KEY NOT NULL,
        parent_id TEXT,
        kind TEXT NOT NULL,
        created_at REAL NOT NULL,
        trained_from_ts REAL,
        trained_to_ts REAL,
        metrics TEXT NOT NULL DEFAULT '{}',
        artifact_path TEXT,
        status TEXT NOT NULL DEFAULT 'registered'
            CHECK (status IN ('registered', 'active', 'retired')),
        activated_at REAL,
        note TEXT
    ) STRICT
    """,
    # At most one active version per kind, enforced by the file itself.
    """
    CREATE UNIQUE INDEX model_versions_one_active ON model_versions (kind)
        WHERE status = 'active'
    """,
    """
    CREATE TABLE model_activations (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        version_id TEXT NOT NULL REFERENCES model_versions (version_id),
        previous_version_id TEXT,
        action TEXT NOT NULL DEFAULT 'activate' CHECK (action IN ('activate', 'rollback')),
        reason TEXT
    ) STRICT
    """,
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT,
        detail TEXT NOT NULL DEFAULT '{}',
        run_id TEXT
    ) STRICT
    """,
    "CREATE INDEX events_ts ON events (ts)",
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        command TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        summary TEXT,
        status TEXT NOT NULL DEFAULT 'running'
            CHECK (status IN ('running', 'finished', 'failed'))
    ) STRICT
    """,
)

_V2_MONITORING = (
    """
    CREATE TABLE drift_reports (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        model_version TEXT,
        backend TEXT,
        feature TEXT,
        test TEXT NOT NULL,
        statistic REAL,
        p_value REAL,
        severity TEXT NOT NULL
            CHECK (severity IN ('none', 'low', 'medium', 'high', 'critical')),
        n_reference INTEGER,
        n_current INTEGER,
        detail TEXT NOT NULL DEFAULT '{}',
        run_id TEXT
    ) STRICT
    """,
    "CREATE INDEX drift_reports_ts ON drift_reports (ts)",
    """
    CREATE TABLE anomalies (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        backend TEXT NOT NULL,
        score REAL NOT NULL,
        severity REAL NOT NULL CHECK (severity >= 0.0 AND severity <= 1.0),
        detector TEXT NOT NULL,
        features TEXT NOT NULL DEFAULT '{}',
        run_id TEXT
    ) STRICT
    """,
    "CREATE INDEX anomalies_ts ON anomalies (ts)",
    """
    CREATE TABLE experiments (
        experiment_id TEXT PRIMARY KEY NOT NULL,
        name TEXT,
        champion_id TEXT NOT NULL,
        challenger_id TEXT NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ('shadow', 'split')),
        status TEXT NOT NULL DEFAULT 'running'
            CHECK (status IN ('running', 'concluded', 'aborted')),
        started_at REAL NOT NULL,
        ended_at REAL,
        params TEXT NOT NULL DEFAULT '{}',
        verdict TEXT,
        winner_id TEXT,
        run_id TEXT
    ) STRICT
    """,
    """
    CREATE TABLE experiment_results (
        id INTEGER PRIMARY KEY,
        experiment_id TEXT NOT NULL REFERENCES experiments (experiment_id),
        ts REAL NOT NULL,
        n_champion INTEGER NOT NULL,
        n_challenger INTEGER NOT NULL,
        champion_mae REAL,
        challenger_mae REAL,
        p_value REAL,
        ci_lo REAL,
        ci_hi REAL,
        srm_p_value REAL,
        verdict TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    ) STRICT
    """,
    """
    CREATE TABLE experiment_predictions (
        experiment_id TEXT NOT NULL REFERENCES experiments (experiment_id),
        decision_id TEXT NOT NULL,
        arm TEXT NOT NULL CHECK (arm IN ('champion', 'challenger')),
        model_version TEXT NOT NULL,
        predicted_latency_ms REAL NOT NULL,
        routed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (experiment_id, decision_id, arm)
    ) STRICT, WITHOUT ROWID
    """,
)

_V3_ALERTS = (
    """
    CREATE TABLE alerts (
        alert_id TEXT PRIMARY KEY NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        severity TEXT NOT NULL
            CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
        evidence TEXT NOT NULL DEFAULT '{}',
        recommended_action TEXT,
        created_at REAL NOT NULL,
        dedup_key TEXT NOT NULL,
        suppressed INTEGER NOT NULL DEFAULT 0,
        suppressed_reason TEXT,
        run_id TEXT
    ) STRICT
    """,
    "CREATE INDEX alerts_created_at ON alerts (created_at)",
    "CREATE INDEX alerts_dedup ON alerts (dedup_key, created_at)",
    """
    CREATE TABLE alert_deliveries (
        alert_id TEXT NOT NULL REFERENCES alerts (alert_id),
        channel TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'delivered', 'failed', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        last_error TEXT,
        updated_at REAL NOT NULL,
        delivered_at REAL,
        PRIMARY KEY (alert_id, channel)
    ) STRICT, WITHOUT ROWID
    """,
    """
    CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at)
        WHERE state IN ('pending', 'failed')
    """,
)

_V4_ALERT_DUPLICATES = (
    # A suppressed duplicate names the alert it repeats, so occurrences can be counted by join.
    "ALTER TABLE alerts ADD COLUMN duplicate_of TEXT REFERENCES alerts (alert_id)",
    "CREATE INDEX alerts_duplicate_of ON alerts (duplicate_of) WHERE duplicate_of IS NOT NULL",
)

_V5_TRACES = (
    # Reasoning traces (context_api/traces.py, docs/traces.md): an append-only hash chain.
    # `seq` comes from AUTOINCREMENT's counter, so a deleted tail leaves a gap the next append
    # makes visible. Columns beside `content_json` are copies for SQL and Datasette; `verify`
    # checks them, and the `trace_steps` rows, against the hashed content.
    """
    CREATE TABLE traces (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        trace_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        parent_id TEXT,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        duration_s REAL NOT NULL,
        llm TEXT,
        model TEXT,
        backend TEXT,
        prompt_hash TEXT,
        final TEXT,
        fallback_reason TEXT,
        n_steps INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        content_json TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        recorded_at REAL NOT NULL
    ) STRICT
    """,
    "CREATE INDEX traces_started_at ON traces (started_at)",
    "CREATE INDEX traces_kind_started_at ON traces (kind, started_at)",
    "CREATE INDEX traces_parent_id ON traces (parent_id) WHERE parent_id IS NOT NULL",
    "CREATE INDEX traces_backend ON traces (backend) WHERE backend IS NOT NULL",
    """
    CREATE TABLE trace_steps (
        trace_id TEXT NOT NULL REFERENCES traces (trace_id),
        idx INTEGER NOT NULL,
        parent_idx INTEGER,
        type TEXT NOT NULL CHECK (type IN ('node', 'tool_call', 'llm_turn')),
        name TEXT NOT NULL,
        started_at REAL,
        duration_s REAL,
        model TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cache_read_tokens INTEGER,
        cache_write_tokens INTEGER,
        is_error INTEGER NOT NULL DEFAULT 0,
        detail_json TEXT NOT NULL,
        PRIMARY KEY (trace_id, idx)
    ) STRICT, WITHOUT ROWID
    """,
    "CREATE INDEX trace_steps_name ON trace_steps (type, name)",
    # Append-only: the application never updates or deletes a trace. (Someone editing the file
    # can drop these triggers; `arcpoint traces verify` catches what they do next.)
    """
    CREATE TRIGGER traces_no_update BEFORE UPDATE ON traces
    BEGIN SELECT RAISE(ABORT, 'traces are append-only'); END
    """,
    """
    CREATE TRIGGER traces_no_delete BEFORE DELETE ON traces
    BEGIN SELECT RAISE(ABORT, 'traces are append-only'); END
    """,
    """
    CREATE TRIGGER trace_steps_no_update BEFORE UPDATE ON trace_steps
    BEGIN SELECT RAISE(ABORT, 'trace steps are append-only'); END
    """,
    """
    CREATE TRIGGER trace_steps_no_delete BEFORE DELETE ON trace_steps
    BEGIN SELECT RAISE(ABORT, 'trace steps are append-only'); END
    """,
    # Full-text index over the trace's kind, final answer and the text of its inputs and steps.
    # A search index only (not hashed): `arcpoint traces verify --rebuild-fts` can rebuild it.
    """
    CREATE VIRTUAL TABLE traces_fts USING fts5(
        trace_id UNINDEXED, kind, final, body, tokenize = 'unicode61'
    )
    """,
)

_V6_TRACES_FTS_MERGE = (
    # FTS5 merges its index segments after every 4 by default; with one trace per transaction
    # that merge dominated the append (measured: ~2.5x the wall time per trace,
    # benchmarks/bench_traces.py). Merging after 16 keeps searches fast and appends cheap.
    "INSERT INTO traces_fts (traces_fts, rank) VALUES ('automerge', 16)",
)

_V7_RUNS_AND_UNIQUE_TELEMETRY = (
    # Runs can end interrupted (Ctrl-C, SIGTERM) or be replaced by a rerun of the same command
    # (their rows deleted, the run kept as history). SQLite cannot alter a CHECK: rebuild.
    """
    CREATE TABLE runs_v7 (
        run_id TEXT PRIMARY KEY NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        command TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        summary TEXT,
        status TEXT NOT NULL DEFAULT 'running'
            CHECK (status IN ('running', 'finished', 'failed', 'interrupted', 'replaced'))
    ) STRICT
    """,
    "INSERT INTO runs_v7 SELECT run_id, started_at, finished_at, command, params, summary, status"
    " FROM runs",
    "DROP TABLE runs",
    "ALTER TABLE runs_v7 RENAME TO runs",
    "CREATE INDEX runs_command_started_at ON runs (command, started_at)",
    # One measurement per backend and time. `scope` is '' for the real fleet (ingest, a
    # service), so two ingests of one file cannot both land; a simulated run writes its own
    # run id, since each simulated fleet is a world of its own on the same clock.
    "ALTER TABLE telemetry ADD COLUMN scope TEXT NOT NULL DEFAULT ''",
    # Rejections are summarised per (run, source, reason); only the first few are kept as rows.
    "ALTER TABLE ingest_rejections ADD COLUMN run_id TEXT",
    """
    CREATE TABLE ingest_rejection_counts (
        id INTEGER PRIMARY KEY,
        run_id TEXT,
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL CHECK (count >= 0),
        kept INTEGER NOT NULL CHECK (kept >= 0 AND kept <= count),
        first_line INTEGER,
        last_line INTEGER,
        at REAL NOT NULL
    ) STRICT
    """,
    "CREATE INDEX ingest_rejection_counts_source ON ingest_rejection_counts (source, reason)",
)


def _v7_data(conn: sqlite3.Connection) -> None:
    """Give simulated rows their run's scope, drop exact repeats, then make (backend, ts) unique.

    Rows written by anything but `ingest` under a run id were simulated. What is left repeated
    within one scope is a second copy of the same measurement (the bug this migration closes);
    the lowest id is kept and the count removed is logged as an event.
    """
    conn.execute(
        "UPDATE telemetry SET scope = run_id WHERE run_id IS NOT NULL"
        " AND run_id NOT IN (SELECT run_id FROM runs WHERE command = 'ingest')"
    )
    removed = conn.execute(
        "DELETE FROM telemetry WHERE EXISTS (SELECT 1 FROM telemetry AS t"
        " WHERE t.backend = telemetry.backend AND t.ts = telemetry.ts"
        " AND t.scope = telemetry.scope AND t.id < telemetry.id)"
    ).rowcount
    conn.execute("DROP INDEX telemetry_backend_ts")
    conn.execute("CREATE UNIQUE INDEX telemetry_backend_ts_scope ON telemetry (backend, ts, scope)")
    if removed:
        conn.execute(
            "INSERT INTO events (ts, kind, subject, detail)"
            " VALUES (?, 'migration', 'telemetry', ?)",
            (time.time(), f'{{"version":7,"duplicate_rows_removed":{int(removed)}}}'),
        )
    conn.execute(
        "INSERT INTO ingest_rejection_counts"
        " (run_id, source, reason, count, kept, first_line, last_line, at)"
        " SELECT NULL, source, reason, COUNT(*), COUNT(*), MIN(line), MAX(line), MAX(at)"
        " FROM ingest_rejections GROUP BY source, reason"
    )


_V8_APPROVALS = (
    # A proposed change to the serving model (promotion or rollback) and the operator's answer.
    # The LangGraph thread waiting at the approval interrupt is named, so an answer given from
    # another process (`arcpoint approvals`, the HTTP service) resumes it.
    """
    CREATE TABLE approvals (
        approval_id TEXT PRIMARY KEY NOT NULL,
        created_at REAL NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('promote', 'rollback')),
        model_kind TEXT NOT NULL,
        version_id TEXT NOT NULL,
        current_version_id TEXT,
        experiment_id TEXT,
        summary TEXT NOT NULL,
        evidence TEXT NOT NULL DEFAULT '{}',
        proposed_by TEXT NOT NULL,
        thread_id TEXT,
        trace_id TEXT,
        status TEXT NOT NULL DEFAULT 'pending' CHECK (
            status IN ('pending', 'approved', 'rejected', 'applied', 'superseded', 'failed')
        ),
        decided_at REAL,
        decided_by TEXT,
        reason TEXT,
        applied_at REAL,
        result TEXT
    ) STRICT
    """,
    "CREATE INDEX approvals_status ON approvals (status, created_at)",
)

_V9_OUTCOME_DETAILS = (
    # What an LLM request's outcome carries beyond its end-to-end latency (which `outcomes` holds
    # as `actual_latency_ms`): time to first token and how it ended (ok, timeout, error,
    # rejected). Written in the same transaction as the outcome row (outcome_details.py).
    """
    CREATE TABLE outcome_details (
        decision_id TEXT PRIMARY KEY NOT NULL REFERENCES outcomes (decision_id),
        ttft_ms REAL,
        status TEXT NOT NULL
            CHECK (status = 'ok' OR status = 'timeout' OR status = 'error' OR status = 'rejected')
    ) STRICT, WITHOUT ROWID
    """,
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core: decisions, outcomes, telemetry, model versions, events, runs", _V1_CORE),
    Migration(2, "monitoring: drift reports, anomalies, experiments", _V2_MONITORING),
    Migration(3, "alerts and their per-channel delivery state", _V3_ALERTS),
    Migration(4, "alerts: duplicates link to the alert they repeat", _V4_ALERT_DUPLICATES),
    Migration(5, "reasoning traces: hash-chained, with steps and full-text search", _V5_TRACES),
    Migration(6, "traces: merge the full-text index less often", _V6_TRACES_FTS_MERGE),
    Migration(
        7,
        "runs end interrupted or replaced; telemetry unique per (backend, ts, scope); "
        "ingest rejections summarised",
        _V7_RUNS_AND_UNIQUE_TELEMETRY,
        _v7_data,
    ),
    Migration(8, "approvals: proposed model changes and the operator's answers", _V8_APPROVALS),
    Migration(9, "outcomes: time to first token and status", _V9_OUTCOME_DETAILS),
)

LATEST_VERSION = MIGRATIONS[-1].version

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""


def _check_ordered(migrations: tuple[Migration, ...]) -> None:
    expected = list(range(1, len(migrations) + 1))
    if [m.version for m in migrations] != expected:
        raise ValueError("migrations must be numbered 1, 2, 3, ... without gaps")


def current_version(conn: sqlite3.Connection) -> int:
    """The highest migration applied to this file (0 for a new or foreign file)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(
    conn: sqlite3.Connection,
    *,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    target: int | None = None,
    where: str = "database",
) -> tuple[int, int]:
    """Bring the file up to `target` (default: the latest) and return (from, to) versions.

    Each step runs under `BEGIN IMMEDIATE` and re-reads the version inside the transaction, so two
    processes opening the same new file at once do not both apply a migration.
    Raises `SchemaTooNewError` when the file is ahead of the migrations this code knows.
    """
    _check_ordered(migrations)
    known = migrations[-1].version if migrations else 0
    target = known if target is None else target
    if not 0 <= target <= known:
        raise ValueError(f"target version {target} outside 0..{known}")
    start = current_version(conn)
    if start > known:
        raise SchemaTooNewError(
            f"{where} has schema version {start}, newer than the {known} this Arcpoint knows; "
            "upgrade Arcpoint or point it at another file"
        )
    version = start
    for migration in migrations:
        if migration.version > target:
            break
        if migration.version <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_VERSION_TABLE)
            if current_version(conn) >= migration.version:  # another process got here first
                conn.execute("ROLLBACK")
                version = current_version(conn)
                continue
            for statement in migration.statements:
                conn.execute(statement)
            if migration.apply is not None:
                migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version = migration.version
    return start, version
