"""The SQLite store: schema and migrations, decisions, and the tables the loop and alerts use."""

from __future__ import annotations

import inspect
import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from context_api import schema
from context_api.store import (
    Anomaly,
    DecisionRow,
    DriftReport,
    ExperimentResult,
    IngestRejection,
    SchemaTooNewError,
    Store,
    StoreProtocol,
    decision_row,
    new_id,
)
from tools.routing import Candidate, Decision
from tools.telemetry import TelemetryPoint


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "arcpoint.db")
    yield s
    s.close()


def _decisions(n: int, t0: float = 100.0) -> list[DecisionRow]:
    return [
        DecisionRow(
            decision_id=f"d{i}",
            ts=t0 + i,
            backend=("a", "b")[i % 2],
            model_version=("m1", "m2")[i % 2],
            predicted_latency_ms=100.0,
            run_id="r1",
        )
        for i in range(n)
    ]


# --- opening, settings, migrations --------------------------------------------------------------


def test_new_file_is_created_at_latest_schema_in_wal_mode(store: Store) -> None:
    assert store.schema_version == schema.LATEST_VERSION
    assert store.db.journal_mode == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    for table in (
        "telemetry",
        "ingest_rejections",
        "decisions",
        "outcomes",
        "outcome_rejections",
        "model_versions",
        "model_activations",
        "drift_reports",
        "anomalies",
        "experiments",
        "experiment_results",
        "experiment_predictions",
        "alerts",
        "alert_deliveries",
        "events",
        "runs",
        "schema_version",
    ):
        assert store.db.table(table).exists(), table
    versions = [r["version"] for r in store.db.query("SELECT version FROM schema_version")]
    assert versions == [m.version for m in schema.MIGRATIONS]


def test_synchronous_full_is_available_and_off_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "full.db", synchronous="FULL") as s:
        assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    with pytest.raises(ValueError):
        Store(tmp_path / "off.db", synchronous="OFF")  # type: ignore[arg-type]


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "re.db"
    with Store(path) as s:
        s.insert_decisions(_decisions(3))
    with Store(path) as s:
        assert s.get_decision("d1") is not None
        assert s.db.table("schema_version").count == len(schema.MIGRATIONS)


def test_v1_file_is_upgraded_on_open_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    assert schema.migrate(conn, target=1) == (0, 1)
    conn.execute(
        "INSERT INTO decisions (decision_id, ts, backend, predicted_latency_ms)"
        " VALUES ('old', 10.0, 'a', 100.0)"
    )
    conn.execute(
        "INSERT INTO outcomes (decision_id, actual_latency_ms, observed_at, recorded_at,"
        " decision_ts, backend, predicted_latency_ms, lag_s, error_ms)"
        " VALUES ('old', 110.0, 20.0, 20.0, 10.0, 'a', 100.0, 10.0, 10.0)"
    )
    conn.execute("UPDATE decisions SET status = 'resolved' WHERE decision_id = 'old'")
    conn.commit()
    assert schema.current_version(conn) == 1
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alerts'").fetchone()
    conn.close()

    with Store(path) as s:
        assert s.schema_version == schema.LATEST_VERSION
        old = s.get_decision("old")
        assert old is not None and old["actual_latency_ms"] == 110.0
        assert old["status"] == "resolved"
        # The new tables work on the upgraded file.
        alert = s.insert_alert("drift", "a", "high", channels=["log"])
        assert s.get_alert(alert.alert_id) is not None
        assert s.record_outcome("old", 110.0, 30.0).status == "duplicate"


def test_file_from_a_newer_schema_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'from the future', 0)",
        (schema.LATEST_VERSION + 1,),
    )
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNewError, match=f"schema version {schema.LATEST_VERSION + 1}"):
        Store(path)


def test_migrate_false_refuses_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    schema.migrate(conn, target=1)
    conn.close()
    with pytest.raises(RuntimeError, match="migrate=True"):
        Store(path, migrate=False)
    with Store(path) as s:  # the default upgrades it
        assert s.schema_version == schema.LATEST_VERSION


def test_a_failing_migration_leaves_the_file_at_the_previous_version(tmp_path: Path) -> None:
    broken = (
        schema.Migration(1, "one", ("CREATE TABLE a (x INTEGER)",)),
        schema.Migration(2, "two", ("CREATE TABLE b (x INTEGER)", "THIS IS NOT SQL")),
    )
    conn = sqlite3.connect(tmp_path / "broken.db")
    with pytest.raises(sqlite3.OperationalError):
        schema.migrate(conn, migrations=broken)
    assert schema.current_version(conn) == 1
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'b'").fetchone()
    conn.close()


def test_migrations_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    bad = (schema.Migration(1, "one", ()), schema.Migration(3, "three", ()))
    with pytest.raises(ValueError):
        schema.migrate(sqlite3.connect(":memory:"), migrations=bad)


def test_store_implements_the_protocol() -> None:
    wanted = {
        name
        for name, member in vars(StoreProtocol).items()
        if callable(member) and not name.startswith("_")
    }
    assert wanted, "protocol lists no methods"
    for name in wanted:
        assert callable(getattr(Store, name, None)), name
        proto_params = list(inspect.signature(getattr(StoreProtocol, name)).parameters)
        impl_params = list(inspect.signature(getattr(Store, name)).parameters)
        for param in proto_params:
            if param not in ("self", "fields", "filters"):
                assert param in impl_params, (name, param)


# --- transactions -------------------------------------------------------------------------------


def test_transaction_groups_writes_and_rolls_back_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_decisions(_decisions(2))
        store.record_event("chaos", subject="a")
        raise RuntimeError("boom")
    assert store.db.table("decisions").count == 0
    assert store.list_events() == []
    with store.transaction():
        store.insert_decisions(_decisions(2))
        store.record_event("chaos", subject="a")
    assert store.db.table("decisions").count == 2
    assert len(store.list_events()) == 1


def test_writes_from_several_threads(store: Store) -> None:
    def work(k: int) -> None:
        for i in range(50):
            store.insert_decisions([DecisionRow(decision_id=f"t{k}-{i}", ts=float(i), backend="a")])
            store.record_outcome(f"t{k}-{i}", 10.0, float(i) + 1)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.outcome_stats().accepted == 200


# --- decisions ----------------------------------------------------------------------------------


def test_insert_decisions_counts_new_rows_and_is_idempotent(store: Store) -> None:
    assert store.insert_decisions(_decisions(5)) == 5
    assert store.insert_decisions(_decisions(7)) == 2  # d0..d4 already there
    assert store.outcome_stats().pending == 7
    row = store.get_decision("d2")
    assert row is not None and row["status"] == "pending" and row["ambiguous"] is False


def test_insert_decisions_encodes_candidates_as_valid_json(store: Store) -> None:
    rows = _decisions(2)
    rows[0]["candidates"] = [{"backend": "a", "forecast_ms": math.nan, "share": 1.0}]
    rows[1]["candidates"] = '[{"backend":"b"}]'
    store.insert_decisions(rows)
    assert store.get_decision("d0")["candidates"] == [
        {"backend": "a", "forecast_ms": None, "share": 1.0}
    ]
    assert store.get_decision("d1")["candidates"] == [{"backend": "b"}]
    (valid,) = store.conn.execute("SELECT json_valid(candidates) FROM decisions LIMIT 1").fetchone()
    assert valid == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"ts": 1.0, "backend": "a"},
        {"decision_id": "", "ts": 1.0, "backend": "a"},
        {"decision_id": 7, "ts": 1.0, "backend": "a"},
        {"decision_id": "x", "ts": math.nan, "backend": "a"},
        {"decision_id": "x", "ts": math.inf, "backend": "a"},
        {"decision_id": "x", "ts": "yesterday", "backend": "a"},
        {"decision_id": "x", "ts": 1.0},
        {"decision_id": "x", "ts": 1.0, "backend": None},
    ],
)
def test_malformed_decision_raises_and_writes_nothing(store: Store, bad: dict) -> None:
    rows = [*_decisions(3), bad]
    with pytest.raises(ValueError, match="decision row 3"):
        store.insert_decisions(rows)  # type: ignore[arg-type]
    assert store.db.table("decisions").count == 0


def test_wrong_type_in_an_optional_column_is_refused(store: Store) -> None:
    rows = _decisions(3)
    rows[2]["predicted_latency_ms"] = "fast"  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="nothing written"):
        store.insert_decisions(rows)
    assert store.db.table("decisions").count == 0


def test_decision_row_from_a_router_decision(store: Store) -> None:
    decision = Decision(
        decision_id=new_id(),
        request_id="req-1",
        ts=50.0,
        backend="b",
        policy="predictive",
        reason="cheapest_within_sla",
        sla_ms=300.0,
        tier="standard",
        candidates=(
            Candidate("a", math.nan, math.nan, math.nan, 1.0, 0.0, True),
            Candidate("b", 120.0, 100.0, 150.0, 0.5, 1.0, False),
        ),
        model_version="m1",
    )
    store.insert_decisions([decision_row(decision, run_id="demo")])
    row = store.get_decision(decision.decision_id)
    assert row is not None
    assert row["predicted_latency_ms"] == 120.0
    assert (row["predicted_lo_ms"], row["predicted_hi_ms"]) == (100.0, 150.0)
    assert row["run_id"] == "demo" and row["tier"] == "standard"
    assert row["candidates"][0]["forecast_ms"] is None and row["candidates"][0]["ejected"]


def test_new_ids_are_unique_and_time_ordered() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert [i[:16] for i in ids] == sorted(i[:16] for i in ids)


def test_resolved_decisions_and_error_summary(store: Store) -> None:
    store.insert_decisions(_decisions(6))  # ts 100..105; even: backend a, m1; odd: b, m2
    store.record_outcomes([(f"d{i}", 100.0 + 10.0 * i, 200.0) for i in range(6)])
    window = store.resolved_decisions(since=101.0, until=104.0)
    assert [r["decision_id"] for r in window] == ["d1", "d2", "d3"]
    assert window[0]["error_ms"] == 10.0 and window[0]["lag_s"] == 99.0
    assert [r["decision_id"] for r in store.resolved_decisions(backend="b")] == ["d1", "d3", "d5"]
    summary = {(s.model_version, s.backend): s for s in store.error_summary()}
    b = summary[("m1", "a")]  # errors 0, 20, 40
    assert b.n == 3 and b.mae == pytest.approx(20.0) and b.bias == pytest.approx(20.0)
    assert b.rmse == pytest.approx(math.sqrt((0 + 400 + 1600) / 3))
    (overall,) = store.error_summary(by=())
    assert overall.n == 6 and overall.mae == pytest.approx(25.0)
    with pytest.raises(ValueError):
        store.error_summary(by=("tier",))  # type: ignore[arg-type]


# --- telemetry and ingest rejections ------------------------------------------------------------


def test_telemetry_round_trip_and_filters(store: Store) -> None:
    points = [
        TelemetryPoint(float(t), b, 10.0, 50.0, 90.0, 0.01, 2.0, load_known=(b == "a"))
        for t in range(0, 100, 10)
        for b in ("a", "b")
    ]
    assert store.insert_telemetry(points, source="sim", run_id="r1") == 20
    got = store.list_telemetry(backend="b", since=20.0, until=60.0)
    assert [p.ts for p in got] == [20.0, 30.0, 40.0, 50.0]
    assert all(p.backend == "b" and p.load_known is False for p in got)
    assert store.list_telemetry(backend="a", limit=1) == [points[0]]
    assert len(store.list_telemetry(run_id="r1")) == 20


def test_ingest_rejections_are_stored_and_counted(store: Store) -> None:
    store.record_ingest_rejections(
        [
            IngestRejection(source="x.csv", line=3, reason="nan", raw="1,a,nan"),
            IngestRejection(source="x.csv", line=9, reason="nan", raw="2,a,nan"),
            IngestRejection(source="y.csv", line=1, reason="bad_header", raw="foo"),
        ]
    )
    assert store.ingest_rejection_counts() == {"nan": 2, "bad_header": 1}
    assert store.ingest_rejection_counts(source="y.csv") == {"bad_header": 1}
    assert [r.line for r in store.list_ingest_rejections(source="x.csv")] == [3, 9]


# --- model versions -----------------------------------------------------------------------------


def test_model_versions_register_activate_history_and_rollback(store: Store) -> None:
    v1 = store.register_model_version(
        "f1", "forest", trained_from_ts=0.0, trained_to_ts=100.0, metrics={"mae": 12.0}
    )
    assert v1.status == "registered" and v1.metrics == {"mae": 12.0}
    store.register_model_version("f2", "forest", parent_id="f1")
    store.register_model_version("f3", "forest", parent_id="f2", artifact_path="/m/f3")
    store.register_model_version("o1", "online")
    with pytest.raises(ValueError, match="already exists"):
        store.register_model_version("f1", "forest")
    with pytest.raises(ValueError, match="unknown parent"):
        store.register_model_version("f9", "forest", parent_id="nope")

    assert store.active_model_version("forest") is None
    for version, t in (("f1", 1.0), ("f2", 2.0), ("f3", 3.0), ("o1", 4.0)):
        store.activate_model_version(version, reason="promote", at=t)
    assert store.active_model_version("forest").version_id == "f3"
    assert store.active_model_version("online").version_id == "o1"  # kinds are independent
    statuses = {v.version_id: v.status for v in store.list_model_versions("forest")}
    assert statuses == {"f1": "retired", "f2": "retired", "f3": "active"}

    assert store.rollback_model("forest", at=5.0).version_id == "f2"
    assert store.rollback_model("forest", at=6.0).version_id == "f1"  # walks back, no bounce
    with pytest.raises(ValueError, match="no earlier"):
        store.rollback_model("forest")
    assert store.rollback_model("forest", to_version="f3").version_id == "f3"
    with pytest.raises(ValueError):
        store.rollback_model("forest", to_version="o1")  # wrong kind

    history = store.model_history("forest")
    assert [(h.version_id, h.previous_version_id, h.action) for h in history] == [
        ("f1", None, "activate"),
        ("f2", "f1", "activate"),
        ("f3", "f2", "activate"),
        ("f2", "f3", "rollback"),
        ("f1", "f2", "rollback"),
        ("f3", "f1", "rollback"),
    ]
    changes = store.list_events(kind="model_change", subject="forest")
    assert len(changes) == 6 and changes[3].detail["action"] == "rollback"
    # Activating the active version again is a no-op.
    store.activate_model_version("f3")
    assert len(store.model_history("forest")) == 6


def test_only_one_active_version_per_kind_even_in_raw_sql(store: Store) -> None:
    store.register_model_version("f1", "forest")
    store.register_model_version("f2", "forest")
    store.activate_model_version("f1")
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as conn:
        conn.execute("UPDATE model_versions SET status = 'active' WHERE version_id = 'f2'")


# --- drift reports and anomalies ----------------------------------------------------------------


def test_drift_reports_filters(store: Store) -> None:
    ids = store.insert_drift_reports(
        [
            DriftReport(ts=1.0, kind="data", test="ks", severity="low", feature="rps"),
            DriftReport(ts=2.0, kind="concept", test="welch", severity="high", backend="a"),
            DriftReport(
                ts=3.0, kind="concept", test="mwu", severity="critical", detail={"p": 1e-9}
            ),
        ]
    )
    assert len(ids) == 3
    assert [r.ts for r in store.list_drift_reports()] == [3.0, 2.0, 1.0]
    assert [r.test for r in store.list_drift_reports(min_severity="high")] == ["mwu", "welch"]
    assert [r.ts for r in store.list_drift_reports(kind="concept", backend="a")] == [2.0]
    assert store.list_drift_reports(since=2.5)[0].detail == {"p": 1e-9}
    with pytest.raises(ValueError):
        store.list_drift_reports(min_severity="dire")
    with pytest.raises(ValidationError):
        DriftReport(ts=1.0, kind="data", test="ks", severity="dire")  # type: ignore[arg-type]


def test_anomalies_round_trip_and_severity_bounds(store: Store) -> None:
    store.insert_anomalies(
        [
            Anomaly(ts=1.0, backend="a", score=0.7, severity=0.4, detector="iforest"),
            Anomaly(ts=2.0, backend="a", score=0.9, severity=0.95, detector="iforest"),
            Anomaly(ts=3.0, backend="b", score=0.8, severity=0.8, detector="iforest"),
        ]
    )
    assert [a.ts for a in store.list_anomalies(min_severity=0.8)] == [3.0, 2.0]
    assert [a.ts for a in store.list_anomalies(backend="a", limit=1)] == [2.0]
    with pytest.raises(ValidationError):
        Anomaly(ts=1.0, backend="a", score=1.0, severity=1.5, detector="x")


# --- experiments --------------------------------------------------------------------------------


def test_experiment_lifecycle(store: Store) -> None:
    store.register_model_version("champ", "forest")
    store.register_model_version("chall", "forest", parent_id="champ")
    with pytest.raises(ValueError):
        store.create_experiment("e0", "champ", "nope", "shadow")
    with pytest.raises(ValueError):
        store.create_experiment("e0", "champ", "chall", "ab")
    exp = store.create_experiment(
        "e1", "champ", "chall", "shadow", started_at=10.0, params={"alpha": 0.05}
    )
    assert exp.status == "running" and exp.params == {"alpha": 0.05}
    with pytest.raises(ValueError, match="already exists"):
        store.create_experiment("e1", "champ", "chall", "shadow")

    store.insert_decisions(_decisions(3))
    rows = [
        ("e1", f"d{i}", arm, version, pred, int(arm == "champion"))
        for i in range(3)
        for arm, version, pred in (("champion", "champ", 100.0), ("challenger", "chall", 130.0))
    ]
    assert store.record_experiment_predictions(rows) == 6
    assert store.record_experiment_predictions(rows[:2]) == 0  # repeats ignored
    store.record_outcomes([("d0", 125.0, 200.0), ("d1", 120.0, 200.0)])  # d2 still pending
    errors = store.experiment_errors("e1")
    assert len(errors) == 4
    by_arm: dict[str, list[float]] = {}
    for e in errors:
        by_arm.setdefault(e["arm"], []).append(e["abs_error"])
    assert by_arm == {"champion": [25.0, 20.0], "challenger": [5.0, 10.0]}

    store.record_experiment_result(
        ExperimentResult(
            experiment_id="e1", ts=20.0, n_champion=2, n_challenger=2, verdict="inconclusive"
        )
    )
    with pytest.raises(ValueError):
        store.record_experiment_result(
            ExperimentResult(experiment_id="nope", ts=1, n_champion=0, n_challenger=0, verdict="x")
        )
    with pytest.raises(ValueError, match="winner"):
        store.conclude_experiment("e1", verdict="x", winner_id="someone")
    done = store.conclude_experiment("e1", verdict="challenger wins", winner_id="chall")
    assert done.status == "concluded" and done.winner_id == "chall"
    with pytest.raises(ValueError, match="already concluded"):
        store.conclude_experiment("e1", verdict="again", winner_id=None)
    assert [r.verdict for r in store.list_experiment_results("e1")] == ["inconclusive"]
    assert [e.experiment_id for e in store.list_experiments(status="concluded")] == ["e1"]
    assert store.list_events(kind="experiment_verdict")[0].subject == "e1"


# --- alerts -------------------------------------------------------------------------------------


def test_alerts_store_every_alert_and_track_delivery(store: Store) -> None:
    first = store.insert_alert(
        "drift",
        "gpu-a",
        "high",
        evidence={"ks_p": 1e-6},
        recommended_action="retrain",
        created_at=100.0,
        channels=["log", "webhook", "webhook"],
    )
    assert first.dedup_key == "drift:gpu-a"
    assert [d.channel for d in first.deliveries] == ["log", "webhook"]
    assert all(d.state == "pending" and d.next_attempt_at == 100.0 for d in first.deliveries)
    quiet = store.insert_alert(
        "drift",
        "gpu-a",
        "high",
        created_at=110.0,
        channels=["webhook"],
        suppressed=True,
        suppressed_reason="duplicate within 300 s",
    )
    assert quiet.suppressed and quiet.deliveries == []  # stored, never delivered
    store.insert_alert("anomaly", "gpu-b", "low", created_at=120.0)
    with pytest.raises(ValueError):
        store.insert_alert("drift", "x", "apocalyptic")

    assert [a.created_at for a in store.list_alerts()] == [120.0, 110.0, 100.0]
    assert [a.created_at for a in store.list_alerts(include_suppressed=False)] == [120.0, 100.0]
    assert [a.kind for a in store.list_alerts(min_severity="medium")] == ["drift", "drift"]
    assert [a.created_at for a in store.list_alerts(since=105.0, kind="drift")] == [110.0]
    assert store.last_alert("drift:gpu-a").alert_id == first.alert_id
    assert store.last_alert("drift:gpu-a", include_suppressed=True).alert_id == quiet.alert_id
    assert store.last_alert("nothing:here") is None

    # Webhook fails twice then succeeds; the log channel is delivered at once.
    store.update_delivery(first.alert_id, "log", state="delivered", at=100.5)
    assert [d.channel for d in store.due_deliveries(now=100.0)] == ["webhook"]
    failed = store.update_delivery(
        first.alert_id, "webhook", state="failed", next_attempt_at=130.0, last_error="HTTP 500"
    )
    assert failed.attempts == 1 and failed.last_error == "HTTP 500"
    assert store.due_deliveries(now=129.0) == []
    assert [d.attempts for d in store.due_deliveries(now=130.0, channel="webhook")] == [1]
    store.update_delivery(
        first.alert_id, "webhook", state="failed", next_attempt_at=190.0, last_error="timeout"
    )
    done = store.update_delivery(first.alert_id, "webhook", state="delivered", at=191.0)
    assert done.attempts == 3 and done.delivered_at == 191.0 and done.next_attempt_at is None
    assert store.due_deliveries(now=10_000.0) == []
    states = {d.channel: d.state for d in store.get_alert(first.alert_id).deliveries}
    assert states == {"log": "delivered", "webhook": "delivered"}
    with pytest.raises(ValueError):
        store.update_delivery(first.alert_id, "pager", state="delivered")


def test_duplicates_link_to_the_alert_they_repeat(store: Store) -> None:
    sent = store.insert_alert("drift", "a", "high", created_at=1.0, channels=["log"])
    other = store.insert_alert("drift", "b", "low", created_at=1.0)
    for t in (2.0, 3.0):
        dup = store.insert_alert(
            "drift", "a", "high", created_at=t, suppressed=True, duplicate_of=sent.alert_id
        )
        assert dup.duplicate_of == sent.alert_id and dup.deliveries == []
    assert store.alert_occurrences([sent.alert_id, other.alert_id]) == {
        sent.alert_id: 3,
        other.alert_id: 1,
    }
    with pytest.raises(ValueError, match="unknown alert"):
        store.insert_alert("drift", "a", "high", suppressed=True, duplicate_of="nope")
    with pytest.raises(ValueError, match="suppressed"):
        store.insert_alert("drift", "a", "high", duplicate_of=sent.alert_id)


def test_dead_deliveries_are_not_retried(store: Store) -> None:
    alert = store.insert_alert("sla_risk", "gpu-c", "critical", created_at=0.0, channels=["x"])
    store.update_delivery(alert.alert_id, "x", state="dead", last_error="gave up", attempts=8)
    assert store.due_deliveries(now=1e12) == []
    assert store.get_alert(alert.alert_id).deliveries[0].attempts == 8


# --- events and runs ----------------------------------------------------------------------------


def test_events_timeline_and_runs(store: Store) -> None:
    run = store.start_run("demo", params={"scenario": "gradual_drift", "seed": 1})
    assert run.status == "running" and run.summary is None
    store.record_event("chaos", subject="gpu-a", detail={"what": "latency_spike"}, ts=50.0)
    store.record_event("incident", subject="gpu-a", ts=20.0, run_id=run.run_id)
    store.record_event("chaos", subject="gpu-b", ts=80.0, run_id=run.run_id)
    assert [e.ts for e in store.list_events()] == [20.0, 50.0, 80.0]
    assert [e.ts for e in store.list_events(kind="chaos", since=60.0)] == [80.0]
    assert [e.ts for e in store.list_events(run_id=run.run_id)] == [20.0, 80.0]
    assert store.list_events(subject="gpu-a", limit=1)[0].kind == "incident"
    done = store.finish_run(run.run_id, summary={"mae_before": 30.0, "mae_after": 12.0})
    assert done.status == "finished" and done.summary == {"mae_before": 30.0, "mae_after": 12.0}
    assert done.params["scenario"] == "gradual_drift"
    assert store.list_runs()[0].run_id == run.run_id
    with pytest.raises(ValueError):
        store.finish_run("nope")
