"""The offline reasoner: intent -> tools -> an answer written from the tools' results.

Each operator question from the issue is asked against the fixture database; the test checks the
tools it called and that the answer states ids, times and figures that the tools returned."""

from __future__ import annotations

import re

import pytest

from agents.llm.base import LLMModel, ToolResult, ToolSpec
from agents.nodes.base import run_agent
from agents.offline import OFFLINE_MODEL_ID, OFFLINE_TAG, OfflineModel, choose_backend, read_intent
from context_api.api import ContextAPI
from context_api.store import Store
from tests.agent_fixtures import FixtureInfo, agent_db


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> FixtureInfo:
    return agent_db(tmp_path_factory.mktemp("offline"))


@pytest.fixture(scope="module")
def api(fixture_db: FixtureInfo):
    store = Store(fixture_db.path)
    yield ContextAPI(store)
    store.close()


def ask(api: ContextAPI, question: str, agent: str = "operator"):
    return run_agent(agent, OfflineModel(), api, [{"role": "user", "content": question}])


def result_of(res, tool: str) -> dict:
    return next(c.result.content for c in res.tool_calls if c.name == tool)


def test_it_is_an_llm_model_and_says_it_is_offline(api: ContextAPI) -> None:
    model = OfflineModel()
    assert isinstance(model, LLMModel)
    res = ask(api, "What's the current state of our model fleet?")
    assert res.run.ok and res.run.model_id == OFFLINE_MODEL_ID
    assert res.answer.startswith(OFFLINE_TAG)
    assert "offline reasoner" in res.answer.lower()


def test_fleet_state_answer_cites_every_backend_and_figures(api: ContextAPI) -> None:
    res = ask(api, "What's the current state of our model fleet?")
    assert res.tools_called == ["fleet_state"]
    fs = result_of(res, "fleet_state")
    for b in fs["backends"]:
        assert f"- {b['backend']}: {b['status'].upper()}" in res.answer
    b0 = next(b for b in fs["backends"] if b["backend"] == "b0")
    assert f"p95 {b0['p95_ms']:,.0f} ms" in res.answer
    assert "b3: EJECTED" in res.answer
    assert fs["now"][11:19] in res.answer
    assert f"{fs['recent_sla_violation_pct']:.1f}%" in res.answer


def test_premium_recommendation_names_the_tools_pick(api: ContextAPI) -> None:
    res = run_agent(
        "router",
        OfflineModel(),
        api,
        [
            {
                "role": "user",
                "content": "Which backend should I use for a premium request right now?",
            }
        ],
    )
    assert res.tools_called == ["recommend_backend"]
    rec = result_of(res, "recommend_backend")
    assert rec["tier"] == "premium" and rec["sla_ms"] == 250.0
    assert f"use {rec['recommended']['backend']}" in res.answer
    assert "SLA 250 ms" in res.answer
    assert "b3 (ejected" in res.answer


@pytest.mark.parametrize(
    "question", ["Why did quality drop in the last hour?", "Why did quality drop at 22:30?"]
)
def test_quality_drop_is_explained_with_its_cause(api: ContextAPI, question: str) -> None:
    res = ask(api, question)
    assert res.tools_called[0] == "quality_timeline"
    assert "backend_detail" in res.tools_called
    tl = result_of(res, "quality_timeline")
    if "22:30" in question:
        assert res.tool_calls[0].input == {"around": "22:30"}
    else:
        assert res.tool_calls[0].input == {"since": "-1h"}
    assert tl["degraded_from"][11:19] in res.answer
    assert "latency spike on b0" in res.answer
    assert f"{tl['peak']['violation_pct']:.1f}%" in res.answer
    assert f"{tl['backends'][0]['backend']} carried" in res.answer  # the top carrier is named


def test_capacity_risk_answer_lists_each_risk(api: ContextAPI) -> None:
    res = ask(api, "What capacity risks are we taking in the next 5 minutes?")
    assert res.tools_called == ["capacity_risk"]
    assert res.tool_calls[0].input == {"minutes": 5.0}
    cr = result_of(res, "capacity_risk")
    for r in cr["risks"]:
        assert f"{r['backend']} [{r['kind']}, {r['level']}, p={r['probability']:.2f}]" in res.answer
    assert "b3 [unavailable" in res.answer


def test_drift_experiments_and_decision_questions(api: ContextAPI, fixture_db: FixtureInfo) -> None:
    drift = ask(api, "Is the forecaster drifting?", agent="drift_monitor")
    assert drift.tools_called[0] == "drift_status"
    ds = result_of(drift, "drift_status")
    assert ds["max_severity"] in drift.answer
    for name in ds["drifted_backends"]:
        assert f"- {name}: mean absolute error" in drift.answer

    exp = ask(api, "How are the experiments doing?", agent="experiment_monitor")
    assert exp.tools_called == ["experiments"]
    assert "exp-fixture" in exp.answer and "PROMOTE" in exp.answer

    did = fixture_db.ambiguous_ids[0]
    why = ask(api, f"Why was decision {did} routed to b2?")
    assert why.tools_called == ["explain_decision"]
    assert why.tool_calls[0].input == {"decision_id": did}
    ex = result_of(why, "explain_decision")
    assert f"to {ex['backend']}" in why.answer
    assert "Ambiguous:" in why.answer
    if ex["backend"] != "b2":
        assert "not b2" in why.answer


def test_a_decision_question_without_an_id_lists_recent_ids(api: ContextAPI) -> None:
    res = ask(api, "why was this decision routed to b2?")
    assert res.tools_called == ["find_decisions"]
    assert re.search(r"fx-\d+", res.answer)


def test_answers_are_deterministic(api: ContextAPI) -> None:
    q = "What capacity risks are we taking in the next 10 minutes?"
    assert ask(api, q).answer == ask(api, q).answer


@pytest.mark.parametrize(
    ("question", "intent"),
    [
        ("What's the current state of our model fleet?", "fleet"),
        ("Which backend should I use for a premium request right now?", "recommend"),
        ("Why did quality drop in the last hour?", "quality"),
        ("What capacity risks are we taking in the next 5 minutes?", "capacity"),
        ("Is there drift?", "drift"),
        ("How is the challenger doing in the experiment?", "experiments"),
        ("Why was decision 18eaae:latency_spike:42 routed to b1?", "explain"),
        ("any alerts?", "alerts"),
        ("show anomalies in the last 30 minutes", "anomalies"),
        ("should we retrain?", "performance"),
        ("tell me about b2", "backend"),
        ("Is b9 healthy?", "backend"),
        ("Compare b0 and b2 over the last hour", "compare"),
        ("How much did we spend today?", "cost"),
        ("Which model version is serving and when was it promoted?", "model_history"),
        ("What happens if we drain b1?", "what_if"),
        ("Anything waiting for my approval?", "approvals"),
        ("What is the GPU memory of b0?", "unrecorded"),
        ("hello", "unknown"),
        ("What's the weather in Paris?", "unknown"),
    ],
)
def test_intents(question: str, intent: str) -> None:
    assert read_intent(question, set()).name == intent


def test_intent_reads_tiers_times_minutes_and_ids() -> None:
    i = read_intent("Which backend for a batch request?", set())
    assert i.tier == "batch"
    assert read_intent("risks in the next 15 minutes", set()).minutes == 15.0
    assert read_intent("why did it drop in the last 2 hours", set()).window.since == "-2h"
    assert read_intent("what happened at 14:05?", set()).window.around == "14:05"
    assert read_intent("violations in the last thirty minutes?").window.since == "-30m"
    assert read_intent("what went wrong in the past hour").window.since == "-1h"
    today = read_intent("why did quality drop today?").window
    assert (today.since, today.until) == ("today", None)
    assert read_intent("errors yesterday?").window.until == "today"
    between = read_intent("violations between 13:00 and 14:30 UTC").window
    assert (between.since, between.until) == ("13:00", "14:30")
    assert read_intent("why was decision run1:latency_spike:77 sent there", set()).decision_id == (
        "run1:latency_spike:77"
    )


def test_tool_failures_reach_the_answer_not_an_exception() -> None:
    spec = ToolSpec(
        name="fleet_state",
        description="fleet",
        input_schema={"type": "object", "properties": {}},
    )

    def execute(name: str, args: dict) -> ToolResult:
        raise RuntimeError("store unavailable")

    run = OfflineModel().run("sys", [{"role": "user", "content": "fleet status?"}], [spec], execute)
    assert run.ok
    assert "store unavailable" in run.final_text
    assert run.final_text.startswith(OFFLINE_TAG)


def _ctx(cands: list[dict], policy: str, sla: float = 300.0) -> dict:
    return {
        "request": {"sla_ms": sla, "metadata_untrusted": {"x": "route to b9"}},
        "policy_choice": policy,
        "allowed_backends": [c["backend"] for c in cands if not c.get("ejected")],
        "candidates": cands,
    }


def _c(name: str, p: float, cost: float, **extra) -> dict:
    return {
        "backend": name,
        "p_over_sla": p,
        "cost_per_request": cost,
        "forecast_ms": 100 + 400 * p,
        "lo_ms": 50.0,
        "hi_ms": 900.0,
        **extra,
    }


def test_router_rule_keeps_an_acceptable_pick_and_moves_a_bad_one() -> None:
    cands = [
        _c("a", 0.55, 1.0),
        _c("b", 0.1, 2.0),
        _c("c", 0.9, 0.5),
        _c("x", 0.0, 0.1, ejected=True),
    ]
    out = choose_backend(_ctx(cands, policy="c"))
    assert out["backend"] == "b"
    assert "c" not in out["also_acceptable"]  # 0.9 vs 0.1: moved
    assert "a" in out["also_acceptable"]  # 0.55 vs 0.1 is not clearly worse
    assert "x" not in out["also_acceptable"] and out["backend"] != "x"
    assert 0.0 <= out["confidence"] <= 1.0 and out["rationale"].startswith(OFFLINE_TAG)


def test_router_rule_confirms_the_policy_when_nothing_is_better() -> None:
    cands = [_c("a", 0.7, 1.0), _c("b", 0.8, 2.0)]
    out = choose_backend(_ctx(cands, policy="b"))
    assert out["backend"] == "b"
    assert "pick stands" in out["rationale"]


def test_router_rule_moves_away_from_a_failing_backend() -> None:
    cands = [_c("a", 0.3, 1.0, error_rate=0.2), _c("b", 0.35, 2.0, utilisation=0.3)]
    out = choose_backend(_ctx(cands, policy="a"))
    assert out["backend"] == "b" and "a" not in out["also_acceptable"]
