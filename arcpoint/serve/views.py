"""What the read endpoints and the dashboard show, assembled from the live state and the store.

Live figures (shares, in flight, this tick's latencies, forecasts) come from memory; history
(decisions, alerts, traces, model versions, experiments) from the agent connection, so reads
never wait behind the writers.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from tools.routing import TIERS

if TYPE_CHECKING:
    from arcpoint.serve.schemas import ApprovalAnswer
    from arcpoint.serve.service import Service


def _num(x: float | None, digits: int = 2) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def fleet(svc: Service) -> dict[str, Any]:
    assert svc.adapter is not None
    view = svc.adapter.fleet.view
    by_name = {b.name: b for b in view.backends} if view is not None else {}
    shares = svc.snapshot_gauges()["shares"]
    window = list(svc.live.history)[-30:]
    # Each backend's latest tick that measured its latency (a quiet tick measures nothing).
    last_by = {}
    for _, ticks in window:
        for t in ticks:
            if t.e2e_p95_ms is not None or t.backend not in last_by:
                last_by[t.backend] = t
    routed = {n: 0 for n in svc.names}
    errors = dict(routed)
    completed = dict(routed)
    for _, ticks in window:
        for t in ticks:
            routed[t.backend] += t.routed
            errors[t.backend] += t.errors
            completed[t.backend] += t.completed
    total = sum(routed.values())
    backends = []
    for i, name in enumerate(svc.names):
        b = by_name.get(name)
        t = last_by.get(name)
        scrape = svc.live.last_scrape(i)
        backends.append(
            {
                "name": name,
                "planned_share": _num(shares.get(name), 4),
                "routed_share": _num(routed[name] / total, 4) if total else None,
                "in_flight": svc.live.in_flight[i],
                "e2e_p50_ms": _num(t.e2e_p50_ms) if t else None,
                "e2e_p95_ms": _num(t.e2e_p95_ms) if t else None,
                "ttft_p50_ms": _num(t.ttft_p50_ms) if t else None,
                "ttft_p95_ms": _num(t.ttft_p95_ms) if t else None,
                "forecast_e2e_p95_ms": _num(b.forecast_ms) if b else None,
                "forecast_lo_ms": _num(b.forecast_lo_ms) if b else None,
                "forecast_hi_ms": _num(b.forecast_hi_ms) if b else None,
                "error_rate": _num(errors[name] / completed[name], 4) if completed[name] else None,
                "errors": errors[name],
                "alarm": svc.alarms.get(name),
                "kv_cache_usage_perc": _num(scrape.kv_cache_usage_perc, 4) if scrape else None,
                "scraped_at": _num(scrape.scraped_at_s, 3) if scrape else None,
                "source": t.source if t else "none",
            }
        )
    writer = svc.writer
    return {
        "now": time.time(),
        "tick_s": svc.config.tick_s,
        "sla_ms": TIERS["standard"].sla_ms,
        "last_tick": svc.last_tick,
        "model_version": svc.serving_model(),
        "backends": backends,
        "window_ticks": len(window),
        "decisions": {
            "queued": writer.depth if writer else 0,
            "written": writer.stats.written if writer else 0,
            "dropped": writer.stats.dropped if writer else 0,
        },
        "router": _router_stats(svc),
    }


def _router_stats(svc: Service) -> dict[str, Any]:
    assert svc.adapter is not None
    s = svc.adapter.stats
    return {
        "routed": s.routed,
        "ambiguous": s.ambiguous,
        "escalated": s.escalated,
        "over_budget": s.over_budget,
        "ambiguous_pct": round(s.ambiguous_pct, 3),
        "escalated_pct": round(s.escalated_pct, 3),
    }


def history(svc: Service, limit: int) -> dict[str, Any]:
    rows = list(svc.live.history)[-limit:]
    out = []
    for ts, ticks in rows:
        out.append(
            {
                "ts": ts,
                "backends": {
                    t.backend: {
                        "routed": t.routed,
                        "completed": t.completed,
                        "errors": t.errors,
                        "in_flight": t.in_flight,
                        "e2e_p95_ms": _num(t.e2e_p95_ms),
                        "ttft_p95_ms": _num(t.ttft_p95_ms),
                    }
                    for t in ticks
                },
            }
        )
    forecasts = svc.forecast_history[-limit:]
    return {"ticks": out, "forecasts": forecasts, "backends": list(svc.names)}


def decision(svc: Service, decision_id: str) -> dict[str, Any] | None:
    store = svc.agent_store
    assert store is not None
    row = store.get_decision(decision_id)
    if row is None:
        return None
    detail = list(
        store.db.query(
            "SELECT ttft_ms, status FROM outcome_details WHERE decision_id = ?", [decision_id]
        )
    )
    row["outcome"] = (
        None
        if row.get("actual_latency_ms") is None
        else {
            "e2e_ms": row["actual_latency_ms"],
            "observed_at": row.get("observed_at"),
            "lag_s": row.get("lag_s"),
            "error_ms": row.get("error_ms"),
            "duplicates": row.get("duplicates"),
            "ttft_ms": detail[0]["ttft_ms"] if detail else None,
            "status": detail[0]["status"] if detail else None,
        }
    )
    return row


def alerts(svc: Service, limit: int, kind: str | None) -> dict[str, Any]:
    assert svc.agent_store is not None
    rows = svc.agent_store.list_alerts(limit=limit, kind=kind)
    return {"alerts": [a.model_dump(mode="json") for a in rows]}


def traces(svc: Service, kind: str | None, limit: int) -> dict[str, Any]:
    from context_api.traces import TraceStore

    assert svc.agent_store is not None
    rows = TraceStore(svc.agent_store).list(kind=kind, limit=limit)
    return {"traces": [r.model_dump(mode="json") for r in rows]}


def trace(svc: Service, trace_id: str) -> dict[str, Any] | None:
    from context_api.traces import TraceStore

    assert svc.agent_store is not None
    found = TraceStore(svc.agent_store).get(trace_id)
    return None if found is None else found.model_dump(mode="json")


def models(svc: Service) -> dict[str, Any]:
    store = svc.agent_store
    assert store is not None
    active = store.active_model_version("forecaster")
    versions = store.list_model_versions("forecaster")
    experiments = store.list_experiments()
    return {
        "active": active.version_id if active else None,
        "versions": [v.model_dump(mode="json") for v in versions[-20:]],
        "experiments": [e.model_dump(mode="json") for e in experiments[-20:]],
    }


def escalations(svc: Service, limit: int) -> dict[str, Any]:
    """Recent escalations: this process's (with their decisions), else the stored traces."""
    from context_api.traces import TraceStore

    assert svc.agent_store is not None
    rows = TraceStore(svc.agent_store).list(kind="escalation", limit=limit)
    return {
        "escalations": [
            {
                "trace_id": r.trace_id,
                "decision_id": getattr(r, "parent_id", None),
                "started_at": getattr(r, "started_at", None),
                "backend": getattr(r, "backend", None),
                "final": getattr(r, "final", None),
                "fallback_reason": getattr(r, "fallback_reason", None),
            }
            for r in rows
        ],
        "live": svc.escalations[-limit:],
    }


def approvals(svc: Service, status: str) -> dict[str, Any]:
    """The monitors' proposals (newest first); `pending` ones wait for an operator."""
    from agents.approvals import list_approvals

    assert svc.agent_store is not None
    rows = list_approvals(svc.agent_store, "pending" if status == "pending" else None)
    return {"available": True, "approvals": [a.model_dump(mode="json") for a in rows]}


def answer_approval(svc: Service, approval_id: str, body: ApprovalAnswer) -> dict[str, Any]:
    """Approve or reject, resuming the monitor pass that waits on it (agent thread). An approved
    promotion is served from the next tick: the store's active version is loaded at once."""
    from agents import approvals as flow
    from agents.feedback_loop import sync_active_forecaster

    store = svc.agent_store
    assert store is not None and svc.adapter is not None
    try:
        flow.show_approval(store, approval_id)
    except flow.ApprovalError as exc:
        raise LookupError(str(exc)) from None
    by = body.by or "http"
    try:
        if body.decision == "approve":
            out = flow.approve(store, approval_id, by=by, reason=body.reason, model=svc._llm())
        else:
            out = flow.reject(store, approval_id, by=by, reason=body.reason or "", model=svc._llm())
    except flow.ApprovalError as exc:
        raise ValueError(str(exc)) from None
    out["serving"] = sync_active_forecaster(store, svc.adapter.fleet) or (
        svc.adapter.fleet.forecaster.version_id if svc.adapter.fleet.forecaster else None
    )
    return out


def readiness(svc: Service) -> list[str]:
    problems = []
    if not svc.ready:
        problems.append("draining" if svc.draining else "starting")
    w = svc.writer
    if w is None or not w.alive:
        problems.append("decision writer stopped")
    elif w.depth >= w.max_queue:
        problems.append("decision writer queue full")
    if svc.last_tick is not None and time.time() - svc.last_tick > 3 * svc.config.tick_s:
        problems.append("telemetry ticks stalled")
    return problems
