"""The router graph for escalations: one ambiguous request in, a validated decision out.

    START -> router -> validate -> END

`router` runs the router agent's own compiled model/tool graph (`agents.nodes.router.RouterAgent`:
one model call with the trusted routing context in its message and `submit_decision` forced),
recording its turns in the escalation's trace builder, which travels in the state; `validate`
re-checks the answer against the allowed set and the guard, independently of the node that
produced it. No checkpointer: an escalation is one shot.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agents.llm.base import LLMModel
from agents.nodes.router import RouterAgent, RoutingCase, SubmitDecision, Verdict, validate
from agents.prompts import Prompt, load_prompt
from context_api.trace_builder import TraceBuilder


class RouteState(TypedDict, total=False):
    case: RoutingCase
    builder: TraceBuilder | None
    verdict: Verdict


def build_router_graph(model: LLMModel, *, deadline_s: float | None) -> tuple[Any, Prompt]:
    prompt = load_prompt("router")
    agent = RouterAgent(model, prompt)

    def router(state: RouteState) -> dict[str, Any]:
        tb = state.get("builder")
        case = state["case"]
        if tb is None:
            return {"verdict": agent.decide(case, deadline_s=deadline_s)}
        with tb.node("router", input={"allowed": list(case.allowed)}):
            verdict = agent.decide(case, deadline_s=deadline_s)
            if verdict.run is not None:
                tb.add_llm_run(verdict.run)
            tb.set_node_output(
                {"backend": verdict.backend, "failure": verdict.failure, "detail": verdict.detail}
            )
        return {"verdict": verdict}

    def check(state: RouteState) -> dict[str, Any]:
        verdict = state["verdict"]
        problem = _problem(verdict, state["case"]) if verdict.ok else None
        if problem is not None:
            verdict = Verdict(
                None,
                failure="invalid_answer",
                detail=problem,
                run=verdict.run,
                submissions=verdict.submissions,
            )
        tb = state.get("builder")
        if tb is not None:
            with tb.node("validate", input={"backend": state["verdict"].backend}):
                tb.set_node_output({"ok": verdict.ok, "failure": verdict.failure})
        return {"verdict": verdict}

    graph = StateGraph(RouteState)
    graph.add_node("router", router)
    graph.add_node("validate", check)
    graph.add_edge(START, "router")
    graph.add_edge("router", "validate")
    graph.add_edge("validate", END)
    return graph.compile(name="router_graph"), prompt


def _problem(verdict: Verdict, case: RoutingCase) -> str | None:
    """The validate node's check, independent of the router node's own."""
    c = verdict.confidence
    if c is None or not math.isfinite(c) or not 0.0 <= c <= 1.0:
        return f"confidence must be in [0, 1], got {c!r}"
    return validate(
        SubmitDecision(
            backend=verdict.backend or "-", confidence=c, rationale=verdict.rationale or " "
        ),
        case,
    )
