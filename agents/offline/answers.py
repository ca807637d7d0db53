"""The offline reasoner's answer: one writer per intent over the tools' results, framed so that
it never pretends.

- An entity the tools do not know (a backend, decision, model version, experiment or approval
  id) is named as unknown, with what does exist; nothing else is said about it.
- A question outside what Arcpoint knows gets "I can't answer that" and what can be asked.
- A metric Arcpoint does not record is named as not recorded, with what is.
- An intent whose tools this agent does not have says so (never a fleet dump instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from agents.llm.base import ToolCallRecord
from agents.offline import answers_fleet as fleet
from agents.offline import answers_history as history
from agents.offline import answers_ranked as ranked
from agents.offline.plan import INTENT_TOOLS
from agents.offline.question import RECORDED, Intent
from agents.offline.text import FOOTER, OFFLINE_TAG, errors

Writer = Callable[[Intent, Sequence[ToolCallRecord]], str]

SCOPE = (
    "I can answer questions about this fleet: its state and each backend's health; which backend "
    "a request of a tier should use; why quality dropped (over a window such as the last hour "
    "or today, or at a time such as 14:00 UTC); capacity risks in the next minutes; how two "
    "backends compare and what the fleet cost over a window; what would happen if a backend "
    "were drained or failed; forecaster drift, accuracy, model versions and their history; "
    "experiments and the changes waiting for approval; alerts and anomalies; and why a decision "
    "went to the backend it did."
)

_UNKNOWN = re.compile(
    r"unknown backend|no stored decision|unknown (?:forecaster |model )?version|no .*model "
    r"version|unknown experiment|no approval|no retrain request",
    re.I,
)

_WRITERS: dict[str, Writer] = {
    "fleet": fleet.fleet,
    "recommend": fleet.recommend,
    "capacity": fleet.capacity,
    "backend": fleet.backend,
    "compare": fleet.compare,
    "cost": fleet.cost_answer,
    "what_if": fleet.what_if,
    "quality": history.quality,
    "drift": history.drift,
    "experiments": history.experiments,
    "alerts": history.alerts,
    "anomalies": history.anomalies,
    "performance": history.performance,
    "models": history.models,
    "model_history": history.model_history,
    "approvals": history.approvals,
    "explain": history.explain,
    "route": history.route,
    "rank": ranked.rank,
    "down": ranked.down,
    "traffic": ranked.traffic,
}

WINDOWED = {"quality", "compare", "cost", "anomalies", "performance", "alerts", "backend"}
WINDOWED |= {"rank", "traffic"}
"""Intents whose tools take a time window; the others answer about now and say so."""

ACTION = (
    "I can't do that: this chat reads the fleet and never changes it. Restarts, scaling and "
    "traffic moves belong to your serving platform. The one change Arcpoint makes itself is the "
    "serving forecaster, which the monitors propose and an operator approves (`arcpoint "
    'approvals`). I can simulate a change first: ask "what if we drain b1?" or "what if b2 '
    'fails?".'
)


def compose_answer(
    intent: Intent, done: Sequence[ToolCallRecord], question: str, tools: set[str] | None = None
) -> str:
    return f"{OFFLINE_TAG} {_body(intent, done, tools)}\n\n{FOOTER}"


def _body(intent: Intent, done: Sequence[ToolCallRecord], tools: set[str] | None) -> str:
    if intent.name == "unknown":
        return f"I can't answer that: it is outside what Arcpoint knows. {SCOPE}"
    if intent.name == "unrecorded":
        return (
            f"I can't answer that: Arcpoint does not record {intent.unrecorded}. It records "
            f"{RECORDED}. Ask about those instead."
        )
    if intent.name == "action":
        return ACTION
    if intent.name == "what_if" and not intent.backend:
        return (
            'Which backend? Name it, e.g. "what happens if we drain b1?" or "what if b2 '
            'fails?"; I then run the simulator forward from the current state.'
        )
    failed = errors(done)
    unknown = [msg for _, msg in failed if _UNKNOWN.search(msg)]
    if not done:
        needed = INTENT_TOOLS.get(intent.name, ())
        if tools is not None and needed and not set(needed) & tools:
            return (
                f"I can't answer that here: this agent has no tool for "
                f"{intent.name.replace('_', ' ')} questions. {SCOPE}"
            )
    lines: list[str] = []
    if not intent.window.empty and intent.name not in WINDOWED:
        lines.append(
            f"(This answer is about now: {intent.name.replace('_', ' ')} questions take no time "
            f"window, so I cannot give it for {intent.window.label or 'that window'}.)"
        )
    if unknown:
        lines.append(" ".join(_unknown_sentence(m) for m in dict.fromkeys(unknown)))
    body = _WRITERS.get(intent.name, lambda _i, _d: "")(intent, done)
    if body:
        lines.append(body)
    rest = [f"{name}: {msg}" for name, msg in failed if msg not in unknown]
    if rest:
        lines.append("Some tools failed: " + "; ".join(rest))
    if not lines:
        lines.append("I found nothing to report.")
    return "\n".join(lines)


def _unknown_sentence(message: str) -> str:
    """A tool's "unknown X; known: ..." error as a plain sentence."""
    text = message.strip().rstrip(".")
    m = re.match(r"unknown backend '?([^';]+)'?(?:; (?:known|this fleet has):? (.*))?", text, re.I)
    if m:
        known = f" (it has {m.group(2)})" if m.group(2) else ""
        return f"There is no backend {m.group(1)} in this fleet{known}."
    return f"{text[0].upper()}{text[1:]}."
