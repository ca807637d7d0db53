"""Late outcomes: joining to predictions, idempotent duplicates, stored rejections, expiry."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from context_api.outcomes import RejectReason
from context_api.store import DecisionRow, Store

T0 = 1_000.0


def _decision(i: int, *, ts: float | None = None, predicted: float | None = 100.0) -> DecisionRow:
    return DecisionRow(
        decision_id=f"d{i}",
        ts=T0 + i if ts is None else ts,
        backend="gpu-a" if i % 2 else "gpu-b",
        model_version="m1",
        predicted_latency_ms=predicted,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "outcomes.db")
    s.insert_decisions([_decision(i) for i in range(10)])
    yield s
    s.close()


def test_accepted_outcome_is_joined_to_its_prediction(store: Store) -> None:
    result = store.record_outcome("d3", 130.0, T0 + 3 + 45.0)
    assert result.status == "accepted" and result.reason is None
    assert result.lag_s == pytest.approx(45.0)
    assert result.error_ms == pytest.approx(30.0)
    row = store.get_decision("d3")
    assert row is not None
    assert row["status"] == "resolved"
    assert row["actual_latency_ms"] == 130.0
    assert row["lag_s"] == pytest.approx(45.0)
    assert row["error_ms"] == pytest.approx(30.0)


def test_outcome_without_prediction_is_accepted_with_no_error(tmp_path: Path) -> None:
    with Store(tmp_path / "x.db") as s:
        s.insert_decisions([_decision(1, predicted=None)])
        result = s.record_outcome("d1", 50.0, T0 + 10)
        assert result.status == "accepted" and result.error_ms is None


def test_zero_latency_and_numpy_floats_are_accepted(store: Store) -> None:
    assert store.record_outcome("d1", 0.0, T0 + 2).status == "accepted"
    assert store.record_outcome("d2", np.float64(12.5), np.float64(T0 + 5)).status == "accepted"


def test_duplicate_with_same_value_is_idempotent(store: Store) -> None:
    first = store.record_outcome("d1", 120.0, T0 + 10)
    again = store.record_outcome("d1", 120.0, T0 + 11)
    third = store.record_outcome("d1", 120.0, T0 + 12)
    assert first.status == "accepted"
    assert again.status == "duplicate" and third.status == "duplicate"
    assert store.db.table("outcomes").count == 1
    assert store.get_decision("d1")["observed_at"] == T0 + 10  # the first report stands
    stats = store.outcome_stats()
    assert (stats.accepted, stats.duplicates, stats.rejected) == (1, 2, 0)


def test_duplicate_with_different_value_is_rejected_as_conflicting(store: Store) -> None:
    store.record_outcome("d1", 120.0, T0 + 10)
    result = store.record_outcome("d1", 999.0, T0 + 11)
    assert result.status == "rejected"
    assert result.reason is RejectReason.CONFLICTING_DUPLICATE
    assert store.get_decision("d1")["actual_latency_ms"] == 120.0
    (rej,) = store.list_outcome_rejections()
    assert rej.decision_id == "d1" and rej.value == 999.0
    assert rej.reason == "conflicting_duplicate" and "120.0" in (rej.detail or "")


@pytest.mark.parametrize(
    ("decision_id", "value", "observed_at", "reason"),
    [
        ("nope", 10.0, T0 + 5, RejectReason.UNKNOWN_DECISION),
        ("d1", math.nan, T0 + 5, RejectReason.NOT_A_NUMBER),
        ("d1", math.inf, T0 + 5, RejectReason.INFINITE),
        ("d1", -math.inf, T0 + 5, RejectReason.INFINITE),
        ("d1", -0.5, T0 + 5, RejectReason.NEGATIVE),
        ("d1", 10.0, T0 + 0.5, RejectReason.OBSERVED_BEFORE_DECISION),
        ("d1", 10.0, math.nan, RejectReason.BAD_OBSERVED_AT),
        ("d1", 10.0, math.inf, RejectReason.BAD_OBSERVED_AT),
        ("d1", "fast", T0 + 5, RejectReason.MALFORMED),
        ("d1", None, T0 + 5, RejectReason.MALFORMED),
        ("d1", True, T0 + 5, RejectReason.MALFORMED),
        (42, 10.0, T0 + 5, RejectReason.MALFORMED),
        ("", 10.0, T0 + 5, RejectReason.MALFORMED),
    ],
)
def test_bad_outcomes_are_rejected_stored_and_counted(
    store: Store, decision_id: object, value: object, observed_at: float, reason: RejectReason
) -> None:
    result = store.record_outcome(decision_id, value, observed_at)  # type: ignore[arg-type]
    assert result.status == "rejected"
    assert result.reason is reason
    stats = store.outcome_stats()
    assert stats.rejected == 1 and stats.rejected_by_reason == {reason.value: 1}
    assert stats.accepted == 0
    (rej,) = store.list_outcome_rejections()
    assert rej.reason == reason.value
    assert rej.value_text == repr(value)  # the raw value survives, NaN included
    assert store.get_decision("d1")["status"] == "pending"


def test_batch_counts_by_status_and_reason(store: Store) -> None:
    batch = [
        ("d0", 110.0, T0 + 30),
        {"decision_id": "d1", "actual_latency_ms": 90.0, "observed_at": T0 + 31},
        ("d0", 110.0, T0 + 32),  # duplicate within the batch
        ("d0", 111.0, T0 + 33),  # conflicting within the batch
        ("missing", 1.0, T0 + 1),
        ("d2", float("nan"), T0 + 40),
        ("d3", -1.0, T0 + 40),
        ("d4", 10.0, T0),  # before decision ts T0 + 4
        ("too", "short"),
        {"decision_id": "d5"},
        None,
    ]
    result = store.record_outcomes(iter(batch))
    assert result.accepted == 2
    assert result.duplicate == 1
    assert result.rejected == 8
    assert result.total == len(batch)
    assert result.rejected_by_reason == {
        "conflicting_duplicate": 1,
        "unknown_decision": 1,
        "not_a_number": 1,
        "negative": 1,
        "observed_before_decision": 1,
        "malformed": 3,
    }
    stats = store.outcome_stats()
    assert stats.accepted == 2 and stats.duplicates == 1 and stats.rejected == 8
    assert stats.rejected_by_reason == result.rejected_by_reason
    assert store.db.table("outcome_rejections").count == 8


def test_batch_duplicate_of_earlier_batch(store: Store) -> None:
    store.record_outcomes([("d0", 110.0, T0 + 30)])
    result = store.record_outcomes([("d0", 110.0, T0 + 30), ("d0", 5.0, T0 + 30)])
    assert (result.accepted, result.duplicate, result.rejected) == (0, 1, 1)


def test_expire_pending_marks_old_decisions_and_counts_them(tmp_path: Path) -> None:
    with Store(tmp_path / "e.db", outcome_max_age_s=60.0) as s:
        s.insert_decisions([_decision(i, ts=T0 + 10 * i) for i in range(10)])  # T0 .. T0+90
        s.record_outcome("d0", 100.0, T0 + 5)
        now = T0 + 125.0  # cutoff T0 + 65: d1..d6 are older and pending
        assert s.expire_pending(now) == 6
        assert s.expire_pending(now) == 0  # idempotent
        stats = s.outcome_stats()
        assert (stats.expired, stats.pending, stats.resolved) == (6, 3, 1)
        assert s.get_decision("d3")["status"] == "expired"
        assert s.get_decision("d0")["status"] == "resolved"
        # A larger explicit age expires nothing more; a smaller one expires more.
        assert s.expire_pending(now, max_age_s=3600.0) == 0
        assert s.expire_pending(now, max_age_s=40.0) == 2
        (event, *_) = s.list_events(kind="outcomes_expired")
        assert event.detail["count"] == 6


def test_outcome_after_expiry_is_rejected_not_lost(tmp_path: Path) -> None:
    with Store(tmp_path / "late.db") as s:
        s.insert_decisions([_decision(1)])
        assert s.expire_pending(T0 + 10_000, max_age_s=100.0) == 1
        result = s.record_outcome("d1", 80.0, T0 + 10_001)
        assert result.status == "rejected" and result.reason is RejectReason.EXPIRED
        stats = s.outcome_stats()
        assert stats.expired == 1 and stats.rejected_by_reason == {"expired": 1}
        (rej,) = s.list_outcome_rejections(reason="expired")
        assert rej.value == 80.0  # kept for whoever wants late labels


@pytest.mark.parametrize(("now", "age"), [(math.nan, 10.0), (T0, 0.0), (T0, -1.0), (T0, math.inf)])
def test_expire_pending_rejects_bad_arguments(store: Store, now: float, age: float) -> None:
    with pytest.raises(ValueError):
        store.expire_pending(now, max_age_s=age)


def test_store_rejects_bad_default_max_age(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Store(tmp_path / "bad.db", outcome_max_age_s=0.0)


_events = st.lists(
    st.tuples(
        st.sampled_from(["d0", "d1", "d2", "d3", "zz"]),
        st.sampled_from([0.0, 50.0, 120.0, -1.0, math.nan, math.inf]),
        st.sampled_from([T0 - 10, T0 + 2.5, T0 + 100]),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events, split=st.integers(min_value=0, max_value=25))
def test_batch_agrees_with_one_by_one(events: list[tuple[str, float, float]], split: int) -> None:
    """Any sequence of reports ends in the same state whether sent singly or in batches."""
    one, batch = Store(":memory:"), Store(":memory:")
    try:
        for s in (one, batch):
            s.insert_decisions([_decision(i) for i in range(4)])
        singles = [one.record_outcome(*e).status for e in events]
        r1 = batch.record_outcomes(events[:split])
        r2 = batch.record_outcomes(events[split:])
        assert r1.accepted + r2.accepted == singles.count("accepted")
        assert r1.duplicate + r2.duplicate == singles.count("duplicate")
        assert r1.rejected + r2.rejected == singles.count("rejected")
        assert one.outcome_stats() == batch.outcome_stats()
        query = "SELECT decision_id, actual_latency_ms, duplicates FROM outcomes ORDER BY 1"
        assert one.conn.execute(query).fetchall() == batch.conn.execute(query).fetchall()
    finally:
        one.close()
        batch.close()
