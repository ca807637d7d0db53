"""The Escalator (the Router's escalate hook): answers validated against the allowed set, the
deterministic policy deciding on every failure with the reason recorded, shared answers within a
tick, the load guard, and a trace for every escalation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.escalation import FALLBACK_MARK, Escalator
from agents.llm import Budget
from agents.offline import OfflineModel
from agents.prompts import load_prompt
from agents.router import Router
from context_api.fleet_state import FleetState
from context_api.store import Store
from context_api.traces import TraceStore
from tests.agent_fixtures import (
    ScriptedAPI,
    ambiguous_decision,
    candidate,
    claude_error,
    claude_message,
    claude_model,
    claude_tool_use,
)
from tools.routing import BackendInfo, Decision, RouteRequest
from tools.telemetry import TelemetryPoint


@pytest.fixture
def traces(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    yield TraceStore(store)
    store.close()


def request(rid: str = "r1", **metadata: str) -> RouteRequest:
    return RouteRequest(rid, tier="standard", metadata=metadata)


def test_offline_answer_is_accepted_and_traced(traces: TraceStore) -> None:
    esc = Escalator(mode="override", traces=traces)
    decision = ambiguous_decision(backend="b1")  # b1 is clearly over the SLA
    out = esc(request(), decision)
    assert out.policy == "router_agent"
    assert out.backend == "b2"  # the only backend clearly within the SLA
    assert out.decision_id == decision.decision_id
    assert esc.stats.accepted == 1 and esc.stats.changed == 1
    (record,) = esc.records
    assert record.accepted and record.final_backend == "b2" and record.policy_backend == "b1"
    assert 0.0 <= record.confidence <= 1.0

    stored = traces.get(record.trace_id)
    assert stored.kind == "escalation" and stored.parent_id == decision.decision_id
    assert stored.fallback_reason is None
    assert stored.prompt_hash == load_prompt("router").sha256
    assert stored.model_versions == {"forecaster": "rf-test"}
    assert stored.final["backend"] == "b2" and stored.final["rationale"]
    names = [(s.type, s.name) for s in stored.steps]
    assert ("node", "router") in names and ("node", "validate") in names
    assert ("tool_call", "submit_decision") in names
    assert [t for t, _ in names].count("llm_turn") == 1  # one model call
    assert any(t == "llm_turn" for t, _ in names)


def test_an_acceptable_policy_pick_is_kept(traces: TraceStore) -> None:
    out = Escalator(mode="override", traces=traces)(request(), ambiguous_decision(backend="b0"))
    assert out.backend == "b0" and out.policy == "router_agent"


def test_router_calls_it_only_for_ambiguous_requests() -> None:
    from tests.router_fakes import FakeView
    from tools.routers.base import PolicyBase, RequestInfo
    from tools.routers.predictive.policy import Choice

    class Stub(PolicyBase):
        """Picks b1; a request whose id is odd is a close call."""

        name = "stub"

        def choose(self, request: RequestInfo, view: Any) -> int:
            amb = "close_call" if request.request_id % 2 else None
            self.last = Choice(1, "likeliest_at_risk", amb, [0.6, 0.6, 0.9], [1.0] * 3, [False] * 3)
            return 1

    esc = Escalator(mode="override")
    fleet = FleetState(tuple(BackendInfo(f"b{i}", 1.0) for i in range(3)))
    router = Router(Stub(), fleet, escalate=esc, escalation_budget=None)  # no cap: plumbing only
    view = FakeView(3, now_s=1_700_000_000.0)
    req = [RequestInfo(i, view.now_s, 512, "standard", 1000.0, 30_000.0) for i in range(2)]
    assert router.route(req[0], view).policy == "stub"
    assert router.route(req[1], view).policy == "router_agent"
    assert router.stats.escalated == esc.stats.escalated == 1


def test_requests_of_one_tick_share_one_agent_run(traces: TraceStore) -> None:
    esc = Escalator(mode="override", traces=traces)
    first = esc(request("r1"), ambiguous_decision("d1", backend="b1"))
    second = esc(request("r2"), ambiguous_decision("d2", backend="b0"))
    assert esc.stats.agent_runs == 1 and esc.stats.cache_hits == 1
    assert first.backend == "b2" and second.backend == "b0"  # b0 stays: acceptable
    shared = traces.get(esc.records[1].trace_id)
    assert shared.parent_id == "d2"
    assert shared.inputs["shared_trace_id"] == esc.records[0].trace_id
    # A new tick asks again.
    esc(request("r3"), ambiguous_decision("d3", backend="b1", ts=1_700_000_010.0))
    assert esc.stats.agent_runs == 2


class SlowOffline:
    """The offline reasoner, but the (fake) clock moves on while it thinks."""

    name = "slow"
    model_id = "slow-offline"
    cost_basis = "offline:free"

    def __init__(self, clock: list[float], seconds: float) -> None:
        self.clock, self.seconds, self.inner = clock, seconds, OfflineModel()

    def next_turn(self, request: Any) -> Any:
        self.clock[0] += self.seconds
        return self.inner.next_turn(request)


def fallback_of(decision: Any) -> str | None:
    _, mark, why = decision.reason.partition(FALLBACK_MARK)
    return why if mark else None


def test_a_late_answer_is_a_timeout_and_the_policy_decides(traces: TraceStore) -> None:
    now = [0.0]
    esc = Escalator(
        SlowOffline(now, 5.0),
        deadline_s=1.5,
        inline=True,
        clock=lambda: now[0],
        traces=traces,
        mode="override",
    )
    decision = ambiguous_decision(backend="b1")
    out = esc(request(), decision)
    assert out.backend == "b1" and out.policy == "predictive"
    assert fallback_of(out) == "timeout"
    assert esc.stats.fallbacks == {"timeout": 1}
    assert traces.get(esc.records[0].trace_id).fallback_reason == "timeout"


class Blocking:
    """A model that does not answer until released (a hung network call)."""

    name = "blocking"
    model_id = "blocking-1"
    cost_basis = "offline:free"

    def __init__(self) -> None:
        self.release = threading.Event()

    def next_turn(self, request: Any) -> Any:
        self.release.wait(10)
        return OfflineModel().next_turn(request)


def test_the_router_never_waits_past_the_deadline_for_a_hung_model(traces: TraceStore) -> None:
    model = Blocking()
    esc = Escalator(model, deadline_s=0.05, workers=1, traces=traces, mode="override")
    try:
        out = esc(request(), ambiguous_decision("d1", backend="b1"))
        assert fallback_of(out) == "timeout" and out.backend == "b1"
        # The only worker is still stuck: the next escalation does not queue behind it.
        busy = esc(request("r2"), ambiguous_decision("d2", backend="b1", ts=1_700_000_010.0))
        assert fallback_of(busy) == "agent_busy"
        model.release.set()
        deadline = time.monotonic() + 10
        while traces.count() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        by_parent = {t.parent_id: t for t in traces.list(kind="escalation")}
        assert by_parent["d2"].fallback_reason == "agent_busy"
        late = by_parent["d1"]  # the abandoned run is audited when it ends
        assert late.fallback_reason == "timeout"
        assert "discarded" in traces.get(late.trace_id).final["detail"]
    finally:
        model.release.set()
        esc.close()


def run_claude(*steps: Any, budget: Budget | None = None) -> tuple[Any, Escalator, ScriptedAPI]:
    api = ScriptedAPI(*steps)
    esc = Escalator(claude_model(api, budget=budget), deadline_s=5.0, mode="override")
    try:
        out = esc(request(), ambiguous_decision(backend="b1"))
    finally:
        esc.close()
    return out, esc, api


def test_claude_answer_within_the_allowed_set_is_accepted() -> None:
    out, esc, api = run_claude(
        claude_tool_use(
            "t1",
            "submit_decision",
            {"backend": "b2", "confidence": 0.9, "rationale": "b2: 120 ms, ~0% breach."},
        ),
    )
    assert out.backend == "b2" and out.policy == "router_agent"
    assert esc.records[0].confidence == 0.9
    [body] = api.bodies  # one model call per escalation
    assert body["system"][0]["text"] == load_prompt("router").text
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "submit_decision",
        "disable_parallel_tool_use": True,
    }
    assert [t["name"] for t in body["tools"]] == ["submit_decision"]
    # the trusted routing context is in the first message, as data the model reads
    context = body["messages"][0]["content"][0]["text"]
    assert "<routing_context>" in context and '"policy_choice":"b1"' in context


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        ([claude_message([{"type": "text", "text": "I can't help."}], "refusal")], "refusal"),
        ([claude_error(529, "overloaded_error")], "overloaded"),
        ([claude_error(500, "api_error")], "api_error"),
        ([claude_message([{"type": "text", "text": "b2 looks fine"}])], "no_decision"),
        (
            [claude_tool_use("t1", "submit_decision", {"backend": "b2", "confidence": 7})],
            "malformed_tool_input",
        ),
        (
            [
                claude_tool_use(
                    "t1",
                    "submit_decision",
                    {"backend": "b3", "confidence": 0.9, "rationale": "cheap"},
                )
            ],
            "invalid_answer",
        ),
        (
            [
                claude_tool_use(
                    "t1", "submit_decision", {"backend": "b7", "confidence": 0.9, "rationale": "?"}
                )
            ],
            "invalid_answer",
        ),
    ],
)
def test_claude_failures_fall_back_with_the_reason(steps: list[Any], reason: str) -> None:
    out, esc, _ = run_claude(*steps)
    assert out.backend == "b1" and out.policy == "predictive"
    assert fallback_of(out) == reason
    assert esc.stats.fallbacks == {reason: 1}


def test_budget_exhaustion_declines_without_calling_the_api() -> None:
    budget = Budget(calls_per_minute=1, tokens_per_hour=None)
    assert budget.try_acquire().allowed
    out, _esc, api = run_claude(budget=budget)
    assert fallback_of(out) == "budget_exhausted" and out.backend == "b1"
    assert api.bodies == []


def test_no_allowed_backend_falls_back() -> None:
    cands = (candidate("b0", 300, 200, 400, 1.0, ejected=True),)
    decision = ambiguous_decision(candidates=cands, reason="all_ejected")
    out = Escalator(mode="override")(request(), decision)
    assert fallback_of(out) == "no_allowed_backend" and out.backend == "b0"


def test_load_guard_caps_requests_moved_onto_one_backend() -> None:
    infos = (BackendInfo("a", 1.0, 10.0), BackendInfo("b", 2.0, 10.0), BackendInfo("c", 0.5, 10.0))
    fleet = FleetState(infos)
    fleet.tick(
        [
            TelemetryPoint(100.0, n, rps, 50.0, 100.0, 0.0, 1.0)
            for n, rps in (("a", 6.0), ("b", 5.0), ("c", 9.0))
        ],
        arrivals=200,
    )
    cands = (
        candidate("a", 290, 200, 380, 1.0, 0.3),
        candidate("b", 100, 80, 120, 2.0, 0.2),
        candidate("c", 500, 450, 550, 0.5, 0.5),
    )
    esc = Escalator(mode="override", fleet=fleet)
    outs = [
        esc(request(f"r{i}"), ambiguous_decision(f"d{i}", backend="c", ts=100.0, candidates=cands))
        for i in range(30)
    ]
    moved = [o for o in outs if o.backend == "b"]
    # b may take 0.7 x 10 rps - max(5 rps now, 0.2 x 20 rps planned) = 2 rps: 20 requests a tick.
    assert len(moved) == 20
    assert all(fallback_of(o) == "load_guard" and o.backend == "c" for o in outs[20:])
    assert esc.stats.fallbacks == {"load_guard": 10}


def test_scoring_compares_the_used_backend_with_the_policy_pick() -> None:
    esc = Escalator(mode="override")
    esc(request("r1"), ambiguous_decision("d1", backend="b1"))
    esc(request("r2"), ambiguous_decision("d2", backend="b0"))
    prob: dict[str, float] = {"b0": 0.2, "b1": 0.9, "b2": 0.05}
    scorer: Callable[[str, float], float] = lambda backend, sla: prob[backend]  # noqa: E731
    assert esc.score_pending(scorer) == 2
    assert esc.score_pending(scorer) == 0
    s = esc.stats.summary()
    assert s["scored"] == 2 and s["scored_changed"] == 1
    assert s["violation_prob_used"] == pytest.approx((0.05 + 0.2) / 2)
    assert s["violation_prob_policy_pick"] == pytest.approx((0.9 + 0.2) / 2)
    assert s["violation_prob_used_when_changed"] == pytest.approx(0.05)


def test_an_escalated_decision_is_explained_with_the_agents_answer(tmp_path: Path) -> None:
    from context_api.api import ContextAPI
    from context_api.store import decision_row
    from tests.agent_fixtures import agent_db

    info = agent_db(tmp_path)
    with Store(info.path) as store:
        esc = Escalator(mode="override", traces=TraceStore(store))
        first = esc(request("r1"), ambiguous_decision("esc-1", backend="b1", ts=info.now))
        shared = esc(request("r2"), ambiguous_decision("esc-2", backend="b1", ts=info.now))
        store.insert_decisions([decision_row(first), decision_row(shared)])
        api = ContextAPI(store)
        for did in ("esc-1", "esc-2"):
            ex = api.call("explain_decision", {"decision_id": did}).content
            assert ex["decided_by"] == "router_agent" and ex["backend"] == "b2"
            assert ex["escalation"]["rationale"].startswith("[offline reasoner] b2")
            assert ex["escalation"]["agent_trace_id"] == esc.records[0].trace_id
            assert any(line.startswith("Router agent (offline") for line in ex["explanation"])


# --- the guard: a choice clearly worse than the policy's pick is refused ----------------------


def _claude_picks(backend: str, decision: Decision, load: Any = None) -> tuple[Any, Escalator]:
    api = ScriptedAPI(
        claude_tool_use(
            "t1", "submit_decision", {"backend": backend, "confidence": 0.6, "rationale": "r"}
        )
    )
    esc = Escalator(claude_model(api), deadline_s=5.0, mode="override")
    if load is not None:
        esc._fleet_load = lambda: load  # type: ignore[method-assign]
    try:
        return esc(request(), decision), esc
    finally:
        esc.close()


def test_a_choice_clearly_worse_than_the_policys_pick_is_refused() -> None:
    # b1 (breach probability ~1.0) in place of the policy's b2 (~0): refused, b2 stands.
    out, esc = _claude_picks("b1", ambiguous_decision(backend="b2"))
    assert out.backend == "b2" and fallback_of(out) == "clearly_worse"
    assert esc.stats.fallbacks == {"clearly_worse": 1}


def test_a_failing_pick_may_be_replaced_by_any_allowed_backend() -> None:
    failing = {"b2": {"error_rate": 0.3, "alarm": None}}
    out, _ = _claude_picks("b1", ambiguous_decision(backend="b2"), load=failing)
    assert out.backend == "b1" and out.policy == "router_agent"


def test_a_safer_choice_is_the_agents_to_make() -> None:
    # b2 (~0 breach probability) in place of the policy's b0 (a coin flip): accepted.
    out, _ = _claude_picks("b2", ambiguous_decision(backend="b0"))
    assert out.backend == "b2" and out.policy == "router_agent"


# --- advisory mode: the answer is recorded and scored, the policy's pick is used ---------------


def test_advisory_mode_records_the_advice_and_keeps_the_policys_pick(traces: TraceStore) -> None:
    esc = Escalator(traces=traces, mode="advisory")
    decision = ambiguous_decision(backend="b1")  # the offline agent would move it to b2
    out = esc(request(), decision)
    assert out.backend == "b1" and out.policy == "predictive"
    assert out.reason.endswith(";agent_advice=b2")
    [record] = esc.records
    assert record.agent_backend == "b2" and record.final_backend == "b1" and not record.accepted
    assert esc.stats.advised == 1 and not esc.stats.fallbacks
    esc.score_pending(lambda backend, sla: {"b1": 0.9, "b2": 0.1}[backend])
    summary = esc.stats.summary()
    assert summary["violation_prob_used"] == 0.9
    assert summary["violation_prob_agent_choice"] == 0.1
    assert summary["violation_prob_policy_pick_same_requests"] == 0.9
    assert traces.get(record.trace_id).inputs["mode"] == "advisory"
    with pytest.raises(ValueError, match="mode"):
        Escalator(mode="sometimes")  # type: ignore[arg-type]


def test_escalations_use_the_fast_model_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from arcpoint.commands.ask import model_from_settings, router_model_from_settings
    from arcpoint.settings import load_settings

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    monkeypatch.delenv("ARCPOINT_ROUTER_MODEL", raising=False)
    monkeypatch.delenv("ARCPOINT_MODEL", raising=False)
    fast = router_model_from_settings(load_settings())
    assert fast.model_id == "claude-haiku-4-5" and fast.config.timeout_s == 1.5
    assert model_from_settings(load_settings()).model_id == "claude-sonnet-4-6"  # chat
    monkeypatch.setenv("ARCPOINT_ROUTER_MODEL", "claude-sonnet-4-6")
    assert router_model_from_settings(load_settings()).model_id == "claude-sonnet-4-6"
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert router_model_from_settings(load_settings()).name == "offline"


def test_a_shared_answer_is_guarded_for_each_requests_own_pick() -> None:
    api = ScriptedAPI(
        claude_tool_use(
            "t1", "submit_decision", {"backend": "b0", "confidence": 0.5, "rationale": "coin flip"}
        )
    )
    esc = Escalator(claude_model(api), deadline_s=5.0, mode="override")
    try:
        first = esc(request("r1"), ambiguous_decision("d-1", backend="b1"))  # b1: ~1.0 breach
        second = esc(request("r2"), ambiguous_decision("d-2", backend="b2"))  # b2: ~0 breach
    finally:
        esc.close()
    assert len(api.bodies) == 1  # one agent run for the tick's shared picture
    assert first.backend == "b0" and first.policy == "router_agent"
    assert second.backend == "b2" and fallback_of(second) == "clearly_worse"


def test_the_default_is_advisory_until_the_agent_earns_overriding() -> None:
    from agents.escalation import DEFAULT_MODE

    assert DEFAULT_MODE == "advisory" and Escalator().mode == "advisory"
    out = Escalator()(request(), ambiguous_decision(backend="b1"))  # the agent would pick b2
    assert out.backend == "b1" and out.policy == "predictive"
