"""`OfflineModel`: the deterministic reasoner behind the `LLMModel` interface, used when no
Anthropic key is set.

It answers through the same agent graphs as Claude (`agents.tool_loop.AgentLoop`), so tool inputs
are validated, results come back as quoted JSON, and the run is traced the same way. What differs
is `next_turn`: instead of a language model it

1. reads the newest question in its thread (`agents.offline.question.resolve`: intent, backends,
   ids, tier, time window; a follow-up keeps the thread's subject, backend and window);
2. as the operator, hands the question to the specialist that owns it (the `handoff` tool);
3. calls the tools that intent needs, among the tools it was given (`agents.offline.plan`);
4. writes the answer from the tools' results (`agents.offline.answers`), citing backend ids, times
   and figures, naming what is unknown, and saying that it came from the offline reasoner.

As the router agent (given `submit_decision`) it applies `agents.offline.router_rule`. In a
monitor pass it follows `agents.offline.monitors`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from agents.llm.base import ModelReply, TurnRequest
from agents.offline import monitors
from agents.offline.answers import compose_answer
from agents.offline.plan import plan_calls
from agents.offline.question import read_intent, resolve
from agents.offline.router_rule import choose_backend
from agents.offline.text import FOOTER, OFFLINE_TAG
from agents.tool_loop import RunsAgentLoop

OFFLINE_MODEL_ID = "arcpoint-offline-reasoner-1"

_INTENT_OWNER = {
    "drift": "drift_monitor",
    "experiments": "experiment_monitor",
    "approvals": "experiment_monitor",
    "performance": "feedback_learner",
    "models": "feedback_learner",
    "model_history": "feedback_learner",
    "recommend": "router",
}


def owner(question: str, history: Sequence[str] = ()) -> str:
    """The agent that owns a question by the offline rules (the operator keeps the rest)."""
    return _INTENT_OWNER.get(resolve(question, history).name, "operator")


class OfflineModel(RunsAgentLoop):
    """Deterministic reasoner with the `LLMModel` interface (see the module docstring)."""

    name = "offline"
    model_id = OFFLINE_MODEL_ID
    cost_basis = "offline:free"

    def next_turn(self, request: TurnRequest) -> ModelReply:
        names = {t.name for t in request.tools}
        done = request.tool_calls
        forced = (request.tool_choice or {}).get("name")
        if forced == "submit_decision":
            return _reply([("submit_decision", choose_backend(_routing_context(request)))], 0)
        question, history = _questions(request.messages)
        task = monitors.monitor_intent(question)
        if task is not None:
            calls = monitors.plan(task, names, done) if request.turn_index < 5 else []
            if calls:
                return _reply(calls, request.turn_index)
            return _text(f"{OFFLINE_TAG} {monitors.report(task, done)}\n\n{FOOTER}")
        if "handoff" in names and not done:
            target = owner(question, history)
            if target != "operator":
                reason = f"a {resolve(question, history).name.replace('_', ' ')} question"
                return _reply([("handoff", {"agent": target, "reason": reason})], 0)
        intent = resolve(question, history, names)
        calls = plan_calls(intent, names, done, question) if request.turn_index < 5 else []
        if calls:
            return _reply(calls, request.turn_index)
        return _text(compose_answer(intent, done, question, names))


def _reply(calls: list[tuple[str, dict[str, Any]]], turn: int) -> ModelReply:
    blocks: list[dict[str, Any]] = [
        {"type": "tool_use", "id": f"offline_{turn}_{i}", "name": name, "input": args}
        for i, (name, args) in enumerate(calls)
    ]
    return ModelReply(model_id=OFFLINE_MODEL_ID, content=blocks, stop_reason="tool_use")


def _text(text: str) -> ModelReply:
    return ModelReply(
        model_id=OFFLINE_MODEL_ID, content=[{"type": "text", "text": text}], stop_reason="end_turn"
    )


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(b.get("type") == "text" for b in content):
        return "\n".join(b["text"] for b in content)
    return None  # tool results


def _questions(messages: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """The newest user question and the thread's earlier ones (oldest first); tool results,
    which come back as user messages of tool_result blocks, are not questions."""
    asked = [
        text
        for m in messages
        if m.get("role") == "user" and (text := _text_of(m.get("content"))) is not None
    ]
    return (asked[-1], asked[:-1]) if asked else ("", [])


_CONTEXT = re.compile(r"<routing_context>\s*(\{.*\})\s*</routing_context>", re.S)


def _routing_context(request: TurnRequest) -> dict[str, Any]:
    """The trusted routing context the escalation puts in its first message."""
    for m in request.messages:
        text = _text_of(m.get("content")) if m.get("role") == "user" else None
        found = _CONTEXT.search(text or "")
        if found:
            return json.loads(found.group(1))
    return {}


__all__ = ["OFFLINE_MODEL_ID", "OfflineModel", "owner", "read_intent"]
