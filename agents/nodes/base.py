"""What every agent node shares: the context API's tools as `ToolSpec`s, one agent run with its
prompt, and the trace that records it.

`run_agent` never raises for a model or tool failure: tools answer errors as data (the context
API's `call`), the tool loop turns model failures into `LLMRun.error`, and when Claude fails in a
chat the offline reasoner answers instead, saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.llm.base import ChatMessage, LLMModel, LLMRun, ToolResult, ToolSpec
from agents.offline import OfflineModel
from agents.offline.text import FOOTER, fallback_footer
from agents.prompts import Prompt, load_prompt
from agents.tool_loop import AgentLoop
from context_api.api import ContextAPI
from context_api.trace_builder import TraceBuilder
from context_api.trace_records import TraceRecord
from context_api.traces import TraceStore, TraceWriter

log = logging.getLogger(__name__)

READ_TOOLS = (
    "fleet_state",
    "backend_detail",
    "forecasts",
    "capacity_risk",
    "drift_status",
    "anomalies",
    "quality_timeline",
    "experiments",
    "recent_alerts",
    "explain_decision",
    "find_decisions",
    "recommend_backend",
    "model_versions",
    "performance",
    "retrain_check",
    "compare_backends",
    "cost",
    "what_if",
    "model_history",
    "approvals",
)

AGENT_TOOLS: dict[str, tuple[str, ...]] = {
    "operator": READ_TOOLS,
    "router": ("recommend_backend", "forecasts", "capacity_risk", "fleet_state", "backend_detail"),
    "drift_monitor": (
        "drift_status",
        "quality_timeline",
        "performance",
        "anomalies",
        "retrain_check",
    ),
    "feedback_learner": (
        "performance",
        "retrain_check",
        "retrain_requests",
        "model_versions",
        "model_history",
        "drift_status",
    ),
    "experiment_monitor": ("experiments", "approvals", "model_versions", "model_history"),
}
"""Read tools per agent (a monitor pass adds its write tools: `agents.monitor_graph`)."""

TraceSink = Callable[[TraceRecord], Any]


def trace_sink(target: TraceStore | TraceWriter | TraceSink | None) -> TraceSink | None:
    """Anything that takes a finished trace: a TraceWriter (background), a TraceStore
    (synchronous) or a callable."""
    if target is None:
        return None
    if isinstance(target, TraceWriter):
        return target.submit
    if isinstance(target, TraceStore):
        return target.append
    return target


def api_toolset(
    api: ContextAPI, names: Sequence[str]
) -> tuple[list[ToolSpec], Callable[[str, dict[str, Any]], ToolResult]]:
    """The named context-API tools as ToolSpecs, and an executor that never raises."""
    defs = api.tools(list(names))
    specs = [ToolSpec.from_model(d.name, d.description, d.input_model) for d in defs]
    allowed = {d.name for d in defs}

    def execute(name: str, args: dict[str, Any]) -> ToolResult:
        if name not in allowed:
            return ToolResult.error(f"tool {name!r} is not available to this agent")
        out = api.call(name, args)
        return ToolResult(content=out.content) if out.ok else ToolResult.error(out.error or "")

    return specs, execute


def model_versions(api: ContextAPI) -> dict[str, str]:
    """The model versions in force, for the trace."""
    try:
        active = api.store.active_model_version("forecaster")
    except Exception:  # a trace must not fail because the store is odd
        return {}
    return {"forecaster": active.version_id} if active else {}


@dataclass
class AgentResult:
    agent: str
    answer: str
    run: LLMRun
    prompt: Prompt
    llm: str
    model_id: str
    fallback_reason: str | None = None
    runs: list[LLMRun] = field(default_factory=list)

    @property
    def tool_calls(self) -> list[Any]:
        return [c for r in self.runs for c in r.tool_calls]

    @property
    def tools_called(self) -> list[str]:
        return [c.name for c in self.tool_calls]

    def evidence(self) -> list[dict[str, Any]]:
        """Each tool call with its input and result: what the answer rests on."""
        return [
            {
                "tool": c.name,
                "input": c.input,
                "ok": not c.result.is_error,
                "result": c.result.content,
            }
            for c in self.tool_calls
        ]


HANDOFF_TARGETS = ("router", "drift_monitor", "feedback_learner", "experiment_monitor")


class Handoff(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Literal["router", "drift_monitor", "feedback_learner", "experiment_monitor"] = Field(
        description=(
            "router: which backend a request should use, routing decisions; drift_monitor: is "
            "the forecaster drifting, since when, why; feedback_learner: forecast accuracy, "
            "retraining, model versions and their history; experiment_monitor: champion vs "
            "challenger experiments, promotions and rollbacks"
        )
    )
    reason: str = Field(min_length=1, max_length=300, description="why this agent owns it")


HANDOFF = ToolSpec.from_model(
    "handoff",
    "Hand the question to the specialist agent that owns it; it answers the user directly. "
    "Answer yourself (with your own tools) when the question is about the fleet as a whole, "
    "quality, capacity, alerts, anomalies or decisions.",
    Handoff,
)


def agent_loop(
    agent: str,
    model: LLMModel,
    api: ContextAPI,
    *,
    extra_tools: Sequence[str] = (),
    handoff: bool = False,
    max_turns: int = 6,
    checkpointer: Any = None,
) -> tuple[AgentLoop, Prompt, Callable[[str, dict[str, Any]], ToolResult]]:
    """One agent's compiled model/tool graph over its context-API tools (plus `extra_tools`,
    e.g. a monitor's write tools, and the `handoff` tool for the operator), its prompt, and the
    executor its tools node calls."""
    prompt = load_prompt(agent)
    specs, execute = api_toolset(api, (*AGENT_TOOLS[agent], *extra_tools))
    if handoff:
        specs = [*specs, HANDOFF]
        inner = execute

        def execute(name: str, args: dict[str, Any]) -> ToolResult:
            if name == "handoff":
                return ToolResult(content={"handed_to": args["agent"]}, terminal=True)
            return inner(name, args)

    loop = AgentLoop(
        name=agent,
        model_name=model.name,
        model_id=model.model_id,
        system=prompt.text,
        tools=specs,
        next_turn=model.next_turn,
        max_turns=max_turns,
        cost_basis=model.cost_basis,
        checkpointer=checkpointer,
    )
    return loop, prompt, execute


def handed_to(run: LLMRun) -> str | None:
    """The agent a run handed its question to (None: it answered itself)."""
    for call in run.tool_calls:
        if call.name == "handoff" and not call.result.is_error and call.input_valid:
            agent = call.input.get("agent")
            if agent in HANDOFF_TARGETS:
                return str(agent)
    return None


def run_agent(
    agent: str,
    model: LLMModel,
    api: ContextAPI,
    messages: Sequence[ChatMessage | dict[str, Any]],
    *,
    loop: tuple[AgentLoop, Prompt, Callable[[str, dict[str, Any]], ToolResult]] | None = None,
    extra_tools: Sequence[str] = (),
    builder: TraceBuilder | None = None,
    deadline_s: float | None = None,
    max_turns: int = 6,
    offline_fallback: bool = True,
) -> AgentResult:
    """One agent's turn through its graph, recorded in `builder`. When Claude fails, the
    offline reasoner answers instead (through the same agent's graph) and says so."""
    graph, prompt, execute = loop or agent_loop(
        agent, model, api, extra_tools=extra_tools, max_turns=max_turns
    )
    run = graph.run(messages, execute, deadline_s=deadline_s)
    if builder is not None:
        builder.add_llm_run(run)
    runs = [run]
    if run.ok:
        return AgentResult(
            agent, run.final_text, run, prompt, model.name, model.model_id, runs=runs
        )
    reason = f"{run.error.kind}: {run.error.message}" if run.error else "unknown error"
    log.warning("%s agent failed on %s (%s)", agent, model.name, reason)
    if offline_fallback and not isinstance(model, OfflineModel):
        offline = OfflineModel()
        names = [t.name for t in graph.tools]
        extra = [n for n in names if n not in AGENT_TOOLS[agent] and n != "handoff"]
        again_loop, _, again_exec = agent_loop(
            agent, offline, api, extra_tools=extra, handoff="handoff" in names, max_turns=max_turns
        )
        again = again_loop.run(messages, again_exec)
        if builder is not None:
            builder.add_llm_run(again)
        runs.append(again)
        answer = (
            f"({model.name} could not answer: {reason}. The offline reasoner answered instead.)\n"
            + again.final_text.replace(FOOTER, fallback_footer(model.name, reason))
        )
        return AgentResult(
            agent, answer, again, prompt, offline.name, offline.model_id, reason, runs
        )
    answer = f"The {agent} agent could not answer ({reason})."
    return AgentResult(agent, answer, run, prompt, model.name, model.model_id, reason, runs)
