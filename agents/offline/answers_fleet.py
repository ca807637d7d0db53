"""Offline answers about the fleet now and next: its state, one backend, which backend to
use, capacity risk, comparisons, cost and what-if."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.llm.base import ToolCallRecord
from agents.offline.question import Intent
from agents.offline.text import cost, day, every, last, ms, pct, span, t


def fleet(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    fs = last(done, "fleet_state")
    if fs is None:
        return ""
    lines = [
        f"Fleet state at {t(fs['now'])} on {day(fs['now'])} (newest telemetry), SLA "
        f"{fs['sla_ms']:.0f} ms: {len(fs['healthy'])} of {len(fs['backends'])} backends healthy"
        f" ({', '.join(fs['healthy']) or 'none'}), {fs['total_rps']:.1f} rps in all."
    ]
    for b in fs["backends"]:
        f = b["forecast"]
        if b["status"] in ("ejected", "failing"):
            lines.append(
                f"- {b['backend']}: {b['status'].upper()} ({'; '.join(b['status_reasons'])}); "
                f"p95 {ms(b['p95_ms'])}; it takes no traffic until it recovers."
            )
            continue
        parts = [f"p95 {ms(b['p95_ms'])}"]
        if b.get("rps") is not None:
            load = f"{b['rps']:.1f} rps"
            if b.get("utilisation") is not None and b.get("capacity_rps"):
                load += f" ({pct(b['utilisation'])} of {b['capacity_rps']:g} rps capacity)"
            parts.append(load)
        parts.append(f"errors {pct(b['error_rate'], 1)}")
        if f.get("forecast_ms") is not None:
            parts.append(
                f"forecast {ms(f['forecast_ms'])} in 5 min (90% interval {f['lo_ms']:,.0f}-"
                f"{f['hi_ms']:,.0f} ms, {pct(f['p_over_sla'])} chance over SLA)"
            )
        else:
            parts.append("no forecast (SLA risk unknown)")
        if b.get("traffic_share") is not None:
            parts.append(f"{pct(b['traffic_share'])} of standard traffic")
        why = f" ({'; '.join(b['status_reasons'])})" if b["status_reasons"] else ""
        lines.append(f"- {b['backend']}: {b['status'].upper()}{why}: {', '.join(parts)}.")
    if fs.get("recent_requests"):
        lines.append(
            f"Last {fs['recent_window_minutes']:.0f} min: {fs['recent_requests']:,} requests, "
            f"{fs['recent_sla_violation_pct']:.1f}% over SLA or unanswered, "
            f"{fs['recent_escalated']:,} decided by the router agent."
        )
    if fs["active_alerts"]:
        alerts = "; ".join(
            f"{a['severity']} {a['kind']} on {a['subject']} at {t(a['at'])}"
            for a in fs["active_alerts"][:4]
        )
        lines.append(f"Alerts in the last hour: {alerts}.")
    lines.append(
        f"Forecaster {fs['model_version'] or 'unknown'}; forecasts from the "
        f"{fs['forecast_source']}."
    )
    lines += [f"Note: {n}." for n in fs.get("notes") or []]
    return "\n".join(lines)


def recommend(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    rec = last(done, "recommend_backend")
    if rec is None:
        return ""
    r = rec.get("recommended")
    head = f"For a {rec['tier']} request (SLA {rec['sla_ms']:.0f} ms) at {t(rec['now'])}"
    if r is None:
        lines = [f"{head}: no backend can be recommended: {rec['rationale']}."]
    else:
        caution = "" if rec["confident"] else " (with caution)"
        lines = [
            f"{head}, use {r['backend']}{caution}: {rec['rationale']}; cost "
            f"{cost(r['cost_per_request'])}."
        ]
    alts = []
    for a in rec["alternatives"]:
        if a["forecast_ms"] is None:
            continue
        over = " (forecast over the SLA)" if a["forecast_ms"] > rec["sla_ms"] else ""
        alts.append(
            f"{a['backend']} (forecast {ms(a['forecast_ms'])}{over}, {pct(a['p_over_sla'])} "
            f"breach risk, {cost(a['cost_per_request'])})"
        )
    if alts:
        lines.append("Alternatives: " + "; ".join(alts) + ".")
    unknown = rec.get("unknown") or []
    if unknown and rec.get("basis") != "measured_p95":
        lines.append(
            f"No forecast for {', '.join(unknown)}: their risk is unknown, so they are not "
            "recommended."
        )
    elif unknown:
        measured = [
            f"{a['backend']} {ms(a['p95_now_ms'])}"
            for a in [r, *rec["alternatives"]]
            if a and a.get("p95_now_ms") is not None
        ]
        lines.append(
            "No backend has a forecast (risk unknown); latest measured p95: "
            + ", ".join(measured)
            + "."
        )
    if rec["excluded"]:
        lines.append(
            "Excluded: " + "; ".join(f"{k} ({v})" for k, v in rec["excluded"].items()) + "."
        )
    if r is not None and not rec["confident"] and rec.get("basis") == "forecast":
        lines.append(
            "No backend is confidently within this SLA right now (breach probability under 25%);"
            " such a request is ambiguous and the router escalates it to the router agent."
        )
    return "\n".join(lines)


def capacity(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    cr = last(done, "capacity_risk")
    if cr is None:
        return ""
    risks = cr["risks"]
    head = (
        f"Capacity risks over the next {cr['minutes']:g} minutes from {t(cr['now'])} on "
        f"{day(cr['now'])} (SLA {cr['sla_ms']:.0f} ms; forecast intervals read as Gaussian):"
    )
    if not risks and not cr.get("unknown"):
        return f"{head} none: every backend is forecast within its SLA and capacity."
    lines = [head]
    for r in risks:
        lines.append(
            f"- {r['backend']} [{r['kind']}, {r['level']}, p={r['probability']:.2f}]: "
            f"{r['detail']}."
        )
    tail = (
        f"Fleet load {cr['fleet_load_rps']:.1f} rps now, "
        f"{cr['projected_load_rps']:.1f} rps projected"
    )
    if cr.get("fleet_capacity_rps"):
        tail += f", against {cr['fleet_capacity_rps']:g} rps of capacity on the usable backends"
    lines.append(tail + ".")
    if cr["no_risk"]:
        lines.append(f"No material risk on: {', '.join(cr['no_risk'])}.")
    if cr.get("unknown"):
        lines.append(
            f"Unknown for {', '.join(cr['unknown'])}: no forecast, so their SLA risk cannot be "
            "judged."
        )
    lines += [f"Note: {n}." for n in cr.get("notes") or []]
    return "\n".join(lines)


def backend(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    return "\n".join(_one_backend(d) for d in every(done, "backend_detail"))


def _one_backend(d: dict[str, Any]) -> str:
    s = d["state"]
    f = s["forecast"]
    forecast = (
        f"forecast {ms(f['forecast_ms'])} ({pct(f['p_over_sla'])} chance over SLA)"
        if f.get("forecast_ms") is not None
        else "no forecast (its SLA risk is unknown)"
    )
    violations = (
        f"{d['sla_violation_pct']}% over SLA or unanswered"
        if d["sla_violation_pct"] is not None
        else "no outcomes to judge"
    )
    lines = [
        f"{s['backend']} at {t(d['now'])} on {day(d['now'])}: {s['status'].upper()}"
        + (f" ({'; '.join(s['status_reasons'])})" if s["status_reasons"] else "")
        + f"; p95 {ms(s['p95_ms'])}, errors {pct(s['error_rate'], 1)}, {forecast}.",
        f"Last {d['window_minutes']:.0f} min: p95 {ms(d['p95_ms_min'])}-{ms(d['p95_ms_max'])} "
        f"(mean {ms(d['p95_ms_mean'])}), {d['requests']:,} requests routed to it, {violations}.",
    ]
    for e in d["events"][:3]:
        lines.append(f"- event {t(e['at'])}: {e['summary']}.")
    if d["anomalies"]:
        lines.append(
            f"- {len(d['anomalies'])} anomalies, max severity "
            f"{max(a['severity'] for a in d['anomalies']):.2f}."
        )
    for a in d["alerts"][:3]:
        lines.append(
            f"- alert {t(a['at'])}: {a['severity']} {a['kind']}: {a['recommended_action']}."
        )
    return "\n".join(lines)


def compare(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    c = last(done, "compare_backends")
    if c is None:
        return ""
    rows = c["backends"]
    lines = [
        f"{' vs '.join(r['backend'] for r in rows)} from {t(c['since'])} to {t(c['until'])} on "
        f"{day(c['until'])} (SLA {c['sla_ms']:.0f} ms):"
    ]
    for r in rows:
        if not r.get("ticks"):
            lines.append(f"- {r['backend']}: no telemetry in the window.")
            continue
        routed = (
            f"{r['decisions_stored']:,} requests routed to it, {r['sla_violation_pct']}% over "
            "SLA or unanswered"
            if r.get("sla_violation_pct") is not None
            else "no routed requests stored"
        )
        lines.append(
            f"- {r['backend']}: p95 mean {ms(r['p95_ms_mean'])} (max {ms(r['p95_ms_max'])}, "
            f"{r['ticks_over_sla_pct']}% of ticks over the SLA), errors "
            f"{pct(r['error_rate_mean'], 2)} mean, {routed}, {cost(r['cost_per_request'])}."
        )
    from context_api.agent_tools.usage import CRITERIA

    better = [f"{CRITERIA[k]}: {v}" for k, v in (c.get("best") or {}).items() if v]
    if better:
        lines.append("Better on: " + "; ".join(better) + ".")
    lines += [f"Note: {n}." for n in c.get("notes") or []]
    return "\n".join(lines)


def cost_answer(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    c = last(done, "cost")
    if c is None:
        return ""
    if not c["backends"]:
        return (
            f"No telemetry and no stored requests {span(c['since'], c['until'])}: the cost of "
            "that window is unknown."
        )
    lines = [f"Cost {span(c['since'], c['until'])}:"]
    for r in c["backends"]:
        served = r["requests_served_est"]
        est = (
            f"about {served:,} requests served x {cost(r['cost_per_request'])} = "
            f"${r['cost_usd_est']:.2f}"
            if served is not None and r["cost_usd_est"] is not None
            else "cost unknown (no request rate or no price)"
        )
        lines.append(f"- {r['backend']}: {est}.")
    if c.get("total_usd") is not None:
        lines.append(f"Total: about ${c['total_usd']:.2f} (request rates x cost per request).")
    if c.get("stored_decisions_usd") is not None:
        lines.append(f"The stored decisions alone cost ${c['stored_decisions_usd']:.2f}.")
    lines += [f"Note: {n}." for n in c.get("notes") or []]
    return "\n".join(lines)


def _pct(v: Any) -> str:
    return "n/a (no traffic)" if v is None else f"{v}%"


def what_if(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    w = last(done, "what_if")
    if w is None:
        return ""
    lines = [w["summary"]]
    for r in w.get("backends") or []:
        lines.append(
            f"- {r['backend']}: SLO misses {_pct(r['baseline_violation_pct'])} -> "
            f"{_pct(r['scenario_violation_pct'])}, p95 time to first token "
            f"{ms(r['baseline_p95_ms'])} -> {ms(r['scenario_p95_ms'])}, load "
            f"{r['baseline_rps']} -> {r['scenario_rps']} rps."
        )
    lines += [f"Note: {n}." for n in w.get("notes") or []]
    return "\n".join(lines)
