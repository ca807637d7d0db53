"""Answers that never pretend: unknown entities are named, out-of-scope questions and metrics
Arcpoint does not record are said to be so (never a fleet dump), time windows come from the
question, follow-ups keep the thread's backend and window, and recommendations never name a
backend forecast over the SLA while another is within it, nor treat an unforecast one as safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.graph import OperatorGraph
from agents.offline import resolve
from context_api.api import ContextAPI
from context_api.store import Store
from tests.agent_fixtures import FixtureInfo, agent_db
from tools.telemetry import TelemetryPoint


@pytest.fixture
def db(tmp_path: Path) -> FixtureInfo:
    return agent_db(tmp_path)


def _thread(db: FixtureInfo, *questions: str) -> list:
    with (
        Store(db.path) as store,
        OperatorGraph(ContextAPI(store), checkpoint_db=db.path) as graph,
    ):
        return [graph.ask(q, thread_id="thread-1") for q in questions]


def test_unknown_entities_are_named_and_nothing_else_is_said(db: FixtureInfo) -> None:
    b9, decision, version = _thread(
        db,
        "Is b9 healthy?",
        "Why was decision fx-99999999 routed to b1?",
        "When was model version rf-0000deadbeef promoted?",
    )
    assert "no backend b9" in b9.answer and "b0, b1, b2, b3" in b9.answer
    assert "OK" not in b9.answer and "p95" not in b9.answer
    assert "No stored decision 'fx-99999999'" in decision.answer
    assert "Unknown model version 'rf-0000deadbeef'" in version.answer
    assert db.model_version in version.answer  # what does exist


@pytest.mark.parametrize(
    ("question", "said"),
    [
        ("What's the weather in Paris?", "I can't answer that: it is outside"),
        ("Write me a poem about load balancers", "I can't answer that: it is outside"),
        ("What is the GPU memory usage of b1?", "does not record GPU"),
        ("How hot are the b0 disks running?", "does not record disk"),
    ],
)
def test_out_of_scope_and_unrecorded_get_no_fleet_dump(
    db: FixtureInfo, question: str, said: str
) -> None:
    [res] = _thread(db, question)
    assert said in res.answer and res.tools_called == []
    assert "Fleet state" not in res.answer and "healthy" not in res.answer.lower()


def test_follow_ups_keep_the_threads_backend_and_window(db: FixtureInfo) -> None:
    first, second, third = _thread(
        db, "Compare b0 and b2 over the last 20 minutes", "and the cost?", "what about b1?"
    )
    args = [e["input"] for r in (first, second, third) for e in r.evidence]
    assert args[0] == {"since": "-20m", "backends": ["b0", "b2"]}
    assert args[1] == {"since": "-20m", "backends": ["b0", "b2"]}  # kept both
    assert args[2] == {"since": "-20m", "backends": ["b1"]}  # new backend, same subject
    assert "b1" in third.answer and "Cost" in third.answer


def test_resolving_a_follow_up() -> None:
    history = ["Is b0 healthy?"]
    assert resolve("and b2?", history).name == "backend"
    assert resolve("and b2?", history).backends == ["b2"]
    assert resolve("is it overloaded?", history).backends == ["b0"]
    quality = resolve("what about the last 2 hours?", ["Why did quality drop in the last hour?"])
    assert quality.name == "quality" and quality.window.since == "-2h"
    # a new, self-contained question does not inherit
    assert resolve("Is the forecaster drifting?", history).backends == []


@pytest.mark.parametrize(
    ("history", "question", "name", "extra"),
    [
        # a new fleet-wide question after an explain does not inherit the decision
        (
            ["Why was decision d-1 routed to b1?"],
            "How many requests failed in the last 30 minutes?",
            "traffic",
            {"decision_id": None},
        ),
        (["Is the forecaster drifting?"], "How many backends are there?", "fleet", {}),
        (
            ["How is b2 doing?"],
            "Which backend had the most errors today?",
            "rank",
            {"measure": "errors", "ascending": False},
        ),
        ([], "Which backend is the fastest?", "rank", {"measure": "latency", "ascending": True}),
        ([], "Is any backend down?", "down", {}),
        ([], "Are we meeting our SLA?", "traffic", {}),
        ([], "Restart b2 please", "action", {}),
        ([], "Can you drain b1?", "action", {}),
        (["What did b2 cost?"], "What will happen if b3 crashes?", "what_if", {"backends": ["b3"]}),
        ([], "What's the p99 latency of b2?", "unrecorded", {}),
        ([], "Is it safe to take b3 offline for maintenance?", "what_if", {"backends": ["b3"]}),
        (["What capacity risks do we run?"], "What is the weather like on b2?", "unknown", {}),
        (["Why was the last request sent to b0?"], "What is the forecast for b1?", "backend", {}),
        ([], "Who approved the current model?", "model_history", {}),
        ([], "Show me the latest decisions", "explain", {"decision_id": None}),
        ([], "What changed in the last 30 minutes?", "quality", {}),
        (["Is b0 healthy?"], "b2 now?", "backend", {"backends": ["b2"]}),
        (
            ["What did the fleet cost?"],
            "Did anything happen between 22:30 and 22:40?",
            "quality",
            {},
        ),
        ([], "What's the trend for b0 over the last 20 minutes?", "backend", {"backends": ["b0"]}),
        ([], "Which backend is the cheapest?", "rank", {"measure": "cost", "ascending": True}),
        ([], "Is b1 more expensive than b2?", "rank", {"measure": "cost", "ascending": False}),
        # an out-of-scope question in the history is not the subject a later follow-up keeps
        (["Is b0 healthy?", "What's the weather like on b3 today?"], "and b2?", "backend", {}),
    ],
)
def test_off_script_questions_are_read_for_what_they_ask(
    history: list[str], question: str, name: str, extra: dict
) -> None:
    intent = resolve(question, history)
    assert intent.name == name
    for key, value in extra.items():
        assert getattr(intent, key) == value


def test_windows_from_the_question_reach_the_tools(db: FixtureInfo) -> None:
    today, at = _thread(db, "Why did quality drop today?", "What happened at 22:30?")
    assert today.evidence[0]["input"] == {"since": "today"}
    assert at.evidence[0]["input"] == {"around": "22:30"}
    assert "latency spike" in today.answer and "b0" in today.answer


def test_model_history_names_the_serving_version_and_how_it_got_there(db: FixtureInfo) -> None:
    [res] = _thread(db, "Which model version is serving and when was it promoted?")
    assert res.agent == "feedback_learner" and "model_history" in res.tools_called
    assert f"Serving forecaster: {db.model_version}" in res.answer
    assert "No experiments are stored" not in res.answer


def _ingested(path: Path, p95: dict[str, float]) -> Path:
    """A store with ingested telemetry only: no decisions, no forecaster, so no forecasts."""
    with Store(path) as store:
        points = [
            TelemetryPoint(1_700_000_000.0 + 10 * k, b, 10.0, v * 0.6, v, 0.0, 1.0)
            for k in range(40)
            for b, v in p95.items()
        ]
        store.insert_telemetry(points, source="ingest")
    return path


def test_without_forecasts_a_recommendation_rests_on_measured_p95_and_says_so(
    tmp_path: Path,
) -> None:
    # b0 (the H100) is the cheapest per request of the default fleet and b2 costs what b3 does,
    # but their p95 are over the SLA; b1 (the L40S) is within it but dearer than b3.
    db = _ingested(tmp_path / "ingested.db", {"b0": 900.0, "b1": 180.0, "b2": 400.0, "b3": 260.0})
    with Store(db) as store:
        rec = ContextAPI(store).call("recommend_backend", {"tier": "standard"}).content
        assert rec["basis"] == "measured_p95" and not rec["confident"]
        assert rec["recommended"]["backend"] == "b3"  # cheapest whose p95 is within 300 ms
        assert set(rec["unknown"]) == {"b0", "b1", "b2", "b3"}
        with OperatorGraph(ContextAPI(store)) as graph:
            answer = graph.ask("Which backend should I use for a standard request?").answer
    assert "use b3" in answer and "use b0" not in answer
    assert "no forecast" in answer.lower()


def test_none_is_recommended_when_nothing_is_known_to_be_within_the_sla(tmp_path: Path) -> None:
    db = _ingested(tmp_path / "slow.db", {"b0": 700.0, "b1": 900.0})
    with Store(db) as store:
        rec = ContextAPI(store).call("recommend_backend", {}).content
    assert rec["recommended"] is None and rec["basis"] == "none"


def test_a_backend_forecast_over_the_sla_is_never_recommended_over_one_within(
    db: FixtureInfo,
) -> None:
    with Store(db.path) as store:
        api = ContextAPI(store)
        for tier in ("premium", "standard", "batch"):
            rec = api.call("recommend_backend", {"tier": tier}).content
            within = [
                r
                for r in [rec["recommended"], *rec["alternatives"]]
                if r and r["forecast_ms"] is not None and r["forecast_ms"] <= rec["sla_ms"]
            ]
            if within:
                assert rec["recommended"]["forecast_ms"] <= rec["sla_ms"], tier


def test_what_if_runs_the_simulator_forward_from_the_current_demand(db: FixtureInfo) -> None:
    drain, fail, unknown = _thread(
        db, "What happens if we drain b2?", "and if it fails?", "What if b9 goes down?"
    )
    [d] = [e for e in drain.evidence if e["tool"] == "what_if"]
    assert d["input"] == {"action": "drain", "backend": "b2"}
    out = d["result"]
    assert out["demand_rps"] > 0 and out["policy"] == "predictive"
    b2 = next(r for r in out["backends"] if r["backend"] == "b2")
    assert b2["scenario_rps"] == 0.0 and b2["baseline_rps"] > 0  # drained: no traffic
    assert out["overall"]["scenario"]["requests"] == out["overall"]["baseline"]["requests"]
    assert out["summary"] in drain.answer
    # the follow-up keeps the backend and asks about a failure instead
    [f] = [e for e in fail.evidence if e["tool"] == "what_if"]
    assert f["input"] == {"action": "fail", "backend": "b2"}
    assert "no backend b9" in unknown.answer
