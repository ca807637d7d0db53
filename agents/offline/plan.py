"""The offline reasoner's plan: which context-API tools an intent needs, in which order (a later
call may depend on an earlier result, e.g. the backend that carried a quality drop gets a
`backend_detail`). Only the tools the agent was given are called; an intent whose tools the
agent lacks gets no calls, and the answer says so (never a fleet dump instead)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agents.llm.base import ToolCallRecord
from agents.offline.question import Intent, Window
from agents.offline.router_rule import choose_backend

Call = tuple[str, dict[str, Any]]
MAX_BACKENDS = 4

INTENT_TOOLS: dict[str, tuple[str, ...]] = {
    "fleet": ("fleet_state",),
    "backend": ("backend_detail",),
    "recommend": ("recommend_backend",),
    "capacity": ("capacity_risk",),
    "quality": ("quality_timeline",),
    "drift": ("drift_status",),
    "experiments": ("experiments",),
    "alerts": ("recent_alerts",),
    "anomalies": ("anomalies",),
    "performance": ("performance", "retrain_check"),
    "models": ("model_versions",),
    "model_history": ("model_history",),
    "compare": ("compare_backends",),
    "cost": ("cost",),
    "approvals": ("approvals",),
    "what_if": ("what_if",),
    "explain": ("explain_decision", "find_decisions"),
    "rank": ("fleet_state", "compare_backends"),
    "traffic": ("fleet_state", "compare_backends"),
    "down": ("fleet_state",),
}
"""The tools each intent rests on (an agent without any of them cannot answer it)."""


def _results(done: Sequence[ToolCallRecord], name: str) -> list[Any]:
    return [c.result.content for c in done if c.name == name and not c.result.is_error]


def _called(done: Sequence[ToolCallRecord], name: str) -> bool:
    return any(c.name == name for c in done)


def minutes_of(window: Window) -> float | None:
    """A relative window ("-90m", "-2h") as minutes (None for anything else)."""
    m = re.fullmatch(r"-(\d+(?:\.\d+)?)([smhd])", window.since or "")
    if not m or window.until:
        return None
    scale = {"s": 1 / 60, "m": 1.0, "h": 60.0, "d": 1440.0}[m.group(2)]
    return float(m.group(1)) * scale


def what_if_action(question: str) -> str:
    low = question.lower()
    if re.search(r"\b(fail|fails|failed|crash|crashes|dies|goes down|lose|lost|outage)\b", low):
        return "fail"
    return "drain"


def plan_calls(
    intent: Intent, tools: set[str], done: Sequence[ToolCallRecord], question: str = ""
) -> list[Call]:
    """The next tool calls for `intent` given the calls made so far ([] = time to answer)."""
    want: list[Call] = []

    def once(name: str, args: dict[str, Any]) -> None:
        if name in tools and not _called(done, name):
            want.append((name, args))

    n = intent.name
    window = intent.window.args()
    if n == "route":
        if not _called(done, "routing_context"):
            return [("routing_context", {})] if "routing_context" in tools else []
        ctx = _results(done, "routing_context")
        if ctx and "submit_decision" in tools and not _called(done, "submit_decision"):
            return [("submit_decision", choose_backend(ctx[-1]))]
        return []
    if n in ("fleet", "down"):
        once("fleet_state", {})
    elif n in ("rank", "traffic"):
        # Now: the fleet state (its last 15 minutes); over a window: the backends compared.
        if intent.window.empty and intent.measure != "cost":  # prices: compare_backends only
            once("fleet_state", {})
        else:
            args = dict(window)
            if len(intent.backends) >= 2:
                args["backends"] = intent.backends[:MAX_BACKENDS]
            once("compare_backends", args)
    elif n == "backend":
        if "backend_detail" in tools and not _called(done, "backend_detail"):
            args: dict[str, Any] = {}
            minutes = minutes_of(intent.window)
            if minutes is not None:
                args["window_minutes"] = max(5.0, min(minutes, 24 * 60.0))
            if intent.window.around:
                args["at"] = intent.window.around
            for b in intent.backends[:MAX_BACKENDS]:
                want.append(("backend_detail", {"backend": b, **args}))
    elif n == "recommend":
        once("recommend_backend", {"tier": intent.tier or "standard"})
    elif n == "capacity":
        once("capacity_risk", {"minutes": intent.minutes or 5.0})
    elif n == "quality":
        once("quality_timeline", window)
        timeline = _results(done, "quality_timeline")
        if timeline and "backend_detail" in tools and not _called(done, "backend_detail"):
            tl = timeline[-1]
            impacted = tl.get("backends") or []
            target = intent.backend or (impacted[0]["backend"] if impacted else None)
            if target and tl.get("degraded_from"):
                want.append(
                    (
                        "backend_detail",
                        {"backend": target, "at": tl["degraded_until"], "window_minutes": 30.0},
                    )
                )
    elif n == "drift":
        once("drift_status", {"backend": intent.backend} if intent.backend else {})
        status = _results(done, "drift_status")
        if status and status[-1].get("drifted_backends"):
            once("performance", {})
    elif n == "experiments":
        once("experiments", {})
    elif n == "alerts":
        once("recent_alerts", {"since": intent.window.since} if intent.window.since else {})
    elif n == "anomalies":
        args = dict(window) if "around" not in window else {}
        if intent.backend:
            args["backend"] = intent.backend
        once("anomalies", args)
    elif n == "performance":
        once("performance", window if "around" not in window else {})
        once("retrain_check", {})
    elif n == "models":
        once("model_versions", {})
    elif n == "model_history":
        once("model_history", {"version": intent.version} if intent.version else {})
    elif n == "compare":
        args = dict(window) if "around" not in window else {}
        if len(intent.backends) >= 2:
            args["backends"] = intent.backends[:MAX_BACKENDS]
        once("compare_backends", args)
    elif n == "cost":
        args = dict(window) if "around" not in window else {}
        if intent.backends:
            args["backends"] = intent.backends
        once("cost", args)
    elif n == "approvals":
        once("approvals", {"approval_id": intent.approval_id} if intent.approval_id else {})
    elif n == "what_if":
        if intent.backend:
            args = {"action": what_if_action(question), "backend": intent.backend}
            if intent.minutes:
                args["minutes"] = intent.minutes
            once("what_if", args)
    elif n == "explain":
        if intent.decision_id:
            once("explain_decision", {"decision_id": intent.decision_id})
        else:
            args = {"limit": 5}
            if intent.backend:
                args["backend"] = intent.backend
            once("find_decisions", args)
    return want
