"""The monitor graph: one pass of the closed loop's agents over the store, with a human in the
loop before anything changes the serving model::

    START -> drift_monitor -> feedback_learner -> experiment_monitor -> END
                                                     | a proposal
                                                     v
                                 await_approval (LangGraph interrupt) -> apply_change -> END

- drift_monitor reads the drift and error reports, stores its findings and requests a retrain
  when the retraining policy warrants one;
- feedback_learner acts on every waiting retrain request: trains a challenger through its tool;
- experiment_monitor starts the champion/challenger experiment, takes a look at every pass, and at
  the verdict proposes the promotion (or, after a promotion, the rollback) it calls for.

Each agent node runs that agent's compiled model/tool graph with its write tools. A proposal is
stored as a pending approval and the pass stops at `await_approval`, an `interrupt()` checkpointed
in the database (LangGraph's SQLite saver), until an operator answers with `arcpoint approvals
approve|reject ID` (or the HTTP service), which resumes this thread (`MonitorGraph.resume`):
`apply_change` activates the model only after an approval. With `auto_approve` (off by default)
the pass approves its own proposal, recorded as such.

Every pass writes a trace of kind `monitor` (each agent's node, LLM turns and tool calls, the
proposal); every answer writes a trace of kind `approval` (the decision and what applying did).
"""

from __future__ import annotations

import logging
import operator
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from agents.checkpoints import CheckpointOwner
from agents.llm.base import LLMModel
from agents.nodes.base import AgentResult, TraceSink, agent_loop, model_versions, run_agent
from agents.nodes.base import trace_sink as make_sink
from agents.offline import OfflineModel
from context_api import approvals
from context_api.api import ContextAPI
from context_api.trace_builder import TraceBuilder

log = logging.getLogger(__name__)

MONITORS = ("drift_monitor", "feedback_learner", "experiment_monitor")

MONITOR_WRITE_TOOLS: dict[str, tuple[str, ...]] = {
    "drift_monitor": ("record_drift_reports", "request_retrain"),
    "feedback_learner": ("train_challenger",),
    "experiment_monitor": ("start_experiment", "evaluate_experiment", "propose_model_change"),
}
"""Write tools each monitor gets in a pass, each bounded by policy inside the context API."""

MONITOR_TASKS: dict[str, str] = {
    "drift_monitor": (
        "Scheduled monitor run (drift_monitor): check the forecaster for drift, record what you "
        "find, and request a retrain if the retraining policy triggers one."
    ),
    "feedback_learner": (
        "Scheduled monitor run (feedback_learner): act on every waiting retrain request by "
        "training a challenger."
    ),
    "experiment_monitor": (
        "Scheduled monitor run (experiment_monitor): start an experiment for an untested "
        "challenger, evaluate the running experiment, and propose the change a verdict calls for."
    ),
}

AUTO_APPROVER = f"{approvals.AUTO_APPROVER} (ARCPOINT_AUTO_APPROVE)"


class MonitorState(TypedDict, total=False):
    agents: list[str]
    reports: Annotated[list[dict[str, Any]], operator.add]
    """Per agent that ran: its answer and the tools it called."""
    proposal: dict[str, Any] | None
    """The pending approval the experiment monitor created in this pass."""
    decision: dict[str, Any] | None
    applied: dict[str, Any] | None


@dataclass
class MonitorRun:
    """One pass, as `arcpoint monitor` reports it."""

    thread_id: str
    reports: list[dict[str, Any]]
    proposal: dict[str, Any] | None
    waiting: bool
    """The pass stopped at the approval interrupt (the proposal waits for an operator)."""
    decision: dict[str, Any] | None
    applied: dict[str, Any] | None
    trace_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "reports": self.reports,
            "proposal": self.proposal,
            "waiting_for_approval": self.waiting,
            "decision": self.decision,
            "applied": self.applied,
            "trace_id": self.trace_id,
        }


@dataclass
class _Pass:
    builder: TraceBuilder
    results: list[AgentResult] = field(default_factory=list)


class MonitorGraph(CheckpointOwner):
    """The monitors' graph over one context API. Its checkpointer is the database itself
    (SQLite saver), or memory for an in-memory store, so a waiting pass survives the process."""

    def __init__(
        self,
        api: ContextAPI,
        model: LLMModel | None = None,
        *,
        traces: Any = None,
        auto_approve: bool = False,
        deadline_s: float | None = 120.0,
        checkpointer: Any = None,
    ) -> None:
        self.api = api
        self.model = model or OfflineModel()
        self.auto_approve = auto_approve
        self.deadline_s = deadline_s
        self._sink: TraceSink | None = make_sink(traces)
        self._pass: _Pass | None = None
        if checkpointer is None:
            checkpointer = self._open_checkpointer(api.store.path)
        self.checkpointer = checkpointer
        self.loops = {
            name: agent_loop(name, self.model, api, extra_tools=MONITOR_WRITE_TOOLS[name])
            for name in MONITORS
        }
        self.graph = self._build().compile(checkpointer=checkpointer, name="monitor_graph")

    # -- the graph ---------------------------------------------------------------------------

    def _build(self) -> StateGraph:
        g = StateGraph(MonitorState)
        for name in MONITORS:
            g.add_node(name, self._monitor_node(name))
        g.add_node("await_approval", self._await_approval)
        g.add_node("apply_change", self._apply_change)
        g.add_conditional_edges(START, lambda s: s["agents"][0], list(MONITORS))
        for i, name in enumerate(MONITORS):
            later = list(MONITORS[i + 1 :])
            g.add_conditional_edges(name, self._after(name), [*later, "await_approval", END])
        g.add_conditional_edges(
            "await_approval",
            lambda s: "apply_change" if (s.get("decision") or {}).get("approved") else END,
            ["apply_change", END],
        )
        g.add_edge("apply_change", END)
        return g

    def _after(self, name: str) -> Callable[[MonitorState], str]:
        def route(state: MonitorState) -> str:
            if state.get("proposal"):
                return "await_approval"
            agents = state["agents"]
            rest = agents[agents.index(name) + 1 :]
            return rest[0] if rest else END

        return route

    def _monitor_node(self, name: str) -> Callable[..., dict[str, Any]]:
        def node(state: MonitorState, config: RunnableConfig) -> dict[str, Any]:
            current = self._pass
            assert current is not None, "monitor nodes run only inside MonitorGraph.run"
            builder = current.builder
            messages = [{"role": "user", "content": MONITOR_TASKS[name]}]
            with builder.node(name, input={"task": MONITOR_TASKS[name]}):
                result = run_agent(
                    name,
                    self.model,
                    self.api,
                    messages,
                    loop=self.loops[name],
                    builder=builder,
                    deadline_s=self.deadline_s,
                )
                proposal = _proposal_of(result)
                builder.set_node_output({"answer": result.answer, "proposal": proposal})
            current.results.append(result)
            out: dict[str, Any] = {
                "reports": [
                    {
                        "agent": name,
                        "answer": result.answer,
                        "tools_called": result.tools_called,
                        "llm": result.llm,
                        "fallback_reason": result.fallback_reason,
                    }
                ]
            }
            if proposal is not None:
                thread = (config.get("configurable") or {}).get("thread_id")
                approvals.attach(
                    self.api.store,
                    proposal["approval_id"],
                    thread_id=thread,
                    trace_id=builder.trace_id,
                )
                out["proposal"] = proposal
            return out

        node.__name__ = f"{name}_node"
        return node

    def _await_approval(self, state: MonitorState) -> dict[str, Any]:
        proposal = state["proposal"] or {}
        approval_id = proposal["approval_id"]
        if self.auto_approve:
            row = approvals.require(self.api.store, approval_id)
            if row.status == "pending":
                row = approvals.decide(
                    self.api.store,
                    approval_id,
                    approved=True,
                    by=AUTO_APPROVER,
                    reason="auto-approve is on",
                    at=self.api.now(),
                )
            decision = {"approved": row.status == "approved", "by": row.decided_by}
        else:
            # Everything above this line runs again when the thread resumes: keep it read-only.
            decision = interrupt(
                {
                    "approval_id": approval_id,
                    "action": proposal.get("action"),
                    "version_id": proposal.get("version_id"),
                    "message": "waiting for an operator: arcpoint approvals approve|reject ID",
                }
            )
        builder = self._pass.builder if self._pass else None
        if builder is not None:
            with builder.node("await_approval", input={"approval_id": approval_id}):
                builder.set_node_output(decision)
        return {"decision": dict(decision)}

    def _apply_change(self, state: MonitorState) -> dict[str, Any]:
        approval_id = (state.get("proposal") or {})["approval_id"]
        builder = self._pass.builder if self._pass else None
        row = self.api.apply_approved(approval_id)
        applied = {"approval_id": approval_id, "status": row.status, "result": row.result}
        if builder is not None:
            with builder.node("apply_change", input={"approval_id": approval_id}):
                builder.set_node_output(applied)
        return {"applied": applied}

    # -- running -----------------------------------------------------------------------------

    def run(self, agents: tuple[str, ...] | list[str] = MONITORS) -> MonitorRun:
        """One pass of the given monitors, in the loop's order. Stops at the approval interrupt
        when a proposal was made (and auto-approve is off)."""
        unknown = [a for a in agents if a not in MONITORS]
        if not agents or unknown:
            raise ValueError(f"{unknown or 'no monitor'}: the monitors are {', '.join(MONITORS)}")
        agents = [a for a in MONITORS if a in agents]
        thread_id = f"monitor-{uuid.uuid4().hex[:12]}"
        builder = TraceBuilder(
            "monitor",
            parent_id=thread_id,
            inputs={"agents": agents, "auto_approve": self.auto_approve},
            llm=self.model.name,
            model=self.model.model_id,
            model_versions=model_versions(self.api),
        )
        self._pass = _Pass(builder)
        config = {"configurable": {"thread_id": thread_id}}
        try:
            state = self.graph.invoke({"agents": agents, "reports": []}, config=config)
        finally:
            current, self._pass = self._pass, None
        waiting = bool(state.get("__interrupt__"))
        final = {
            "reports": state.get("reports"),
            "proposal": state.get("proposal"),
            "waiting_for_approval": waiting,
        }
        last = current.results[-1] if current.results else None
        if last is not None:
            builder.prompt_hash = last.prompt.sha256
        trace_id = self._write(builder, final, last)
        return MonitorRun(
            thread_id=thread_id,
            reports=list(state.get("reports") or []),
            proposal=state.get("proposal"),
            waiting=waiting,
            decision=state.get("decision"),
            applied=state.get("applied"),
            trace_id=trace_id,
        )

    def waiting(self, thread_id: str) -> bool:
        """Whether that thread is paused at the approval interrupt."""
        snapshot = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return bool(snapshot.next) and "await_approval" in snapshot.next

    def resume(self, approval: approvals.Approval) -> dict[str, Any]:
        """Resume the pass waiting on an answered approval; returns what applying did."""
        if approval.status not in ("approved", "rejected"):
            raise approvals.ApprovalError(f"approval {approval.approval_id} is {approval.status}")
        answer = {
            "approved": approval.status == "approved",
            "by": approval.decided_by,
            "reason": approval.reason,
        }
        builder = TraceBuilder(
            "approval",
            parent_id=approval.approval_id,
            inputs={"approval": approval.model_dump(mode="json"), "thread_id": approval.thread_id},
            llm=None,
            model=None,
            model_versions=model_versions(self.api),
        )
        self._pass = _Pass(builder)
        try:
            if approval.thread_id and self.waiting(approval.thread_id):
                config = {"configurable": {"thread_id": approval.thread_id}}
                state = self.graph.invoke(Command(resume=answer), config=config)
                applied = state.get("applied")
            else:
                # No waiting thread (a copied database, or a pass that crashed mid-way): the
                # answer is on record; apply it the same way, and say so in the trace.
                with builder.node("apply_change", input={"no_waiting_thread": True}):
                    applied = None
                    if answer["approved"]:
                        row = self.api.apply_approved(approval.approval_id)
                        applied = {
                            "approval_id": row.approval_id,
                            "status": row.status,
                            "result": row.result,
                        }
                    builder.set_node_output(applied)
        finally:
            self._pass = None
        final = {"decision": answer, "applied": applied}
        self._write(builder, final, None)
        return final

    def _write(self, builder: TraceBuilder, final: Any, last: AgentResult | None) -> str | None:
        record = builder.finish(
            final=final,
            fallback_reason=last.fallback_reason if last else None,
            llm=last.llm if last else builder.llm,
            model=last.model_id if last else builder.model,
        )
        if self._sink is None:
            return None
        try:
            self._sink(record)
        except Exception:  # the pass stands; the missing trace is logged loudly
            log.exception("monitor trace %s not written", record.trace_id)
            return None
        return record.trace_id


def _proposal_of(result: AgentResult) -> dict[str, Any] | None:
    """The approval a run's `propose_model_change` call created, if any."""
    for call in result.tool_calls:
        if call.name != "propose_model_change" or call.result.is_error:
            continue
        content = call.result.content
        detail = content.get("detail") if isinstance(content, dict) else None
        if isinstance(detail, dict) and detail.get("approval_id"):
            return dict(detail)
    return None
