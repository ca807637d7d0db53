"""`arcpoint alerts`: listing, filters, JSON, delivery states, and what it says with no data."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from arcpoint.cli import main
from arcpoint.commands.alerts import parse_since
from context_api.alerting import AlertService, DeliveryError
from context_api.store import Store
from tools.alerts import AlertPolicy, RetryPolicy

URL = "https://hooks.slack.com/services/T1/B2/TOPSECRET"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARCPOINT_DB", "ARCPOINT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)


class Failing:
    name = "webhook"

    def __init__(self, error: DeliveryError) -> None:
        self.error = error

    def describe(self) -> str:
        return "webhook (test)"

    def send(self, payload: Any) -> None:
        raise self.error

    def close(self) -> None:
        pass


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Three visible alerts (one merged x3, one dead, one pending) and two suppressed repeats."""
    path = tmp_path / "arcpoint.db"
    now = time.time()
    t = [now - 600.0]
    with Store(path) as store:
        svc = AlertService(
            store,
            webhooks=[
                Failing(DeliveryError("HTTP 404: no_service (not retried)", retryable=False))
            ],
            clock=lambda: t[0],
            policy=AlertPolicy(dedup_window_s=300),
            retry=RetryPolicy(max_attempts=2),
            rng=random.Random(0),
        )
        for _ in range(3):
            svc.emit(
                kind="anomaly",
                subject="b2",
                severity="high",
                evidence={"score": 0.97},
                recommended_action="drain b2 and page its owner",
            )
            t[0] += 10
        t[0] = now - 3 * 3600.0  # old: outside --since 1h
        svc.emit(
            kind="drift",
            subject="forecaster-v3",
            severity="medium",
            evidence={"test": "ks", "p_value": 0.0004},
            recommended_action="retrain on the last 6 h",
        )
        svc.deliver_due(now=t[0] + 5)  # drift: dead (404); the anomaly is not due yet
        t[0] = now - 60
        svc.emit(
            kind="sla_risk",
            subject="b0",
            severity="critical",
            evidence={"forecast_ms": 420.0, "sla_ms": 300.0},
            recommended_action="shift traffic off b0",
        )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["alerts", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- nothing to show ----------------------------------------------------------------------------


def test_missing_db_says_what_to_run_and_creates_nothing(tmp_path: Path, capsys) -> None:
    path = tmp_path / "nope.db"
    code, out, err = run(capsys, "--db", str(path))
    assert code == 1 and out == ""
    assert "no alerts yet" in err and "arcpoint demo" in err
    assert not path.exists()


def test_empty_db_says_what_to_run(tmp_path: Path, capsys) -> None:
    path = tmp_path / "empty.db"
    Store(path).close()
    code, out, _ = run(capsys, "--db", str(path))
    assert code == 0 and "no alerts yet" in out and "arcpoint demo" in out
    code, out, err = run(capsys, "--db", str(path), "--json")
    assert code == 0 and json.loads(out)["alerts"] == [] and "arcpoint demo" in err


def test_default_db_comes_from_the_environment(
    db: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCPOINT_DB", str(db))
    code, out, _ = run(capsys)
    assert code == 0 and "3 alerts" in out


def test_a_foreign_sqlite_file_is_not_touched(tmp_path: Path, capsys) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    code, _, err = run(capsys, "--db", str(path))
    assert code == 1 and "not an Arcpoint database" in err and "arcpoint demo" in err
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"t"}


def test_a_file_that_is_not_sqlite(tmp_path: Path, capsys) -> None:
    path = tmp_path / "notes.db"
    path.write_text("hello, this is not a database at all" * 50)
    code, _, err = run(capsys, "--db", str(path))
    assert code == 1 and "not a SQLite database" in err


def test_filters_that_match_nothing_say_so(db: Path, capsys) -> None:
    code, out, _ = run(capsys, "--db", str(db), "--kind", "model_change")
    assert code == 0 and "no alerts match" in out and "newest alert at" in out


# --- listing ------------------------------------------------------------------------------------


def test_lists_newest_first_with_counts_and_delivery_state(db: Path, capsys) -> None:
    code, out, _ = run(capsys, "--db", str(db))
    assert code == 0
    lines = out.splitlines()
    rows = [line for line in lines if line[:2] == "20"]
    assert [r.split()[3] for r in rows] == ["sla_risk", "anomaly", "drift"]
    anomaly = next(r for r in rows if "anomaly" in r)
    assert " x3 " in anomaly and "pending" in anomaly
    assert "dead" in next(r for r in rows if "drift" in r)
    assert "drain b2 and page its owner" in out
    assert "HTTP 404: no_service" in out  # the last error is shown
    assert "--retry-dead" in out and "--all shows them" in out


def test_all_includes_suppressed_repeats(db: Path, capsys) -> None:
    code, out, _ = run(capsys, "--db", str(db), "--all")
    assert code == 0 and "5 alerts" in out and out.count("suppressed: duplicate of") == 2


def test_filters(db: Path, capsys) -> None:
    _, out, _ = run(capsys, "--db", str(db), "--kind", "drift")
    assert "1 alert " in out and "forecaster-v3" in out
    _, out, _ = run(capsys, "--db", str(db), "--since", "1h")
    assert "2 alerts" in out and "forecaster-v3" not in out
    _, out, _ = run(capsys, "--db", str(db), "--limit", "1")
    assert "1 alert " in out and "sla_risk" in out
    _, out, _ = run(capsys, "--db", str(db), "--subject", "b2")
    assert "1 alert " in out and "anomaly" in out
    _, out, _ = run(capsys, "--db", str(db), "--min-severity", "high")
    assert "2 alerts" in out and "drift" not in out


def test_json(db: Path, capsys) -> None:
    code, out, _ = run(capsys, "--db", str(db), "--json")
    payload = json.loads(out)
    assert code == 0 and payload["count"] == 3 and payload["db"] == str(db)
    first, anomaly, drift = payload["alerts"]
    assert first["kind"] == "sla_risk" and first["evidence"] == {
        "forecast_ms": 420.0,
        "sla_ms": 300.0,
    }
    assert anomaly["occurrences"] == 3 and anomaly["delivery_state"] == "pending"
    assert drift["delivery_state"] == "dead"
    assert drift["deliveries"][0]["last_error"].startswith("HTTP 404")
    assert set(drift) >= {"alert_id", "time", "severity", "recommended_action", "subject"}


@pytest.mark.parametrize(
    "argv",
    [("--since", "yesterday-ish"), ("--since", "nan"), ("--limit", "-1"), ("--retry-dead",)],
)
def test_bad_arguments(db: Path, capsys, argv: tuple[str, ...]) -> None:
    code, _, err = run(capsys, "--db", str(db), *argv)
    assert code == 2 and "error" in err


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2H", now) == now - 7200
    assert parse_since("1d", now) == now - 86400
    assert parse_since("1.5w", now) == now - 1.5 * 604800
    assert parse_since("1700000000", now) == 1_700_000_000.0
    assert parse_since("2023-11-14T22:13:20", now) == 1_700_000_000.0
    assert parse_since("2023-11-14T23:13:20+01:00", now) == 1_700_000_000.0
    with pytest.raises(ValueError, match="duration"):
        parse_since("soon", now)


# --- delivering from the command ----------------------------------------------------------------


def test_deliver_needs_a_webhook_url(db: Path, capsys) -> None:
    code, _, err = run(capsys, "--db", str(db), "--deliver")
    assert code == 2 and "ARCPOINT_WEBHOOK_URL" in err


def test_deliver_and_retry_dead(db: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCPOINT_WEBHOOK_URL", URL)
    with respx.mock:
        route = respx.post(URL).mock(return_value=httpx.Response(200, text="ok"))
        code, out, err = run(capsys, "--db", str(db), "--deliver", "--retry-dead", "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload["delivery"]["requeued"] == 1
    assert payload["delivery"]["delivered"] == 3 == route.call_count
    assert {a["delivery_state"] for a in payload["alerts"]} == {"delivered"}
    assert "TOPSECRET" not in out + err


def test_help_explains_the_states(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["alerts", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("pending", "failed", "delivered", "dead", "--since", "--json", "--db"):
        assert word in out
