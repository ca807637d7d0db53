"""The context API over a database the real Router filled (tests/agent_fixtures.py): every tool
answers through `call` without raising, figures follow from the stored rows, and bad input or an
empty database comes back as an error result the model can read."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from context_api.api import EMPTY_HINT, ContextAPI, p_over, parse_time
from context_api.store import Store
from tests.agent_fixtures import (
    FAILURE_START_S,
    SPIKE_END_S,
    SPIKE_START_S,
    START_TS,
    FixtureInfo,
    agent_db,
)
from tools.sim.spec import DEFAULT_FLEET, capacity_rps


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> FixtureInfo:
    return agent_db(tmp_path_factory.mktemp("ctx"))


@pytest.fixture
def api(fixture_db: FixtureInfo):
    store = Store(fixture_db.path)
    yield ContextAPI(store)
    store.close()


READ_CALLS = {
    "fleet_state": {},
    "backend_detail": {"backend": "b0"},
    "forecasts": {"tier": "premium"},
    "capacity_risk": {"minutes": 5},
    "drift_status": {},
    "anomalies": {"since": "-60m"},
    "quality_timeline": {},
    "experiments": {},
    "recent_alerts": {},
    "find_decisions": {"limit": 3},
    "recommend_backend": {"tier": "premium"},
    "model_versions": {},
    "performance": {},
    "retrain_check": {},
}


def test_every_tool_has_a_spec_with_an_object_schema(api: ContextAPI) -> None:
    tools = api.tools(writes=True)
    names = [t.name for t in tools]
    assert len(names) == len(set(names))
    assert set(READ_CALLS) | {"explain_decision"} <= set(names)
    for t in tools:
        spec = t.spec()
        assert spec["input_schema"]["type"] == "object"
        assert len(spec["description"]) > 40
    writes = {
        "request_retrain",
        "record_drift_reports",
        "train_challenger",
        "start_experiment",
        "evaluate_experiment",
        "propose_model_change",
    }
    assert {t.name for t in tools if t.writes} == writes
    assert {t.name for t in api.tools()} == set(names) - writes


@pytest.mark.parametrize("name", sorted(READ_CALLS))
def test_read_tools_answer_and_match_their_output_model(api: ContextAPI, name: str) -> None:
    out = api.call(name, READ_CALLS[name])
    assert out.ok, out.error
    tool = next(t for t in api.tools() if t.name == name)
    tool.output_model.model_validate(out.content)


def test_now_is_the_newest_telemetry_and_times_parse(
    api: ContextAPI, fixture_db: FixtureInfo
) -> None:
    now = fixture_db.now
    assert api.now() == now
    assert parse_time("-30m", now) == now - 1800
    assert parse_time("2023-11-14T22:20:00Z", now) == 1_700_000_400.0
    assert parse_time("22:20", now) == 1_700_000_400.0
    assert parse_time(1234.5, now) == 1234.5
    state = api.call("fleet_state", {"at": "22:30"}).content
    assert state["now"] == "2023-11-14T22:30:00Z"


def test_breach_probability_reads_the_interval_as_gaussian() -> None:
    assert p_over(300.0, 200.0, 400.0, 300.0) == pytest.approx(0.5)
    # SLA at the interval's upper edge: 5% above it (half-width = 1.645 sigma).
    assert p_over(300.0, 200.0, 400.0, 400.0) == pytest.approx(0.05, abs=1e-4)
    assert p_over(None, 1.0, 2.0, 3.0) is None


def test_fleet_state_shows_the_ejected_backend_and_recent_quality(api: ContextAPI) -> None:
    fs = api.call("fleet_state", {}).content
    by = {b["backend"]: b for b in fs["backends"]}
    assert set(by) == {"b0", "b1", "b2", "b3"}
    assert by["b3"]["status"] == "ejected" and by["b3"]["ejected"]
    assert by["b0"]["capacity_rps"] == pytest.approx(capacity_rps(DEFAULT_FLEET[0]))
    assert fs["recent_requests"] > 1000
    assert 0 <= fs["recent_sla_violation_pct"] <= 100
    assert fs["model_version"].startswith("rf-")
    for b in fs["backends"]:
        p = b["forecast"]["p_over_sla"]
        assert p is None or 0.0 <= p <= 1.0


def test_capacity_risk_lists_the_unavailable_backend_and_sorted_probabilities(
    api: ContextAPI,
) -> None:
    cr = api.call("capacity_risk", {"minutes": 5}).content
    probs = [r["probability"] for r in cr["risks"]]
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert any(r["backend"] == "b3" and r["kind"] == "unavailable" for r in cr["risks"])
    # b3 is ejected, so the usable capacity is the other three backends'.
    usable = sum(capacity_rps(s) for s in DEFAULT_FLEET if s.name != "b3")
    assert cr["fleet_capacity_rps"] == pytest.approx(usable, abs=0.01)
    longer = api.call("capacity_risk", {"minutes": 30}).content
    assert any("5 minutes ahead" in n for n in longer["notes"])


def test_quality_timeline_finds_the_spike_and_its_cause(api: ContextAPI) -> None:
    tl = api.call("quality_timeline", {"bucket_minutes": 5}).content
    start, end = START_TS + SPIKE_START_S, START_TS + SPIKE_END_S
    assert tl["degraded_from"] is not None
    assert parse_time(tl["degraded_from"], 0) <= end
    assert parse_time(tl["degraded_until"], 0) >= start
    cause = tl["likely_causes"][0]
    assert cause["kind"] == "chaos" and cause["subject"] == "b0"
    assert "latency spike" in cause["summary"]
    # the spiking backend's latency shows it (the router moved most traffic off it, so other
    # backends may carry more of the violations)
    b0 = next(r for r in tl["backends"] if r["backend"] == "b0")
    assert b0["p95_ms_during"] > 2 * b0["p95_ms_before"]
    counts = [r["violations"] for r in tl["backends"]]
    assert counts == sorted(counts, reverse=True)
    ts = [e["ts"] for e in tl["events"]]
    assert ts == sorted(ts)
    kinds = {e["kind"] for e in tl["events"]}
    assert {"chaos", "anomaly", "alert", "drift", "model_change"} <= kinds
    peak = tl["peak"]
    assert peak["violation_pct"] > 2 * tl["reference_violation_pct"]


def test_quality_timeline_around_a_named_time(api: ContextAPI) -> None:
    tl = api.call("quality_timeline", {"around": "22:30"}).content
    assert tl["since"] == "2023-11-14T22:00:00Z" and tl["until"] == "2023-11-14T23:00:00Z"
    assert tl["likely_causes"][0]["subject"] == "b0"


def test_drift_status_runs_tests_with_minimum_samples(api: ContextAPI) -> None:
    ds = api.call("drift_status", {}).content
    assert ds["max_severity"] in ("none", "low", "medium", "high", "critical")
    for f in ds["live"]:
        if f["status"] != "insufficient_data":
            assert f["n_reference"] >= 20 and f["n_current"] >= 20
    assert any(r["backend"] == "b0" for r in ds["stored_reports"])


def test_explain_decision_gives_candidates_reason_and_outcome(
    api: ContextAPI, fixture_db: FixtureInfo
) -> None:
    did = fixture_db.ambiguous_ids[0]
    ex = api.call("explain_decision", {"decision_id": did}).content
    assert ex["decision_id"] == did and ex["ambiguous"]
    assert ex["ambiguity_text"]
    assert {c["backend"] for c in ex["candidates"]} == {"b0", "b1", "b2", "b3"}
    assert ex["chosen"]["backend"] == ex["backend"]
    assert ex["decided_by"] == "policy"
    assert ex["outcome"]["status"] in ("resolved", "pending", "expired")
    assert any(did in line for line in ex["explanation"])


def test_recommendation_never_names_an_ejected_backend(api: ContextAPI) -> None:
    for tier in ("premium", "standard", "batch"):
        rec = api.call("recommend_backend", {"tier": tier}).content
        assert rec["recommended"]["backend"] != "b3"
        assert "b3" in rec["excluded"]
        assert rec["sla_ms"] == {"premium": 250.0, "standard": 300.0, "batch": 1000.0}[tier]


def test_experiment_is_evaluated_live(api: ContextAPI) -> None:
    (e,) = api.call("experiments", {}).content["experiments"]
    live = e["live"]
    assert live["recommendation"] == "promote"
    assert live["mae_challenger_ms"] < live["mae_champion_ms"]
    assert live["n_champion"] == live["n_challenger"] >= 100


@pytest.mark.parametrize(
    ("name", "args", "needle"),
    [
        ("explain_decision", {"decision_id": "no-such-id"}, "find_decisions"),
        ("backend_detail", {"backend": "b9"}, "unknown backend"),
        ("capacity_risk", {"minutes": -1}, "invalid input"),
        ("capacity_risk", {"minutes": math.nan}, "invalid input"),
        ("anomalies", {"since": "yesterday-ish"}, "cannot read the time"),
        ("forecasts", {"tier": "gold"}, "unknown tier"),
        ("fleet_state", {"surprise": 1}, "invalid input"),
        ("no_such_tool", {}, "unknown tool"),
        ("quality_timeline", {"since": "-10m", "until": "-20m"}, "window is empty"),
    ],
)
def test_bad_input_is_an_error_result_not_an_exception(
    api: ContextAPI, name: str, args: dict, needle: str
) -> None:
    out = api.call(name, args)
    assert not out.ok
    assert needle in out.error


def test_a_failing_tool_is_an_error_result(
    api: ContextAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("context_api.queries.latest_points", boom)
    out = api.call("fleet_state", {})
    assert not out.ok and "disk on fire" in out.error


def test_empty_database_says_what_to_run(tmp_path: Path) -> None:
    with Store(tmp_path / "empty.db") as store:
        api = ContextAPI(store)
        assert api.is_empty()
        for name in ("fleet_state", "capacity_risk", "quality_timeline", "drift_status"):
            out = api.call(name, {})
            assert not out.ok and out.error == EMPTY_HINT
        assert "arcpoint demo" in EMPTY_HINT
        assert api.call("experiments", {}).content["experiments"] == []


def test_writes_stay_within_policy(fixture_db: FixtureInfo, tmp_path: Path) -> None:
    info = agent_db(tmp_path)
    with Store(info.path) as store:
        api = ContextAPI(store)
        check = api.call("retrain_check", {}).content
        asked = api.call("request_retrain", {"reason": "drift on b0"}).content
        assert asked["ok"] == check["retrain"]
        retrain_events = store.list_events(kind="retrain_requested")
        assert len(retrain_events) == (1 if check["retrain"] else 0)
        before = len(store.list_drift_reports(limit=None))
        rec = api.call("record_drift_reports", {"min_severity": "medium"}).content
        assert rec["ok"]
        assert len(store.list_drift_reports(limit=None)) == before + len(rec["detail"]["ids"])


def test_failure_window_shows_in_backend_detail(api: ContextAPI) -> None:
    detail = api.call("backend_detail", {"backend": "b3", "window_minutes": 10}).content
    assert detail["state"]["status"] == "ejected"
    assert detail["error_rate_max"] == 1.0
    assert any("backend failure" in e["summary"] for e in detail["events"])
    assert parse_time(detail["now"], 0) >= START_TS + FAILURE_START_S
