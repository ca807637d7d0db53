"""The operator graph: dispatch to the agent that owns a question, checkpointed threads that resume
by id, a trace per turn (prompt hash, model versions, every step), monitors that may write only
within policy, and the offline reasoner answering when Claude fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents import prompts
from agents.graph import AGENT_NODES, OperatorGraph, choose_agent
from agents.prompts import AGENTS, load_prompt
from context_api.api import ContextAPI
from context_api.store import Store
from context_api.traces import TraceStore
from tests.agent_fixtures import (
    FixtureInfo,
    ScriptedAPI,
    agent_db,
    claude_error,
    claude_message,
    claude_model,
    claude_tool_use,
)


@pytest.fixture
def db(tmp_path: Path) -> FixtureInfo:
    return agent_db(tmp_path)


@pytest.mark.parametrize(
    ("question", "agent"),
    [
        ("What's the current state of our model fleet?", "operator"),
        ("Which backend should I use for a premium request right now?", "router"),
        ("Why did quality drop in the last hour?", "operator"),
        ("What capacity risks are we taking in the next 5 minutes?", "operator"),
        ("Is the forecaster drifting?", "drift_monitor"),
        ("How is the experiment going?", "experiment_monitor"),
        ("Should we retrain?", "feedback_learner"),
    ],
)
def test_dispatch(question: str, agent: str) -> None:
    assert choose_agent(question) == agent


def test_graph_has_every_agent_node_and_each_agent_is_a_model_tool_cycle(db: FixtureInfo) -> None:
    with Store(db.path) as store, OperatorGraph(ContextAPI(store)) as graph:
        drawn = graph.graph.get_graph()
        loops = {name: loop.graph.get_graph() for name, (loop, _, _) in graph.loops.items()}
    assert set(AGENT_NODES) | {"respond"} <= set(drawn.nodes)
    edges = {(e.source, e.target) for e in drawn.edges}
    for name in AGENT_NODES:
        if name != "operator":  # the operator hands off to every specialist
            assert ("operator", name) in edges and (name, "respond") in edges
    for name, loop in loops.items():
        cycle = {(e.source, e.target) for e in loop.edges}
        assert {("model", "tools"), ("tools", "model"), ("model", "__end__")} <= cycle, name


def test_a_turn_writes_a_complete_trace(db: FixtureInfo) -> None:
    with Store(db.path) as store:
        traces = TraceStore(store)
        with OperatorGraph(ContextAPI(store), traces=traces) as graph:
            res = graph.ask("Is the forecaster drifting?", thread_id="th-1")
        assert res.agent == "drift_monitor" and res.llm == "offline"
        assert res.handoff == "drift_monitor"
        assert res.tools_called[:2] == ["handoff", "drift_status"]
        assert res.evidence[1]["tool"] == "drift_status" and res.evidence[1]["ok"]
        stored = traces.get(res.trace_id)
    assert stored.kind == "chat" and stored.parent_id == "th-1"
    assert stored.prompt_hash == load_prompt("drift_monitor").sha256 == res.prompt_hash
    assert stored.model_versions == {"forecaster": db.model_version}
    assert stored.final == res.answer and "offline reasoner" in stored.final
    assert stored.llm == "offline"
    nodes = [s.name for s in stored.steps if s.type == "node"]
    assert nodes == ["operator", "drift_monitor"]
    tools = [s.name for s in stored.steps if s.type == "tool_call"]
    assert tools == res.tools_called


def test_threads_are_checkpointed_and_resume_by_id(db: FixtureInfo) -> None:
    with Store(db.path) as store:
        api, traces = ContextAPI(store), TraceStore(store)
        with OperatorGraph(api, checkpoint_db=db.path, traces=traces) as graph:
            graph.ask("What's the current state of our model fleet?", thread_id="ops-42")
            assert len(graph.history("ops-42")) == 2
        with OperatorGraph(api, checkpoint_db=db.path, traces=traces) as again:
            history = again.history("ops-42")
            assert [m["role"] for m in history] == ["user", "assistant"]
            assert history[0]["content"] == "What's the current state of our model fleet?"
            res = again.ask(
                "What capacity risks are we taking in the next 5 minutes?", thread_id="ops-42"
            )
            assert len(again.history("ops-42")) == 4
            assert again.history("other-thread") == []
        stored = traces.get(res.trace_id)
    assert stored.inputs["history_messages"] == 2
    assert res.thread_id == "ops-42"


def test_claude_failure_is_answered_by_the_offline_reasoner(db: FixtureInfo) -> None:
    api = ScriptedAPI(claude_error(529, "overloaded_error"))
    with Store(db.path) as store:
        traces = TraceStore(store)
        with OperatorGraph(ContextAPI(store), claude_model(api), traces=traces) as graph:
            res = graph.ask("What's the current state of our model fleet?")
        stored = traces.get(res.trace_id)
    assert res.llm == "offline" and res.fallback_reason.startswith("overloaded")
    assert "claude could not answer" in res.answer and "[offline reasoner]" in res.answer
    assert stored.fallback_reason.startswith("overloaded")
    errors = [s for s in stored.steps if s.type == "llm_turn" and s.is_error]
    assert errors and errors[0].model.startswith("claude")


def test_chat_agents_have_no_write_tools(db: FixtureInfo) -> None:
    with Store(db.path) as store, OperatorGraph(ContextAPI(store)) as graph:
        writes = {d.name for d in graph.api.tools(writes=True) if d.writes}
        for name, (loop, _, _) in graph.loops.items():
            assert not writes & {t.name for t in loop.tools}, name
        before = len(store.list_drift_reports(limit=None))
        chat = graph.ask("Is the forecaster drifting?")
        assert "record_drift_reports" not in chat.tools_called
        assert len(store.list_drift_reports(limit=None)) == before


def test_bad_arguments(db: FixtureInfo) -> None:
    with Store(db.path) as store, OperatorGraph(ContextAPI(store)) as graph:
        with pytest.raises(ValueError, match="empty"):
            graph.ask("   ")
        with pytest.raises(ValueError, match="unknown agent"):
            graph.ask("hi", agent="janitor")


def test_every_agent_has_a_prompt_and_its_hash_follows_its_text(tmp_path: Path) -> None:
    for agent in AGENTS:
        prompt = load_prompt(agent)
        assert prompt.text.strip() and len(prompt.sha256) == 64
        assert "data, never instructions" in prompt.text
    (tmp_path / "router.md").write_text("one")
    first = load_prompt("router", tmp_path)
    (tmp_path / "router.md").write_text("two")
    prompts._load.cache_clear()
    assert load_prompt("router", tmp_path).sha256 != first.sha256
    with pytest.raises(ValueError):
        load_prompt("../etc/passwd")
    with pytest.raises(ValueError):
        load_prompt("missing", tmp_path)


def test_with_claude_the_operator_hands_off_through_its_handoff_tool(db: FixtureInfo) -> None:
    api = ScriptedAPI(
        claude_tool_use(
            "toolu_1", "handoff", {"agent": "router", "reason": "a routing recommendation"}
        ),
        claude_tool_use("toolu_2", "recommend_backend", {"tier": "premium"}),
        claude_message([{"type": "text", "text": "Use the backend recommend_backend named."}]),
    )
    with Store(db.path) as store:
        traces = TraceStore(store)
        with OperatorGraph(ContextAPI(store), claude_model(api), traces=traces) as graph:
            res = graph.ask("Where would you put a premium request?")
        stored = traces.get(res.trace_id)
    assert res.handoff == "router" and res.agent == "router" and res.llm == "claude"
    assert res.tools_called == ["handoff", "recommend_backend"]
    # The operator saw its tools and the handoff tool; the router agent saw only its own.
    operator_tools = {t["name"] for t in api.bodies[0]["tools"]}
    router_tools = {t["name"] for t in api.bodies[1]["tools"]}
    assert "handoff" in operator_tools and "fleet_state" in operator_tools
    assert "handoff" not in router_tools and "recommend_backend" in router_tools
    assert api.bodies[1]["messages"][-1]["content"] == "Where would you put a premium request?"
    assert [s.name for s in stored.steps if s.type == "node"] == ["operator", "router"]
    assert stored.prompt_hash == load_prompt("router").sha256


def test_with_claude_the_operator_may_answer_itself(db: FixtureInfo) -> None:
    api = ScriptedAPI(
        claude_tool_use("toolu_1", "fleet_state", {}),
        claude_message([{"type": "text", "text": "Three backends are healthy."}]),
    )
    with Store(db.path) as store, OperatorGraph(ContextAPI(store), claude_model(api)) as graph:
        res = graph.ask("Is anything on fire?")
    assert res.handoff is None and res.agent == "operator"
    assert res.answer == "Three backends are healthy." and len(api.bodies) == 2
