"""The LangGraph graphs: the operator graph for chat and monitor runs, and the router graph for
escalations.

Operator graph (checkpointed per chat thread with LangGraph's SQLite saver, so a thread can be
resumed by id)::

    START -> dispatch -> operator | router | drift_monitor | feedback_learner
                         | experiment_monitor -> respond -> END

`dispatch` reads the question's intent with the same rules as the offline reasoner (auditable,
and the same for both models) and sends it to the agent that owns it; each agent node runs its
model over its own tools (`agents.nodes.base.run_agent`); `respond` appends the exchange to the
thread's history. Every turn writes a trace: kind `chat` (parent: the thread id) or `monitor`.

Router graph (no checkpointer: an escalation is one shot)::

    START -> router -> validate -> END

State holds only JSON-able values in the operator graph (the checkpointer stores them); the
trace builder and the models live on the Python objects, not in the state.
"""

from __future__ import annotations

import logging
import math
import operator
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agents.llm.base import LLMModel
from agents.nodes.base import (
    MONITOR_TASKS,
    AgentResult,
    TraceSink,
    model_versions,
    run_agent,
    trace_sink,
)
from agents.nodes.router import (
    RoutingCase,
    SubmitDecision,
    Verdict,
    ask_router_agent,
    validate,
)
from agents.offline import OfflineModel, read_intent
from agents.prompts import Prompt, load_prompt
from context_api.api import ContextAPI
from context_api.traces import TraceBuilder

log = logging.getLogger(__name__)

AGENT_NODES = ("operator", "router", "drift_monitor", "feedback_learner", "experiment_monitor")
HISTORY_MESSAGES = 8
"""Earlier messages of the thread given to the model with a new question."""

_INTENT_AGENT = {
    "drift": "drift_monitor",
    "experiments": "experiment_monitor",
    "performance": "feedback_learner",
    "models": "feedback_learner",
    "recommend": "router",
}


def choose_agent(question: str) -> str:
    """Which agent owns a question (rules shared with the offline reasoner)."""
    return _INTENT_AGENT.get(read_intent(question, set()).name, "operator")


class ChatState(TypedDict, total=False):
    messages: Annotated[list[dict[str, str]], operator.add]
    """The thread's history: {"role", "content"} dicts, appended by `respond`."""
    question: str
    forced_agent: str | None
    monitor: bool
    agent: str
    answer: str


@dataclass
class TurnResult:
    """One answered question, as `arcpoint ask --json` reports it."""

    answer: str
    trace_id: str | None
    tools_called: list[str]
    llm: str
    model: str
    agent: str
    evidence: list[dict[str, Any]]
    thread_id: str | None = None
    fallback_reason: str | None = None
    prompt_hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "trace_id": self.trace_id,
            "tools_called": self.tools_called,
            "llm": self.llm,
            "model": self.model,
            "agent": self.agent,
            "thread_id": self.thread_id,
            "prompt_hash": self.prompt_hash,
            "evidence": self.evidence,
        }


@dataclass
class _Turn:
    builder: TraceBuilder
    result: AgentResult | None = None
    history: list[dict[str, str]] = field(default_factory=list)


class TraceNotRecorded(RuntimeError):
    """An answer's reasoning trace could not be written, so the answer is not given."""


class OperatorGraph:
    """The chat/monitor graph over one context API and one model.

    `checkpoint_db` (a SQLite path, usually the Arcpoint database itself) makes threads durable
    and resumable; without it each `ask` is independent. `traces` takes the finished traces
    (a TraceStore, TraceWriter or callable); None keeps them only in `last_trace`.
    """

    def __init__(
        self,
        api: ContextAPI,
        model: LLMModel | None = None,
        *,
        checkpoint_db: str | Path | None = None,
        traces: Any = None,
        deadline_s: float | None = 60.0,
    ) -> None:
        self.api = api
        self.model = model or OfflineModel()
        self.deadline_s = deadline_s
        self._sink: TraceSink | None = trace_sink(traces)
        self._turn: _Turn | None = None
        self.last_trace: Any = None
        self._conn: sqlite3.Connection | None = None
        checkpointer = None
        if checkpoint_db is not None:
            from langgraph.checkpoint.sqlite import SqliteSaver

            self._conn = sqlite3.connect(str(checkpoint_db), check_same_thread=False)
            checkpointer = SqliteSaver(self._conn)
            checkpointer.setup()
        self.checkpointer = checkpointer
        self.graph = self._build().compile(checkpointer=checkpointer)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> OperatorGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the graph ---------------------------------------------------------------------------

    def _build(self) -> StateGraph:
        builder = StateGraph(ChatState)
        builder.add_node("dispatch", self._dispatch)
        for name in AGENT_NODES:
            builder.add_node(name, self._agent_node(name))
            builder.add_edge(name, "respond")
        builder.add_node("respond", self._respond)
        builder.add_edge(START, "dispatch")
        builder.add_conditional_edges(
            "dispatch", lambda state: state["agent"], {n: n for n in AGENT_NODES}
        )
        builder.add_edge("respond", END)
        return builder

    def _dispatch(self, state: ChatState) -> dict[str, Any]:
        forced = state.get("forced_agent")
        agent = forced if forced in AGENT_NODES else choose_agent(state["question"])
        assert self._turn is not None
        with self._turn.builder.node("dispatch", input={"question": state["question"]}):
            self._turn.builder.set_node_output({"agent": agent})
        return {"agent": agent}

    def _agent_node(self, name: str) -> Callable[[ChatState], dict[str, Any]]:
        def node(state: ChatState) -> dict[str, Any]:
            turn = self._turn
            assert turn is not None
            history = list(state.get("messages") or [])[-HISTORY_MESSAGES:]
            turn.history = history
            messages = [*history, {"role": "user", "content": state["question"]}]
            with turn.builder.node(name, input={"history_messages": len(history)}):
                result = run_agent(
                    name,
                    self.model,
                    self.api,
                    messages,
                    monitor=bool(state.get("monitor")),
                    builder=turn.builder,
                    deadline_s=self.deadline_s,
                )
                turn.builder.set_node_output({"answer_chars": len(result.answer)})
            turn.result = result
            return {"answer": result.answer}

        node.__name__ = f"{name}_node"
        return node

    def _respond(self, state: ChatState) -> dict[str, Any]:
        return {
            "messages": [
                {"role": "user", "content": state["question"]},
                {"role": "assistant", "content": state["answer"]},
            ]
        }

    # -- asking ------------------------------------------------------------------------------

    def ask(
        self,
        question: str,
        *,
        thread_id: str | None = None,
        agent: str | None = None,
        monitor: bool = False,
    ) -> TurnResult:
        """Answer one question (in a thread when checkpointing), write its trace."""
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        if agent is not None and agent not in AGENT_NODES:
            raise ValueError(f"unknown agent {agent!r}; known: {', '.join(AGENT_NODES)}")
        thread_id = thread_id or f"ask-{uuid.uuid4().hex[:12]}"
        kind = "monitor" if monitor else "chat"
        builder = TraceBuilder(
            kind,
            parent_id=thread_id,
            inputs={"question": question, "agent": agent, "monitor": monitor},
            llm=self.model.name,
            model=self.model.model_id,
            model_versions=model_versions(self.api),
        )
        self._turn = _Turn(builder)
        config = {"configurable": {"thread_id": thread_id}}
        try:
            state = self.graph.invoke(
                {"question": question, "forced_agent": agent, "monitor": monitor},
                config=config if self.checkpointer is not None else None,
            )
            result = self._turn.result
        finally:
            turn, self._turn = self._turn, None
        assert result is not None
        builder.prompt_hash = result.prompt.sha256
        record = builder.finish(
            final=state["answer"],
            fallback_reason=result.fallback_reason,
            llm=result.llm,
            model=result.model_id,
            backend=_backend_of(result),
        )
        record.inputs["history_messages"] = len(turn.history)
        record.inputs["agent"] = result.agent
        self.last_trace = record
        trace_id = None
        if self._sink is not None:
            try:
                self._sink(record)  # the store waits for a busy file within its bound
                trace_id = record.trace_id
            except Exception as exc:
                # An answer is never shown without its audit trace: the caller gets an error.
                log.warning("chat trace %s not written: %s", record.trace_id, exc)
                raise TraceNotRecorded(
                    f"the answer's reasoning trace could not be recorded ({type(exc).__name__}: "
                    f"{exc}); the answer is withheld. Try again when the database is free."
                ) from exc
        return TurnResult(
            answer=state["answer"],
            trace_id=trace_id,
            tools_called=result.tools_called,
            llm=result.llm,
            model=result.model_id,
            agent=result.agent,
            evidence=result.evidence(),
            thread_id=thread_id if self.checkpointer is not None else None,
            fallback_reason=result.fallback_reason,
            prompt_hash=result.prompt.sha256,
        )

    def run_monitor(self, agent: str) -> TurnResult:
        """A scheduled monitor run (drift_monitor, feedback_learner or experiment_monitor)."""
        task = MONITOR_TASKS.get(agent)
        if task is None:
            raise ValueError(f"{agent!r} is not a monitor; monitors: {', '.join(MONITOR_TASKS)}")
        return self.ask(
            task, thread_id=f"monitor-{agent}-{int(time.time())}", agent=agent, monitor=True
        )

    def history(self, thread_id: str) -> list[dict[str, str]]:
        """The stored messages of a thread ([] for a new one or without checkpointing)."""
        if self.checkpointer is None:
            return []
        snapshot = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return list((snapshot.values or {}).get("messages") or [])


def _backend_of(result: AgentResult) -> str | None:
    """The backend a turn was about, for `traces list --backend` (the first one named)."""
    for call in result.tool_calls:
        backend = call.input.get("backend") if isinstance(call.input, dict) else None
        if isinstance(backend, str):
            return backend
    if result.agent == "router":
        for call in result.tool_calls:
            content = call.result.content
            if isinstance(content, dict) and isinstance(content.get("recommended"), dict):
                return content["recommended"].get("backend")
    return None


# --- the router graph (escalations) ---------------------------------------------------------------


class RouteState(TypedDict, total=False):
    case: RoutingCase
    builder: TraceBuilder | None
    verdict: Verdict


def build_router_graph(model: LLMModel, *, deadline_s: float | None) -> tuple[Any, Prompt]:
    """START -> router -> validate -> END, for one escalation at a time (no checkpointer).

    `router` runs the router agent (recording its turns in the escalation's trace builder, which
    travels in the state); `validate` re-checks the answer against the allowed set,
    independently of the node that produced it.
    """
    prompt = load_prompt("router")

    def router(state: RouteState) -> dict[str, Any]:
        tb = state.get("builder")
        case = state["case"]
        if tb is None:
            return {"verdict": ask_router_agent(case, model, prompt, deadline_s=deadline_s)}
        with tb.node("router", input={"allowed": list(case.allowed)}):
            verdict = ask_router_agent(case, model, prompt, deadline_s=deadline_s)
            if verdict.run is not None:
                tb.add_llm_run(verdict.run)
            tb.set_node_output(
                {"backend": verdict.backend, "failure": verdict.failure, "detail": verdict.detail}
            )
        return {"verdict": verdict}

    def check(state: RouteState) -> dict[str, Any]:
        verdict = state["verdict"]
        problem = _problem(verdict, state["case"].allowed) if verdict.ok else None
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
    return graph.compile(), prompt


def _problem(verdict: Verdict, allowed: tuple[str, ...]) -> str | None:
    """The validate node's check, independent of the router node's own."""
    c = verdict.confidence
    if c is None or not math.isfinite(c) or not 0.0 <= c <= 1.0:
        return f"confidence must be in [0, 1], got {c!r}"
    return validate(
        SubmitDecision(
            backend=verdict.backend or "-", confidence=c, rationale=verdict.rationale or " "
        ),
        allowed,
    )
