"""Properties of the two doors data comes in by (issue 14): `arcpoint ingest` and outcome
recording. Whatever arrives (any bytes, any row, any value) either lands exactly once or is
rejected with a reason, nothing is lost in between, and the file stays sound
(`PRAGMA integrity_check`). Examples are bounded so the suite stays fast."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcpoint.cli import main
from context_api.outcomes import RejectReason
from context_api.store import DecisionRow, Store

FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
T0 = 1_704_067_200


def _ingest(db: Path, path: Path) -> tuple[int, dict | None, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["ingest", "--db", str(db), "--json", str(path)])
    text = out.getvalue()
    return code, (json.loads(text) if text.strip() else None), err.getvalue()


def _sound(db: Path) -> None:
    if not db.exists():
        return
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def _stored(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
    finally:
        conn.close()


def _check_file(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, db = Path(tmp) / "in.csv", Path(tmp) / "p.db"
        path.write_bytes(content)
        for attempt in range(2):  # the second run must store nothing twice
            before = _stored(db)
            code, report, err = _ingest(db, path)
            assert "Traceback" not in err
            _sound(db)
            if code == 2:  # unusable as a whole: a reason, and nothing stored
                assert report is not None and report["errors"], err
                assert _stored(db) == before
                return
            assert code == 0, err
            assert report is not None
            assert sum(s["rows"] for s in report["sources"]) == (
                report["accepted"] + report["rejected"]
            )
            assert sum(report["rejected_by_reason"].values()) == report["rejected"]
            assert _stored(db) == before + report["accepted"]
            if attempt == 1:
                assert report["accepted"] == 0


@FAST
@given(st.binary(max_size=600))
def test_any_bytes_land_once_or_are_refused_with_a_reason(content: bytes) -> None:
    _check_file(b"timestamp,backend,latency,rps\n" + content)


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_as_a_whole_file(content: bytes) -> None:
    _check_file(content)


_cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.text(max_size=12),
    st.sampled_from(["", "nan", "1e308", "-0", "2024-01-01T00:00:00Z", "9999-12-31", "1e20"]),
)
_ts = st.one_of(
    st.integers(min_value=T0, max_value=T0 + 10_000).map(str),
    st.integers(min_value=T0 * 1000, max_value=T0 * 1000 + 10_000).map(str),
    _cell,
)


@FAST
@given(
    st.lists(
        st.tuples(_ts, st.sampled_from(["b0", "b1", "", "b\x01", "x" * 200]), _cell, _cell),
        max_size=30,
    )
)
def test_any_row_lands_once_or_is_rejected_with_a_reason(rows) -> None:
    lines = []
    for ts, backend, latency, rps in rows:
        cells = [c.replace(",", ";").replace("\n", " ").replace("\r", " ") for c in (ts, latency)]
        rps = rps.replace(",", ";").replace("\n", " ").replace("\r", " ")
        lines.append(f"{cells[0]},{backend},{cells[1]},{rps}\n")
    _check_file(("timestamp,backend,latency,rps\n" + "".join(lines)).encode("utf-8", "replace"))


_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.sampled_from([1e308, -0.0, 600_000.0, 600_000.1, "120", [1]]),
)


@FAST
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from([f"d{i}" for i in range(6)] + ["nope", ""]), st.integers()),
            _value,
            st.one_of(
                st.floats(min_value=T0 - 10, max_value=T0 + 200_000),
                st.just(T0 * 1000.0),
                _value,
            ),
        ),
        max_size=25,
    )
)
def test_any_outcome_lands_once_or_is_rejected_with_a_reason(batch) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "o.db"
        with Store(db) as store:
            store.insert_decisions(
                DecisionRow(decision_id=f"d{i}", ts=float(T0), backend="b0") for i in range(6)
            )
            results = [store.record_outcome(*row) for row in batch[:8]]
            summary = store.record_outcomes(batch[8:])
            for r in results:
                assert r.status in ("accepted", "duplicate", "rejected")
                assert (r.reason is not None) == (r.status == "rejected")
                if r.reason is not None:
                    assert r.reason in set(RejectReason)
            assert summary.total == len(batch[8:])
            stats = store.outcome_stats()
            accepted = sum(r.status == "accepted" for r in results) + summary.accepted
            assert stats.accepted == accepted <= 6  # each decision resolved at most once
            assert stats.rejected == (
                sum(r.status == "rejected" for r in results) + summary.rejected
            )
            for row in store.resolved_decisions():
                assert 0 <= row["actual_latency_ms"] <= store.bounds.max_latency_ms
                assert 0 <= row["lag_s"] <= store.bounds.max_label_lag_s
            for e in store.error_summary():
                assert all(math.isfinite(v) for v in (e.mae, e.rmse, e.bias, e.mean_lag_s))
        _sound(db)
