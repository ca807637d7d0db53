"""Words for the context API's answers: what a policy reason or an ambiguity means, how a
decision came about, what a timeline event was. Kept apart from the queries so the wording can
change without touching the numbers."""

from __future__ import annotations

from typing import Any

from context_api import api_models as m
from context_api.timefmt import iso, iso_or_unknown, num

# --- explanation text --------------------------------------------------------------------------

REASON_TEXT = {
    "cheapest_within_sla": "the cheapest backend forecast within the SLA",
    "spillover_within_sla": (
        "a backend forecast within the SLA that takes the traffic the cheaper ones cannot carry "
        "without rising past their latency target"
    ),
    "over_sla_spillover": (
        "a backend forecast over this request's SLA, still in the traffic split because the "
        "backends within it cannot carry all the load"
    ),
    "none_within_sla": "no backend was forecast within the SLA; the policy's split stands",
    "all_ejected": "every backend was ejected; the least recently ejected one was used",
    "agent_choice": "chosen by the router agent after escalation",
}

AMBIGUITY_TEXT = {
    "interval_straddles_sla": (
        "the chosen backend's forecast interval straddled the SLA (a 25-75% chance of breach) and "
        "no backend was confidently within it"
    ),
    "no_backend_within_sla": "no backend was forecast within the SLA",
    "failing_backend": "the chosen backend was failing (error rate 5-50%) but not yet ejected",
    "tier_review": "the request's tier asks for review of every decision",
    "all_ejected": "every backend was ejected",
}


def ambiguity_text(reason: str | None) -> str | None:
    if reason is None:
        return None
    if reason.startswith("alarm:"):
        return f"an anomaly or drift alarm was active on the chosen backend ({reason[6:]})"
    return AMBIGUITY_TEXT.get(reason, reason)


def explain_lines(
    row: dict[str, Any],
    cands: list[m.CandidateView],
    chosen: m.CandidateView | None,
    sla: float,
    reason: str,
    decided_by: str,
    fallback: str,
    amb: str | None,
) -> list[str]:
    lines = []
    backend = row["backend"]
    who = {
        "router_agent": "the router agent (escalation)",
        "policy": "the predictive policy",
        "policy_after_agent_fallback": (
            "the predictive policy after the router agent's answer was not used"
        ),
    }[decided_by]
    lines.append(
        f"Decision {row['decision_id']} at {iso_or_unknown(row['ts'])} sent a "
        f"{row.get('tier') or 'standard'} request (SLA {sla:.0f} ms) to {backend}, "
        f"decided by {who}."
    )
    if chosen is not None and chosen.forecast_ms is not None:
        lines.append(
            f"{backend} was forecast at {chosen.forecast_ms:.0f} ms p95 (90% interval "
            f"{chosen.lo_ms:.0f}-{chosen.hi_ms:.0f} ms, {chosen.p_over_sla:.0%} chance over SLA), "
            f"cost {chosen.cost_per_request} per request, "
            f"{(chosen.share or 0.0):.0%} of the tier's traffic at that tick."
        )
    if reason:
        lines.append(f"Policy reason: {reason} ({REASON_TEXT.get(reason, reason)}).")
    others = [c for c in cands if c.backend != backend]
    ejected = [c.backend for c in others if c.ejected]
    if ejected:
        lines.append(f"Ejected (not allowed): {', '.join(ejected)}.")
    better = [
        c
        for c in others
        if not c.ejected
        and c.p_over_sla is not None
        and chosen is not None
        and chosen.p_over_sla is not None
        and c.p_over_sla < chosen.p_over_sla
    ]
    if better:
        lines.append(
            "Safer but not chosen: "
            + ", ".join(
                f"{c.backend} ({c.p_over_sla:.0%} breach risk, cost {c.cost_per_request})"
                for c in better
            )
            + " - the policy fills the cheapest backends first up to their latency targets."
        )
    if amb:
        lines.append(f"Ambiguous: {ambiguity_text(amb)}.")
    if fallback:
        lines.append(f"The router agent was asked but its answer was not used: {fallback}.")
    actual = num(row.get("actual_latency_ms"))
    if actual is not None:
        verdict = "within" if actual <= sla else "over"
        lines.append(f"Outcome: {actual:.0f} ms, {verdict} the {sla:.0f} ms SLA.")
    elif row.get("status") in ("pending", "expired"):
        lines.append(
            f"Outcome: none reported ({row.get('status')}); a failed request reports none."
        )
    return lines


# --- events ------------------------------------------------------------------------------------

CAUSE_RANK = {"chaos": 0, "incident": 0, "model_change": 1, "drift": 2, "anomaly": 3, "alert": 4}


def event_end(e: Any) -> float:
    end = num((e.detail or {}).get("end_ts"))
    return end if end is not None else e.ts


def event_summary(e: Any) -> str:
    d = e.detail or {}
    if e.kind == "chaos":
        what = str(d.get("chaos", "chaos")).replace("_", " ")
        target = e.subject or "the whole fleet"
        mag = d.get("magnitude")
        end = num(d.get("end_ts"))
        return (
            f"{what} on {target}"
            + (f" (magnitude {mag:g})" if isinstance(mag, int | float) else "")
            + (f" until {iso_or_unknown(end)}" if end is not None else "")
            + (f", scenario {d['scenario']}" if d.get("scenario") else "")
        )
    if e.kind == "model_change":
        return (
            f"{d.get('action', 'activate')} {e.subject or 'model'} to {d.get('version_id')}"
            f" (from {d.get('previous_version_id')}; {d.get('reason') or 'no reason given'})"
        )
    if e.kind == "experiment_verdict":
        return f"experiment {e.subject}: {d.get('verdict')} (winner {d.get('winner_id')})"
    if e.kind == "outcomes_expired":
        return f"{d.get('count')} decisions expired without an outcome"
    if e.kind == "retrain_requested":
        return f"retrain requested: {d.get('reason')}"
    return f"{e.kind} {e.subject or ''}".strip()


def event_dict(e: Any) -> dict[str, Any]:
    return {"at": iso(e.ts), "kind": e.kind, "subject": e.subject, "summary": event_summary(e)}


def drift_dict(d: Any) -> dict[str, Any]:
    return {
        "at": iso(d.ts),
        "kind": d.kind,
        "test": d.test,
        "severity": d.severity,
        "backend": d.backend,
        "feature": d.feature,
        "p_value": d.p_value,
        "model_version": d.model_version,
        "detail": d.detail,
    }
