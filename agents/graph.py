"""The operator graph: one chat turn (or one `arcpoint ask`), checkpointed per thread with
LangGraph's SQLite saver so a thread resumes by id::

    START -> operator -> (handoff?) -> router | drift_monitor | feedback_learner
               |                       | experiment_monitor -> respond -> END
               '-----------------------------------------------> respond
    (a question sent to one agent with `agent=` starts at that agent)

Each agent node runs that agent's own compiled model/tool graph (`agents.tool_loop.AgentLoop`
over its context-API tools). The operator answers questions about the fleet as a whole and hands
the rest to the specialist that owns them through a `handoff` tool: with Claude the model chooses;
the offline reasoner chooses by its deterministic rules (`agents.offline.owner`). `respond`
appends the exchange to the thread's history. Every turn writes a trace of kind `chat` (parent:
the thread id) with each agent's node, LLM turns and tool calls.

State holds only JSON-able values (the checkpointer stores them); the trace builder and the
models live on the Python objects, not in the state.
"""

from __future__ import annotations

import logging
import operator
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agents.checkpoints import CheckpointOwner
from agents.llm.base import LLMModel
from agents.nodes.base import (
    HANDOFF_TARGETS,
    AgentResult,
    TraceSink,
    agent_loop,
    handed_to,
    model_versions,
    run_agent,
    trace_sink,
)
from agents.offline import OfflineModel, owner
from context_api.api import ContextAPI
from context_api.trace_builder import TraceBuilder

log = logging.getLogger(__name__)

AGENT_NODES = ("operator", "router", "drift_monitor", "feedback_learner", "experiment_monitor")
HISTORY_MESSAGES = 8
"""Earlier messages of the thread given to the model with a new question."""


def choose_agent(question: str) -> str:
    """Which agent the offline reasoner's rules give a question (Claude decides for itself)."""
    return owner(question)


class ChatState(TypedDict, total=False):
    messages: Annotated[list[dict[str, str]], operator.add]
    """The thread's history: {"role", "content"} dicts, appended by `respond`."""
    question: str
    forced_agent: str | None
    handoff: str | None
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
    handoff: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "trace_id": self.trace_id,
            "tools_called": self.tools_called,
            "llm": self.llm,
            "model": self.model,
            "agent": self.agent,
            "handoff": self.handoff,
            "thread_id": self.thread_id,
            "prompt_hash": self.prompt_hash,
            "evidence": self.evidence,
        }


@dataclass
class _Turn:
    builder: TraceBuilder
    results: list[AgentResult] = field(default_factory=list)
    history: list[dict[str, str]] = field(default_factory=list)
    deadline: float | None = None
    """Monotonic time by which the whole turn ends, every agent it passes through included."""

    def remaining_s(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.001, self.deadline - time.monotonic())


class TraceNotRecorded(RuntimeError):
    """An answer's reasoning trace could not be written, so the answer is not given."""


class OperatorGraph(CheckpointOwner):
    """The chat graph over one context API and one model.

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
        checkpointer = self._open_checkpointer(checkpoint_db)
        self.loops = {
            name: agent_loop(name, self.model, api, handoff=name == "operator")
            for name in AGENT_NODES
        }
        self.graph = self._build().compile(checkpointer=checkpointer, name="operator_graph")

    # -- the graph ---------------------------------------------------------------------------

    def _build(self) -> StateGraph:
        builder = StateGraph(ChatState)
        for name in AGENT_NODES:
            builder.add_node(name, self._agent_node(name))
        builder.add_node("respond", self._respond)
        builder.add_conditional_edges(
            START, lambda s: s.get("forced_agent") or "operator", list(AGENT_NODES)
        )
        builder.add_conditional_edges(
            "operator", lambda s: s.get("handoff") or "respond", [*HANDOFF_TARGETS, "respond"]
        )
        for name in HANDOFF_TARGETS:
            builder.add_edge(name, "respond")
        builder.add_edge("respond", END)
        return builder

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
                    loop=self.loops[name],
                    builder=turn.builder,
                    deadline_s=turn.remaining_s(),
                )
                target = handed_to(result.run) if name == "operator" else None
                turn.builder.set_node_output(
                    {"answer_chars": len(result.answer), "handoff": target}
                )
            turn.results.append(result)
            if target is not None:
                return {"handoff": target, "agent": target}
            return {"answer": result.answer, "agent": name}

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
    ) -> TurnResult:
        """Answer one question (in a thread when checkpointing), write its trace."""
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        if agent is not None and agent not in AGENT_NODES:
            raise ValueError(f"unknown agent {agent!r}; known: {', '.join(AGENT_NODES)}")
        thread_id = thread_id or f"ask-{uuid.uuid4().hex[:12]}"
        builder = TraceBuilder(
            "chat",
            parent_id=thread_id,
            inputs={"question": question, "agent": agent},
            llm=self.model.name,
            model=self.model.model_id,
            model_versions=model_versions(self.api),
        )
        self._turn = _Turn(
            builder,
            deadline=None if self.deadline_s is None else time.monotonic() + self.deadline_s,
        )
        config = {"configurable": {"thread_id": thread_id}}
        try:
            state = self.graph.invoke(
                {"question": question, "forced_agent": agent, "handoff": None},
                config=config if self.checkpointer is not None else None,
            )
        finally:
            turn, self._turn = self._turn, None
        assert turn.results
        result = turn.results[-1]
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
        record.inputs["handoff"] = state.get("handoff")
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
            tools_called=[t for r in turn.results for t in r.tools_called],
            llm=result.llm,
            model=result.model_id,
            agent=result.agent,
            evidence=[e for r in turn.results for e in r.evidence()],
            thread_id=thread_id if self.checkpointer is not None else None,
            fallback_reason=result.fallback_reason,
            prompt_hash=result.prompt.sha256,
            handoff=state.get("handoff"),
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
