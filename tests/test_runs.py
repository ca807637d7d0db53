"""Run bookkeeping (issue 14, points 1, 3 and 4): every run ends with a status that says how,
a rerun replaces its predecessor's rows, and the file itself refuses a second copy of a
telemetry measurement, including files written before the constraint existed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from context_api import schema
from context_api.runs import RunLog, Terminated, mark_running_interrupted
from context_api.store import Store
from tools.telemetry import TelemetryPoint


def _point(ts: float, backend: str = "b0", p95: float = 120.0) -> TelemetryPoint:
    return TelemetryPoint(ts, backend, 10.0, 80.0, p95, 0.0, 1.0)


def _statuses(db: Path) -> list[str]:
    with Store(db) as store:
        return [r.status for r in reversed(store.list_runs(limit=None))]


def test_runs_end_finished_failed_or_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with RunLog(db, "job") as run:
        run.summary = {"n": 1}
    with pytest.raises(ValueError), RunLog(db, "job"):
        raise ValueError("broken input")
    with pytest.raises(KeyboardInterrupt), RunLog(db, "job"):
        raise KeyboardInterrupt
    with pytest.raises(Terminated), RunLog(db, "job"):
        raise Terminated("signal 15")
    assert _statuses(db) == ["finished", "failed", "interrupted", "interrupted"]
    with Store(db) as store:
        runs = store.list_runs(limit=None)
        assert runs[-1].summary == {"n": 1}
        assert "broken input" in runs[-2].summary["error"]


def test_a_rerun_replaces_the_previous_runs_rows(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    for _ in range(2):
        with RunLog(db, "sim", replace_previous=True) as run, Store(db) as store:
            store.insert_telemetry(
                [_point(100.0 + 10 * i) for i in range(5)], run_id=run.run_id, simulated=True
            )
            store.record_event("chaos", run_id=run.run_id)
            store.insert_alert("anomaly", "b0", "high", run_id=run.run_id, channels=["log"])
    with RunLog(db, "other") as other, Store(db) as store:  # another command's rows stay
        store.record_event("note", run_id=other.run_id)
    with Store(db) as store:
        assert len(store.list_telemetry()) == 5
        assert len(store.list_events()) == 2
        assert len(store.list_alerts()) == 1
        replaced = [r for r in store.list_runs(limit=None) if r.status == "replaced"]
        assert len(replaced) == 1 and replaced[0].summary["deleted"]["telemetry"] == 5


def test_real_telemetry_is_stored_once_whoever_writes_it(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        points = [_point(100.0 + 10 * i) for i in range(5)]
        assert store.insert_telemetry(points, run_id="r1") == 5
        assert store.insert_telemetry(points, run_id="r2") == 0
        # Two simulated runs are two worlds on the same clock: each keeps its own.
        assert store.insert_telemetry(points, run_id="s1", simulated=True) == 5
        assert store.insert_telemetry(points, run_id="s1", simulated=True) == 0
        assert store.insert_telemetry(points, run_id="s2", simulated=True) == 5
        # The schema itself refuses a second copy, whatever code path writes it.
        with pytest.raises(sqlite3.IntegrityError), store.transaction() as conn:
            conn.execute(
                "INSERT INTO telemetry (ts, backend, rps, p50_ms, p95_ms, error_rate,"
                " in_flight) VALUES (100.0, 'b0', 1, 1, 1, 0, 0)"
            )


def test_migration_makes_an_old_file_unique(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    schema.migrate(conn, target=6)
    conn.executemany(
        "INSERT INTO runs (run_id, started_at, command, status) VALUES (?, 0, ?, 'finished')",
        [("ing1", "ingest"), ("ing2", "ingest"), ("demo1", "demo"), ("demo2", "demo")],
    )
    rows = [
        (ts, "b0", 1.0, 1.0, 2.0, 0.0, 0.0, run)
        for run in ("ing1", "ing2", "demo1", "demo2")
        for ts in (10.0, 20.0)
    ]
    conn.executemany(
        "INSERT INTO telemetry (ts, backend, rps, p50_ms, p95_ms, error_rate, in_flight, run_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute(
        "INSERT INTO ingest_rejections (source, line, reason, raw, at)"
        " VALUES ('f.csv', 3, 'duplicate', 'x', 0)"
    )
    conn.commit()
    conn.close()
    with Store(db) as store:
        assert store.schema_version == schema.LATEST_VERSION
        # The second ingest's copies go; each simulated run keeps its own timeline.
        assert len(store.list_telemetry(run_id="ing1")) == 2
        assert store.list_telemetry(run_id="ing2") == []
        assert len(store.list_telemetry(run_id="demo1")) == 2
        assert len(store.list_telemetry(run_id="demo2")) == 2
        (event,) = store.list_events(kind="migration")
        assert event.detail == {"version": 7, "duplicate_rows_removed": 2}
        assert store.ingest_rejection_counts() == {"duplicate": 1}
        assert store.insert_telemetry([_point(10.0)], run_id="ing3") == 0
    assert _statuses(db) == ["finished"] * 4


def test_running_runs_of_a_private_file_can_be_marked_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "work.db"
    with Store(db) as store:
        store.start_run("eval")
    assert mark_running_interrupted(db) == 1
    assert _statuses(db) == ["interrupted"]
