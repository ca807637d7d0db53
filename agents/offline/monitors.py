"""The offline reasoner's rules for a monitor pass (`agents.monitor_graph`): which tools each
monitor calls, in which order, and the report it writes from their results.

- drift_monitor: `drift_status` and `retrain_check`; stores the findings when drift is medium or
  worse (`record_drift_reports`); requests a retrain when the policy triggers one;
- feedback_learner: `retrain_requests`, then `train_challenger` for every waiting request;
- experiment_monitor: `experiments`; evaluates the running one it can judge, or starts one for
  the newest untested challenger; proposes the change a concluded verdict calls for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agents.llm.base import ToolCallRecord

_TASK = re.compile(r"scheduled monitor run \((drift_monitor|feedback_learner|experiment_monitor)\)")
INTENTS = {
    "drift_monitor": "monitor_drift",
    "feedback_learner": "monitor_learner",
    "experiment_monitor": "monitor_experiments",
}
Call = tuple[str, dict[str, Any]]


def monitor_intent(question: str) -> str | None:
    m = _TASK.search(question.lower())
    return INTENTS[m.group(1)] if m else None


def _results(done: Sequence[ToolCallRecord], name: str) -> list[Any]:
    return [c.result.content for c in done if c.name == name and not c.result.is_error]


def _called(done: Sequence[ToolCallRecord], name: str) -> bool:
    return any(c.name == name for c in done)


def plan(intent: str, tools: set[str], done: Sequence[ToolCallRecord]) -> list[Call]:
    """The next calls of a monitor pass ([] = time to report)."""
    want: list[Call] = []

    def once(name: str, args: dict[str, Any]) -> None:
        if name in tools and not _called(done, name):
            want.append((name, args))

    if intent == "monitor_drift":
        once("drift_status", {})
        once("retrain_check", {})
        status = _results(done, "drift_status")
        if status and status[-1].get("max_severity") in ("medium", "high", "critical"):
            once("record_drift_reports", {"min_severity": "medium"})
        check = _results(done, "retrain_check")
        if check and check[-1].get("retrain"):
            reason = f"retraining policy triggered: {check[-1].get('summary', '')}"
            once("request_retrain", {"reason": reason[:480]})
    elif intent == "monitor_learner":
        once("retrain_requests", {})
        requests = _results(done, "retrain_requests")
        if requests and "train_challenger" in tools and not _called(done, "train_challenger"):
            for r in requests[-1].get("pending") or []:
                want.append(("train_challenger", {"request_id": r["request_id"]}))
    elif intent == "monitor_experiments":
        once("experiments", {})
        listing = _results(done, "experiments")
        acted = _called(done, "evaluate_experiment") or _called(done, "start_experiment")
        if listing and not acted:
            judged_here = [
                e
                for e in listing[-1].get("experiments") or []
                if e.get("status") == "running" and e.get("source") == "telemetry"
            ]
            if judged_here:
                once("evaluate_experiment", {"experiment_id": judged_here[0]["experiment_id"]})
            elif not any(e.get("status") == "running" for e in listing[-1]["experiments"]):
                untested = listing[-1].get("untested_challengers") or []
                if untested:
                    once("start_experiment", {"challenger_id": untested[0]["version_id"]})
        for look in _results(done, "evaluate_experiment"):
            detail = look.get("detail") or {}
            if detail.get("change_warranted"):
                reason = str(detail.get("summary", "the experiment's verdict"))
                once(
                    "propose_model_change",
                    {"experiment_id": detail["experiment_id"], "reason": reason[:480]},
                )
    return want


def report(intent: str, done: Sequence[ToolCallRecord]) -> str:
    """What the pass found and did, one line per tool that acted."""
    lines: list[str] = []
    if intent == "monitor_drift":
        for ds in _results(done, "drift_status")[-1:]:
            drifted = ", ".join(ds.get("drifted_backends") or []) or "no backend"
            lines.append(
                f"Drift: max severity {ds.get('max_severity')} over {ds.get('window')} "
                f"(drifted: {drifted})."
            )
        for check in _results(done, "retrain_check")[-1:]:
            lines.append(f"Retraining policy: {check.get('summary')}")
    elif intent == "monitor_learner":
        for r in _results(done, "retrain_requests")[-1:]:
            pending = r.get("pending") or []
            lines.append(
                f"{len(pending)} retrain request(s) waiting"
                + (f": {', '.join(str(p['request_id']) for p in pending)}." if pending else ".")
            )
    elif intent == "monitor_experiments":
        for listing in _results(done, "experiments")[-1:]:
            running = [e for e in listing.get("experiments") or [] if e.get("status") == "running"]
            untested = listing.get("untested_challengers") or []
            lines.append(
                f"{len(running)} experiment(s) running; {len(untested)} untested challenger(s)."
            )
    for call in done:
        content = call.result.content if isinstance(call.result.content, dict) else {}
        if call.result.is_error:
            lines.append(f"{call.name} failed: {content.get('error')}")
        elif "message" in content:
            lines.append(f"{call.name}: {content['message']}")
    if len(lines) <= 1 and intent != "monitor_drift":
        lines.append("Nothing to act on in this pass.")
    return "\n".join(lines)
