"""Offline answers to fleet-wide questions that want one figure, not the fleet dump: which
backend is slowest (or has most errors, or most load), whether anything is down, and how many
requests went through and how many missed the SLA, now or over a window.

"Now" reads the fleet state (the newest tick and its last 15 minutes); a window reads the
backends compared over it. A backend with no figure is listed as unknown, never ranked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.llm.base import ToolCallRecord
from agents.offline.question import Intent
from agents.offline.text import cost, day, last, ms, pct, span, t

_DOWN = ("ejected", "failing")

# measure -> (fleet_state key, compare_backends key, label, formatter)
_KEYS: dict[str, tuple[str, str, str]] = {
    "latency": ("p95_ms", "p95_ms_mean", "p95 latency"),
    "errors": ("error_rate", "error_rate_mean", "error rate"),
    "load": ("rps", "rps_mean", "request rate"),
    "cost": ("", "cost_per_request", "cost per request"),
}


def _fmt(measure: str, v: Any) -> str:
    if measure == "latency":
        return ms(v)
    if measure == "errors":
        return pct(v, 2)
    if measure == "cost":
        return cost(v)
    return f"{v:.1f} rps"


def rank(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    measure = intent.measure or "latency"
    now_key, window_key, label = _KEYS[measure]
    fs, cmp = last(done, "fleet_state"), last(done, "compare_backends")
    if cmp is not None:
        rows = cmp["backends"]
        key, when = window_key, span(cmp["since"], cmp["until"])
        label = label if measure == "cost" else f"mean {label}"
    elif fs is not None:
        rows, key, when = fs["backends"], now_key, f"at {t(fs['now'])} on {day(fs['now'])}"
    else:
        return ""
    if intent.backends and cmp is None:
        rows = [r for r in rows if r["backend"] in intent.backends] or rows
    known = [r for r in rows if r.get(key) is not None]
    unknown = [r["backend"] for r in rows if r.get(key) is None]
    if not known:
        return f"No backend has a {label} {when}: I cannot rank them."
    known.sort(key=lambda r: r[key], reverse=not intent.ascending)
    word = {
        ("latency", False): "slowest",
        ("latency", True): "fastest",
        ("errors", False): "most errors",
        ("errors", True): "fewest errors",
        ("load", False): "busiest",
        ("load", True): "least loaded",
        ("cost", False): "most expensive",
        ("cost", True): "cheapest",
    }[(measure, intent.ascending)]
    top = known[0]
    ties = [r["backend"] for r in known[1:] if r[key] == top[key]]
    if measure == "errors":
        head = f"{top['backend']} has the {word}"
    else:
        head = f"{top['backend']} is the {word}"
    comparative = {"latency": ("slower", "faster"), "cost": ("more expensive", "cheaper")}
    if len(known) == 2 and measure in comparative:
        head = f"{top['backend']} is {comparative[measure][intent.ascending]} than "
        head += known[1]["backend"]
    if ties:
        head += f" (tied with {', '.join(ties)})"
    order = ", ".join(f"{r['backend']} {_fmt(measure, r[key])}" for r in known)
    lines = [f"{head} {when}, by {label}: {order}."]
    if measure == "latency":
        sla = (cmp or fs or {}).get("sla_ms")
        if sla:
            within = [r["backend"] for r in known if r[key] <= sla]
            lines.append(f"Within the {sla:.0f} ms SLA: {', '.join(within) if within else 'none'}.")
    if fs is not None and cmp is None:
        down = [f"{r['backend']} ({r['status']})" for r in fs["backends"] if r["status"] in _DOWN]
        if down:
            lines.append(f"Taking no traffic: {', '.join(down)}.")
    if unknown:
        lines.append(f"Unknown (no {label} recorded): {', '.join(unknown)}.")
    lines += [f"Note: {n}." for n in (cmp or {}).get("notes") or []]
    return "\n".join(lines)


def down(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    fs = last(done, "fleet_state")
    if fs is None:
        return ""
    when = f"at {t(fs['now'])} on {day(fs['now'])}"
    out = [b for b in fs["backends"] if b["status"] in _DOWN]
    lines = []
    if out:
        lines.append(
            f"Down {when}: "
            + "; ".join(
                f"{b['backend']} ({b['status']}: {', '.join(b['status_reasons']) or 'no reason'})"
                for b in out
            )
            + ". It takes no traffic until it recovers."
        )
    else:
        lines.append(f"No backend is down {when}: none is failing or ejected.")
    by_status: dict[str, list[str]] = {}
    for b in fs["backends"]:
        if b["status"] not in _DOWN:
            by_status.setdefault(b["status"], []).append(b["backend"])
    for status, names in by_status.items():
        word = "healthy" if status == "ok" else status
        lines.append(f"{word.capitalize()}: {', '.join(names)}.")
    degraded = [b for b in fs["backends"] if b["status"] == "degraded"]
    for b in degraded:
        lines.append(f"- {b['backend']}: {'; '.join(b['status_reasons'])}.")
    return "\n".join(lines)


def traffic(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    fs, cmp = last(done, "fleet_state"), last(done, "compare_backends")
    if cmp is not None:
        return _traffic_window(cmp)
    if fs is None:
        return ""
    sla = fs["sla_ms"]
    if not fs.get("recent_requests"):
        minutes = fs["recent_window_minutes"]
        return f"No requests are stored in the {minutes:.0f} minutes to {t(fs['now'])}."
    bad = fs["recent_sla_violation_pct"]
    within = [
        b["backend"] for b in fs["backends"] if b.get("p95_ms") is not None and b["p95_ms"] <= sla
    ]
    lines = [
        f"In the last {fs['recent_window_minutes']:.0f} minutes to {t(fs['now'])} on "
        f"{day(fs['now'])}: {fs['recent_requests']:,} requests, {bad:.1f}% over the {sla:.0f} ms "
        f"SLA or unanswered ({100 - bad:.1f}% within it), {fs['recent_escalated']:,} decided by "
        "the router agent.",
        f"Backends with p95 within the SLA now: {', '.join(within) if within else 'none'} of "
        f"{len(fs['backends'])}.",
        "Error rate now: "
        + ", ".join(f"{b['backend']} {_err(b.get('error_rate'), 1)}" for b in fs["backends"])
        + ".",
    ]
    return "\n".join(lines)


def _traffic_window(cmp: dict[str, Any]) -> str:
    rows = [r for r in cmp["backends"] if r.get("ticks")]
    when = span(cmp["since"], cmp["until"]).capitalize()
    if not rows:
        return f"{when}: no telemetry and no requests stored in that window."
    stored = sum(r.get("decisions_stored") or 0 for r in rows)
    bad = sum(r.get("sla_violations") or 0 for r in rows)
    served = [r["requests_served_est"] for r in rows if r.get("requests_served_est") is not None]
    lines = [f"{when} (SLA {cmp['sla_ms']:.0f} ms):"]
    if served:
        lines.append(f"About {sum(served):,} requests served (telemetry request rates).")
    if stored:
        lines.append(
            f"{stored:,} routed requests stored; {bad:,} ({100.0 * bad / stored:.1f}%) over the "
            "SLA or unanswered."
        )
    else:
        lines.append("No routed requests are stored in that window (SLA misses unknown).")
    for r in rows:
        viol = (
            f"{r['sla_violation_pct']}% of {r['decisions_stored']:,} over SLA or unanswered"
            if r.get("sla_violation_pct") is not None
            else "no routed requests stored"
        )
        lines.append(f"- {r['backend']}: {viol}; error rate {_err(r.get('error_rate_mean'))} mean.")
    lines += [f"Note: {n}." for n in cmp.get("notes") or []]
    return "\n".join(lines)


def _err(v: Any, digits: int = 2) -> str:
    return "unknown" if v is None else pct(v, digits)
