"""`OfflineModel`: the deterministic reasoner behind the `LLMModel` interface, used when no
Anthropic key is set.

It runs through the same bounded tool loop as Claude (`agents.tool_loop.run_tool_loop`), so tool
inputs are validated, results come back as quoted JSON, and the run is traced the same way. What
differs is the "next turn" function: instead of a language model it

1. reads the intent of the newest user message (keywords, ids, tiers, times, minutes),
2. calls the tools that intent needs, among the tools it was given (a follow-up call may depend
   on an earlier result: the backend that carried a quality drop gets a `backend_detail`),
3. writes the answer from the tools' results (`agents.offline_answers`), citing backend ids,
   times and figures, and says that it came from the offline reasoner.

As the router agent (when it is given `routing_context` and `submit_decision`), it picks the
cheapest allowed backend confidently within the SLA, else the one least likely to breach it,
and submits it with a confidence and a rationale. It never reads request metadata: that text is
data for auditors, not input to a decision.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agents import offline_monitors
from agents.llm.base import (
    ChatMessage,
    LLMRun,
    ModelReply,
    ToolCallRecord,
    ToolExecutor,
    ToolSpec,
    TurnRequest,
)
from agents.offline_answers import FOOTER, OFFLINE_TAG, compose_answer
from agents.tool_loop import run_tool_loop

OFFLINE_MODEL_ID = "arcpoint-offline-reasoner-1"

TIERS = ("premium", "standard", "batch", "review")
_DECISION_ID = re.compile(
    r"\bdecision\s+(?:id\s+)?[`'\"]?([A-Za-z0-9][A-Za-z0-9:_.\-]*[A-Za-z0-9])[`'\"]?", re.I
)
_BACKEND = re.compile(r"\b(b\d+)\b", re.I)
_LAST = re.compile(
    r"\b(?:last|past|previous)\s+(?:(\d+(?:\.\d+)?)\s*)?(minutes?|mins?|hours?|hrs?|h|m)\b", re.I
)
_AT = re.compile(r"\b(?:at|around|near)\s+(\d{1,2}:\d{2}(?::\d{2})?)\b", re.I)
_ISO = re.compile(r"\b(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?Z?)\b")
_NEXT = re.compile(r"\bnext\s+(\d+(?:\.\d+)?)\s*(minutes?|mins?|m|hours?|h)\b", re.I)


@dataclass
class Intent:
    """What the question asks for, read by rules."""

    name: str
    tier: str = "standard"
    minutes: float = 5.0
    since: str | None = None
    around: str | None = None
    decision_id: str | None = None
    backend: str | None = None
    monitor: bool = False
    """A scheduled monitor run: the agent may record its findings (write tools)."""
    words: set[str] = field(default_factory=set)


def read_intent(question: str, tools: set[str]) -> Intent:
    """Classify a question. Order matters: the most specific intents are tried first."""
    text = question.strip()
    low = text.lower()
    intent = Intent(name="fleet")
    intent.monitor = "scheduled" in low or "monitor run" in low
    tier = next((t for t in TIERS if re.search(rf"\b{t}\b", low)), None)
    if tier:
        intent.tier = tier
    m = _NEXT.search(low)
    if m:
        value = float(m.group(1))
        intent.minutes = value * 60 if m.group(2).startswith("h") else value
    m = _LAST.search(low)
    if m:
        value = float(m.group(1) or 1)
        unit = m.group(2).lower()
        intent.since = f"-{value:g}{'h' if unit.startswith('h') else 'm'}"
    m = _AT.search(text) or _ISO.search(text)
    if m:
        intent.around = m.group(1)
    m = _DECISION_ID.search(text)
    if m and any(ch.isdigit() for ch in m.group(1)):  # ids carry digits; words do not
        intent.decision_id = m.group(1)
    m = _BACKEND.search(text)
    if m:
        intent.backend = m.group(1).lower()

    def has(*words: str) -> bool:
        return any(w in low for w in words)

    if "routing_context" in tools:
        intent.name = "route"
    elif intent.decision_id or (has("why was", "why did") and has("routed", "sent to")):
        intent.name = "explain"
    elif has("drift"):
        intent.name = "drift"
    elif has("experiment", "challenger", "champion", "a/b", "shadow test", "promot", "split test"):
        intent.name = "experiments"
    elif has("capacity", "risk", "headroom", "overload"):
        intent.name = "capacity"
    elif has(
        "which backend",
        "what backend",
        "should i use",
        "should we use",
        "recommend",
        "route a",
        "route my",
        "where should",
        "best backend",
        "send a",
    ):
        intent.name = "recommend"
    elif has(
        "why",
        "drop",
        "degrad",
        "worse",
        "violation",
        "incident",
        "what happened",
        "quality",
        "went wrong",
        "outage",
        "spike",
    ):
        intent.name = "quality"
    elif has("alert"):
        intent.name = "alerts"
    elif has("anomal"):
        intent.name = "anomalies"
    elif has("retrain", "accuracy", "mae", "forecast error", "performance", "how accurate"):
        intent.name = "performance"
    elif has("model version", "which model", "rollback", "roll back"):
        intent.name = "models"
    elif intent.backend and has(
        "detail", "how is", "how's", "what about", "tell me about", "status"
    ):
        intent.name = "backend"
    elif has("state", "status", "fleet", "health", "overview", "how are", "how is", "summary"):
        intent.name = "fleet"
    else:
        intent.name = "unknown"
    return intent


_INTENT_OWNER = {
    "drift": "drift_monitor",
    "experiments": "experiment_monitor",
    "performance": "feedback_learner",
    "models": "feedback_learner",
    "recommend": "router",
}


def owner(question: str) -> str:
    """The agent that owns a question by the offline rules (the operator keeps the rest)."""
    return _INTENT_OWNER.get(read_intent(question, set()).name, "operator")


# --- planning: which tool calls come next ---------------------------------------------------------


def _results(done: Sequence[ToolCallRecord], name: str) -> list[Any]:
    return [c.result.content for c in done if c.name == name and not c.result.is_error]


def _called(done: Sequence[ToolCallRecord], name: str) -> bool:
    return any(c.name == name for c in done)


def plan_calls(
    intent: Intent, tools: set[str], done: Sequence[ToolCallRecord]
) -> list[tuple[str, dict[str, Any]]]:
    """The next tool calls for `intent` given the calls made so far ([] = time to answer)."""
    want: list[tuple[str, dict[str, Any]]] = []

    def once(name: str, args: dict[str, Any]) -> None:
        if name in tools and not _called(done, name):
            want.append((name, args))

    n = intent.name
    if n == "route":
        if not _called(done, "routing_context"):
            return [("routing_context", {})]
        ctx = _results(done, "routing_context")
        if ctx and "submit_decision" in tools and not _called(done, "submit_decision"):
            return [("submit_decision", choose_backend(ctx[-1]))]
        return []
    if n == "fleet":
        once("fleet_state", {})
    elif n == "recommend":
        once("recommend_backend", {"tier": intent.tier})
        if "recommend_backend" not in tools:
            once("forecasts", {"tier": intent.tier})
    elif n == "capacity":
        once("capacity_risk", {"minutes": intent.minutes})
    elif n == "quality":
        args: dict[str, Any] = {}
        if intent.around:
            args["around"] = intent.around
        elif intent.since:
            args["since"] = intent.since
        once("quality_timeline", args)
        timeline = _results(done, "quality_timeline")
        if timeline and "backend_detail" in tools and not _called(done, "backend_detail"):
            tl = timeline[-1]
            impacted = tl.get("backends") or []
            if impacted and tl.get("degraded_from"):
                top = impacted[0]["backend"]
                want.append(
                    (
                        "backend_detail",
                        {"backend": top, "at": tl["degraded_until"], "window_minutes": 30.0},
                    )
                )
    elif n == "drift":
        once("drift_status", {"backend": intent.backend} if intent.backend else {})
        status = _results(done, "drift_status")
        if (
            status
            and intent.monitor
            and status[-1].get("max_severity") in ("medium", "high", "critical")
        ):
            once("record_drift_reports", {"min_severity": "medium"})
        if status and status[-1].get("drifted_backends"):
            once("performance", {})
    elif n == "experiments":
        once("experiments", {})
    elif n == "alerts":
        once("recent_alerts", {})
    elif n == "anomalies":
        once("anomalies", {"since": intent.since} if intent.since else {})
    elif n == "performance":
        once("performance", {"since": intent.since} if intent.since else {})
        once("retrain_check", {})
        check = _results(done, "retrain_check")
        if check and check[-1].get("retrain") and intent.monitor:
            once(
                "request_retrain",
                {"reason": f"retraining policy triggered: {check[-1].get('summary', '')}"[:480]},
            )
    elif n == "unknown":
        once("fleet_state", {})
    elif n == "models":
        once("model_versions", {})
    elif n == "backend":
        once("backend_detail", {"backend": intent.backend})
    elif n == "explain":
        if intent.decision_id:
            once("explain_decision", {"decision_id": intent.decision_id})
        else:
            once(
                "find_decisions",
                {"limit": 5, "backend": intent.backend} if intent.backend else {"limit": 5},
            )
    if not want and not done and n not in ("unknown",) and "fleet_state" in tools:
        # The intent's tools are not available to this agent: fall back to the fleet picture.
        once("fleet_state", {})
    return want


MOVE_FROM = 0.6
MOVE_MARGIN = 0.3
"""A request leaves a healthy pick only when the pick is at least `MOVE_FROM` likely to breach
and the target is `MOVE_MARGIN` less likely: the policy's split already weighs these forecasts
against load, which one request's picture does not show."""
ROOMY = 0.6
"""A backend above this utilisation is not a target for moved requests (queues grow fast)."""


def choose_backend(ctx: dict[str, Any]) -> dict[str, Any]:
    """The router agent's rule for an ambiguous request.

    The policy's split balances load across the fleet; the agent sees one request's picture. So
    the agent confirms the policy's pick unless it is clearly worse than an alternative:
    - a pick is moved when its backend is failing (errors >= 5%) or alarmed, or when it is at
      least `MOVE_FROM` likely to breach the SLA and the target is `MOVE_MARGIN` less likely;
    - the target is the cheapest allowed backend confidently within the SLA (breach probability
      < 0.25) with room to spare (utilisation < `ROOMY`, when known), else the roomy backend
      least likely to breach;
    - every backend that would not be moved is listed as also acceptable, so requests that keep
      their pick keep the policy's load balance (the answer is shared by a tick's requests).
    """
    allowed = set(ctx.get("allowed_backends") or [])
    sla = (ctx.get("request") or {}).get("sla_ms", ctx.get("sla_ms"))
    cands = [c for c in ctx.get("candidates") or [] if c.get("backend") in allowed]
    if not cands:
        return {"backend": "", "confidence": 0.0, "rationale": "no allowed backend"}

    def p(c: dict[str, Any]) -> float:
        v = c.get("p_over_sla")
        return 0.5 if v is None else float(v)

    def cost(c: dict[str, Any]) -> float:
        v = c.get("cost_per_request")
        return float("inf") if v is None else float(v)

    def util(c: dict[str, Any]) -> float:
        v = c.get("utilisation")
        return 0.0 if v is None else float(v)

    def troubled(c: dict[str, Any]) -> bool:
        return bool(c.get("alarm")) or float(c.get("error_rate") or 0.0) >= 0.05

    targets = [c for c in cands if util(c) < ROOMY and not troubled(c) and p(c) < 0.5]
    clear = [c for c in targets if p(c) < 0.25]
    if clear:
        best = min(clear, key=lambda c: (cost(c), p(c), c["backend"]))
        why = "the cheapest allowed backend confidently within the SLA with room to spare"
    elif targets:
        floor = min(p(c) for c in targets)  # wide intervals: similar p, compare forecasts
        near = [c for c in targets if p(c) <= floor + 0.1]
        best = min(near, key=lambda c: (c.get("forecast_ms") or 1e12, cost(c), c["backend"]))
        why = "no backend is confidently within the SLA; the roomy one least likely to breach it"
    else:
        best = None
        why = ""

    def moved(c: dict[str, Any]) -> bool:
        if best is None or c is best:
            return False
        return troubled(c) or (p(c) >= MOVE_FROM and p(c) - p(best) >= MOVE_MARGIN)

    policy = ctx.get("policy_choice")
    pick = next((c for c in cands if c["backend"] == policy), None)
    if best is None:
        # Nothing is clearly better: confirm the policy's load-balanced pick.
        best = pick or min(cands, key=lambda c: (p(c), cost(c), c["backend"]))
        why = (
            "no allowed backend with room to spare is more likely than not within the SLA; "
            "moving traffic would only pile it onto one backend, so the policy's pick stands"
        )
    also = [c["backend"] for c in cands if c is not best and not moved(c)]
    fc, lo, hi = best.get("forecast_ms"), best.get("lo_ms"), best.get("hi_ms")
    if all(isinstance(v, int | float) for v in (fc, lo, hi, sla)):
        figures = (
            f"forecast p95 {fc:.0f} ms (90% interval {lo:.0f}-{hi:.0f} ms), {p(best):.0%} breach "
            f"probability against the {sla:.0f} ms SLA"
        )
    else:
        figures = "no forecast available"
    note = ""
    if pick is not None and pick is not best:
        verb = "is moved" if moved(pick) else "is kept (acceptable)"
        note = f" The policy's pick {policy} ({p(pick):.0%} breach probability) {verb}."
    elif policy and pick is None:
        note = f" The policy's pick {policy} is not allowed."
    return {
        "backend": best["backend"],
        "confidence": round(min(0.99, max(0.01, 1.0 - p(best))), 3),
        "rationale": f"{OFFLINE_TAG} {best['backend']}: {why}; {figures}.{note}",
        "also_acceptable": also[:7],
    }


# --- the model ----------------------------------------------------------------------------------


class OfflineModel:
    """Deterministic reasoner with the `LLMModel` interface (see the module docstring)."""

    name = "offline"
    model_id = OFFLINE_MODEL_ID
    cost_basis = "offline:free"

    def run(
        self,
        system: str,
        messages: Sequence[ChatMessage | dict[str, Any]],
        tools: Sequence[ToolSpec],
        execute: ToolExecutor,
        *,
        max_turns: int = 6,
        deadline_s: float | None = None,
    ) -> LLMRun:
        return run_tool_loop(
            model_name=self.name,
            model_id=self.model_id,
            system=system,
            messages=messages,
            tools=tools,
            execute=execute,
            next_turn=self.next_turn,
            max_turns=max_turns,
            deadline_s=deadline_s,
            cost_basis="offline:free",
        )

    def next_turn(self, request: TurnRequest) -> ModelReply:
        question = _question(request.messages)
        names = {t.name for t in request.tools}
        intent = read_intent(question, names)
        done = request.tool_calls
        task = offline_monitors.monitor_intent(question)
        if task is not None:
            calls = offline_monitors.plan(task, names, done) if request.turn_index < 5 else []
            if calls:
                return _reply(calls, request.turn_index)
            text = f"{OFFLINE_TAG} {offline_monitors.report(task, done)}\n\n{FOOTER}"
            return ModelReply(
                model_id=self.model_id,
                content=[{"type": "text", "text": text}],
                stop_reason="end_turn",
            )
        if "handoff" in names and not done:
            target = owner(question)
            if target != "operator":
                return _reply(
                    [("handoff", {"agent": target, "reason": f"a {intent.name} question"})], 0
                )
        calls = plan_calls(intent, names, done) if request.turn_index < 5 else []
        if calls:
            return _reply(calls, request.turn_index)
        text = compose_answer(intent, done, question)
        return ModelReply(
            model_id=self.model_id,
            content=[{"type": "text", "text": text}],
            stop_reason="end_turn",
        )


def _reply(calls: list[tuple[str, dict[str, Any]]], turn: int) -> ModelReply:
    blocks: list[dict[str, Any]] = [
        {"type": "tool_use", "id": f"offline_{turn}_{i}", "name": name, "input": args}
        for i, (name, args) in enumerate(calls)
    ]
    return ModelReply(model_id=OFFLINE_MODEL_ID, content=blocks, stop_reason="tool_use")


def _question(messages: Sequence[dict[str, Any]]) -> str:
    """The newest user message that is text (tool results come back as user block lists)."""
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""
