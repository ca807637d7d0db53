"""Ingest and outcome recording against what a new user fed them (issue 14, points 2, 3, 5, 8
and 9): epoch units, impossible times and values, two ingests at once, ARCPOINT_DB, repeated
rejections summarised, bounded state while streaming."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from arcpoint.cli import main
from context_api.bounds import ValueBounds
from context_api.ingest import Ingestor, ingest_file
from context_api.ingest_values import Span
from context_api.store import DecisionRow, Store
from tests.cli_runs import REPO

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _ingest(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["ingest", *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


# -- point 2: epoch units and impossible times ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "unit"),
    [
        ("1704067200", T0, None),
        ("1704067200.5", T0 + 0.5, None),
        ("1704067200000", T0, "milliseconds"),
        ("1704067200250", T0 + 0.25, "milliseconds"),
        ("1704067200000000", T0, "microseconds"),
        ("1704067200000000000", T0, "nanoseconds"),
    ],
)
def test_epoch_seconds_millis_micros_and_nanos_are_told_apart(tmp_path, value, expected, unit):
    result = ingest_file(_write(tmp_path, f"timestamp,latency\n{value},100\n"), backend="b0")
    assert [p.ts for p in result.points] == [pytest.approx(expected, abs=1e-6)]
    notes = " ".join(result.report.notes)
    if unit is None:
        assert "numeric timestamps read as" not in notes
    else:
        assert f"read as {unit}" in notes


def test_the_issue_s_millisecond_file_ingests(capsys, tmp_path):
    path = _write(tmp_path, "timestamp,latency\n1704067200000,100\n", "ms.csv")
    code, report = _ingest(capsys, "--db", str(tmp_path / "t.db"), str(path))
    assert code == 0
    assert report["accepted"] == 1 and report["backends"]["ms"]["first"] == "2024-01-01T00:00:00Z"
    assert any("milliseconds" in n for n in report["notes"])


def test_impossible_times_are_rejected_per_row_with_a_reason(tmp_path):
    text = (
        "timestamp,latency\n"
        "1704067200000,100\n"  # ms: sets the file's unit
        "1e20,100\n"  # too large for any unit (was OverflowError)
        "1704067210,100\n"  # seconds among milliseconds
        "9999-12-31T00:00:00Z,100\n"  # after 2100
        "1704067220000,100\n"
    )
    result = ingest_file(_write(tmp_path, text), backend="b0")
    got = [(r.line, r.reason.value) for r in result.rejections]
    assert got == [(3, "bad_timestamp"), (4, "time_unit_mixed"), (5, "bad_timestamp")]
    assert "too large" in result.rejections[0].detail
    assert "after 2100" in result.rejections[2].detail
    assert [p.ts for p in result.points] == [T0, T0 + 20]


def test_a_stated_unit_is_used_and_a_wrong_one_explained(tmp_path):
    path = _write(tmp_path, "timestamp,latency\n1704067200000,100\n")
    wrong = ingest_file(path, backend="b0", time_unit="s")
    assert wrong.report.rejected_by_reason == {"bad_timestamp": 1}
    assert "--time-unit" in wrong.rejections[0].detail
    right = ingest_file(path, backend="b0", time_unit="ms")
    assert [p.ts for p in right.points] == [T0]


# -- point 5: values outside physical bounds ------------------------------------------------------


def test_absurd_telemetry_values_are_rejected(tmp_path):
    text = "ts,backend,latency,rps\n1,b0,1e308,1\n2,b0,100,1e300\n3,b0,600000,10\n4,b0,600001,1\n"
    result = ingest_file(_write(tmp_path, text))
    assert [(r.line, r.reason.value) for r in result.rejections] == [
        (2, "out_of_bounds"),
        (3, "out_of_bounds"),
        (5, "out_of_bounds"),
    ]
    assert [p.p95_ms for p in result.points] == [600000.0]
    narrow = Ingestor(bounds=ValueBounds(max_latency_ms=500.0))
    narrow.add_file(_write(tmp_path, "ts,backend,latency\n1,b0,499\n2,b0,501\n", "n.csv"))
    assert narrow.result().report.rejected_by_reason == {"out_of_bounds": 1}


def test_the_latency_bound_comes_from_settings(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ARCPOINT_MAX_LATENCY_MS", "50")
    path = _write(tmp_path, "ts,backend,latency\n1,b0,40\n2,b0,60\n")
    code, report = _ingest(capsys, "--dry-run", str(path))
    assert code == 0 and report["rejected_by_reason"] == {"out_of_bounds": 1}


def _decisions(store: Store, n: int) -> None:
    store.insert_decisions(
        DecisionRow(decision_id=f"d{i}", ts=T0 + i, backend="b0", predicted_latency_ms=100.0)
        for i in range(n)
    )


def test_absurd_outcomes_are_rejected_and_statistics_stay_finite(tmp_path):
    with Store(tmp_path / "o.db") as store:
        _decisions(store, 60)
        big = store.record_outcome("d0", 1e308, T0 + 1)
        assert (big.status, big.reason) == ("rejected", "too_large")
        millis = store.record_outcome("d1", 120.0, (T0 + 2) * 1000)
        assert (millis.status, millis.reason) == ("rejected", "lag_too_long")
        assert "milliseconds" in (millis.detail or "")
        # Fifty outcomes at the bound: every statistic stays finite.
        batch = store.record_outcomes(
            (f"d{i}", store.bounds.max_latency_ms, T0 + i + 1) for i in range(2, 52)
        )
        assert batch.accepted == 50
        (summary,) = store.error_summary()
        assert all(math.isfinite(v) for v in (summary.mae, summary.rmse, summary.bias))
        assert summary.mean_lag_s == 1.0
        stats = store.outcome_stats()
        assert stats.rejected_by_reason == {"too_large": 1, "lag_too_long": 1}


def test_drift_status_is_safe_on_outcomes_at_the_bound(tmp_path):
    from context_api.api import ContextAPI
    from tools.telemetry import TelemetryPoint

    with Store(tmp_path / "o.db") as store:
        _decisions(store, 120)
        store.insert_telemetry(
            TelemetryPoint(T0 + 10 * i, "b0", 10.0, 80.0, 120.0, 0.0, 1.0) for i in range(13)
        )
        store.record_outcomes(
            (f"d{i}", store.bounds.max_latency_ms if i % 2 else 90.0, T0 + i + 1)
            for i in range(120)
        )
        out = ContextAPI(store).drift_status()
        assert json.dumps(out.model_dump(mode="json"), allow_nan=False)


# -- point 8: ARCPOINT_DB -------------------------------------------------------------------------


def test_ingest_honours_arcpoint_db(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCPOINT_DB", str(tmp_path / "env.db"))
    path = _write(tmp_path, "ts,backend,latency\n1,b0,10\n")
    code, report = _ingest(capsys, str(path))
    assert code == 0 and report["db"] == str(tmp_path / "env.db")
    assert (tmp_path / "env.db").is_file() and not (tmp_path / "arcpoint.db").exists()


# -- points 3 and 9: two at once, repeated rejections, bounded state ------------------------------


def _series(tmp_path: Path, n: int, name: str = "big.csv") -> Path:
    path = tmp_path / name
    with path.open("w") as f:
        f.write("ts,backend,latency\n")
        for i in range(n):
            f.write(f"{int(T0) + 10 * (i // 2)},b{i % 2},{100 + i % 7}\n")
    return path


@pytest.mark.slow
def test_two_ingests_of_one_file_at_once_store_it_once(tmp_path):
    n = 25_000  # three chunks each, so the two runs interleave
    path = _series(tmp_path, n)
    db = tmp_path / "s.db"
    Store(db).close()  # both start from an existing file, as in the issue
    cmd = [sys.executable, "-m", "arcpoint", "ingest", "--db", str(db), "--json", str(path)]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    assert sum(r["accepted"] for r in reports) == n
    assert sum(r["rejected_by_reason"].get("duplicate", 0) for r in reports) == n
    with Store(db) as store:
        assert len(store.list_telemetry()) == n


def test_repeated_rejections_are_summarised_not_stored_a_row_each(capsys, tmp_path):
    n = 12_000
    path = _series(tmp_path, n)
    db = tmp_path / "r.db"
    assert _ingest(capsys, "--db", str(db), str(path))[0] == 0
    code, again = _ingest(capsys, "--db", str(db), str(path))
    assert code == 0 and again["accepted"] == 0
    assert again["rejected_by_reason"] == {"duplicate": n}
    assert again["stored"]["rejections"] == 100
    with Store(db) as store:
        assert store.ingest_rejection_counts() == {"duplicate": n}
        assert len(store.list_ingest_rejections(limit=None)) == 100
        assert len(store.list_telemetry()) == n


def test_streaming_keeps_no_points_and_bounded_state():
    rows = 50_000
    lines = io.StringIO(
        "ts,backend,latency\n"
        + "".join(f"{int(T0) + i},b0,{i % 500}\n" for i in range(rows))
        + "".join(f"{int(T0) - 1 - i},b0,1\n" for i in range(3000))  # 3,000 out of order
    )
    landed: list[int] = []
    ingestor = Ingestor(sink=lambda source, points: landed.append(len(points)) or set())
    ingestor.add_lines(lines, source="s")
    result = ingestor.result()
    assert sum(landed) == rows and max(landed) <= 10_000
    assert result.points == [] and ingestor._points == {}
    assert len(result.rejections) == 100 and result.report.rejected == 3000
    (count,) = result.report.rejection_counts
    assert (count.count, count.kept, count.first_line) == (3000, 100, rows + 2)
    assert len(ingestor._spans["b0"].gaps) < Span.SAMPLE
    assert result.report.backends["b0"].median_interval_s == 1.0


def test_a_bad_byte_costs_one_row_and_an_overlong_line_is_skipped(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b"ts,backend,latency\n1,b0,10\n2,b\xe9,11\n3,b0," + b"9" * (1 << 21) + b"\n4,b0,12\n"
    )
    result = ingest_file(path)
    assert [(r.line, r.reason.value) for r in result.rejections] == [
        (3, "malformed_row"),
        (4, "malformed_row"),
    ]
    assert "not UTF-8" in result.rejections[0].detail and "\ufffd" in result.rejections[0].raw
    assert "longer than" in result.rejections[1].detail
    assert [p.ts for p in result.points] == [1.0, 4.0]
