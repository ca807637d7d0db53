"""The offline reasoner's answers, written only from the results of the tools it called.

Every figure in an answer is read from a tool result (nothing is computed that a tool did not
return, beyond formatting), and every answer starts with `OFFLINE_TAG` so a reader always knows
it came from the deterministic reasoner and not from a language model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from agents.llm.base import ToolCallRecord

if TYPE_CHECKING:
    from agents.offline import Intent

OFFLINE_TAG = "[offline reasoner]"
FOOTER = (
    "(Answered by Arcpoint's offline reasoner: deterministic rules over the tools' results, "
    "no language model. Set ANTHROPIC_API_KEY to answer with Claude.)"
)


def fallback_footer(model: str, reason: str) -> str:
    """The footer when a configured model failed and the offline reasoner stood in: the key is
    set, so telling the user to set it would send them the wrong way."""
    return (
        f"(Answered by Arcpoint's offline reasoner because {model} could not answer ({reason}); "
        "check the model endpoint and key, then ask again.)"
    )


def _last(done: Sequence[ToolCallRecord], name: str) -> dict[str, Any] | None:
    for call in reversed(done):
        if call.name == name and not call.result.is_error and isinstance(call.result.content, dict):
            return call.result.content
    return None


def _errors(done: Sequence[ToolCallRecord]) -> list[str]:
    out = []
    for call in done:
        if call.result.is_error:
            content = call.result.content
            msg = content.get("error") if isinstance(content, dict) else str(content)
            out.append(f"{call.name}: {msg}")
    return out


def t(iso: str | None) -> str:
    """'2023-11-14T22:43:20Z' -> '22:43:20 UTC' (the date is given once, in the header)."""
    if not iso:
        return "unknown time"
    return f"{iso[11:19]} UTC" if len(iso) >= 19 else iso


def day(iso: str | None) -> str:
    return iso[:10] if iso else "unknown date"


def ms(v: Any) -> str:
    return "n/a" if v is None else f"{v:,.0f} ms"


def pct(v: Any, digits: int = 0) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def cost(v: Any) -> str:
    return "n/a" if v is None else f"${v:g}/request"


def compose_answer(intent: Intent, done: Sequence[ToolCallRecord], question: str) -> str:
    writer = _WRITERS.get(intent.name, _unknown)
    body = writer(intent, done)
    errors = _errors(done)
    if errors and not body:
        body = "I could not answer: " + "; ".join(errors)
    elif errors:
        body += "\n\nSome tools failed: " + "; ".join(errors)
    if not body:
        body = "I found nothing to report."
    return f"{OFFLINE_TAG} {body}\n\n{FOOTER}"


# --- one writer per intent -----------------------------------------------------------------------


def _fleet(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    fs = _last(done, "fleet_state")
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
                f"it takes no traffic until it recovers."
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


def _recommend(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    rec = _last(done, "recommend_backend")
    if rec is None:
        fc = _last(done, "forecasts")
        if fc is None:
            return _fleet(intent, done)
        best = min(
            (f for f in fc["forecasts"] if f.get("p_over_sla") is not None),
            key=lambda f: f["p_over_sla"],
            default=None,
        )
        if best is None:
            return "No forecasts are available to choose a backend."
        return (
            f"For a {fc['tier']} request (SLA {fc['sla_ms']:.0f} ms) at {t(fc['now'])}: "
            f"{best['backend']} is the least likely to breach ({pct(best['p_over_sla'])}, forecast "
            f"{ms(best['forecast_ms'])})."
        )
    r = rec.get("recommended")
    head = f"For a {rec['tier']} request (SLA {rec['sla_ms']:.0f} ms) at {t(rec['now'])}"
    if r is None:
        return f"{head}: no backend can be recommended: {rec['rationale']}."
    lines = [
        f"{head}, use {r['backend']}{'' if rec['confident'] else ' (with caution)'}: "
        f"{rec['rationale']}; cost {cost(r['cost_per_request'])}."
    ]
    alts = [
        f"{a['backend']} (forecast {ms(a['forecast_ms'])}, {pct(a['p_over_sla'])} breach risk, "
        f"{cost(a['cost_per_request'])})"
        for a in rec["alternatives"]
    ]
    if alts:
        lines.append("Alternatives: " + "; ".join(alts) + ".")
    if rec["excluded"]:
        lines.append(
            "Excluded: " + "; ".join(f"{k} ({v})" for k, v in rec["excluded"].items()) + "."
        )
    if not rec["confident"]:
        lines.append(
            "No backend is confidently within this SLA right now (breach probability under 25%);"
            " such a request is ambiguous and the router escalates it to the router agent."
        )
    return "\n".join(lines)


def _capacity(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    cr = _last(done, "capacity_risk")
    if cr is None:
        return _fleet(intent, done)
    risks = cr["risks"]
    head = (
        f"Capacity risks over the next {cr['minutes']:g} minutes from {t(cr['now'])} on "
        f"{day(cr['now'])} (SLA {cr['sla_ms']:.0f} ms; forecast intervals read as Gaussian):"
    )
    if not risks:
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
    lines += [f"Note: {n}." for n in cr.get("notes") or []]
    return "\n".join(lines)


def _quality(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    tl = _last(done, "quality_timeline")
    if tl is None:
        return _fleet(intent, done)
    window = f"{t(tl['since'])} to {t(tl['until'])} on {day(tl['until'])}"
    ref = tl.get("reference_violation_pct")
    peak = tl.get("peak")
    if not tl.get("degraded_from"):
        text = f"Between {window}, quality did not drop measurably"
        if ref is not None and peak:
            text += (
                f": SLA violations peaked at {peak['violation_pct']:.1f}% ({t(peak['start'])}) "
                f"against a reference of {ref:.1f}% ({tl['reference']}), below the alarm level "
                "(twice the reference, or 5 points above it)"
            )
        lines = [text + "."]
        impacts = tl.get("backends") or []
        if impacts and impacts[0]["violations"]:
            top = impacts[0]
            lines.append(
                f"Most violations in the window were on {top['backend']} "
                f"({top['violations']:,}, {pct(top['share_of_violations'])} of them)."
            )
        notable = [
            e
            for e in tl.get("events") or []
            if e["kind"] in ("chaos", "incident", "model_change", "drift")
        ]
        if notable:
            lines.append(
                "Recorded in the window: "
                + "; ".join(f"{e['summary']} at {t(e['at'])}" for e in notable[:4])
                + "."
            )
        return "\n".join(lines)
    lines = [
        f"Quality dropped between {t(tl['degraded_from'])} and {t(tl['degraded_until'])} on "
        f"{day(tl['until'])}: SLA violations (over SLA or unanswered) peaked at "
        f"{peak['violation_pct']:.1f}% of {peak['requests']:,} requests in the bucket from "
        f"{t(peak['start'])}, against {ref:.1f}% in {tl['reference']}."
    ]
    causes = tl.get("likely_causes") or []
    if causes:
        first = causes[0]
        lines.append(f"Most likely cause: {first['summary']} (from {t(first['at'])}).")
        if len(causes) > 1:
            lines.append(
                "Also in that window: "
                + "; ".join(f"{c['summary']} at {t(c['at'])}" for c in causes[1:5])
                + "."
            )
    else:
        lines.append(
            "No chaos, incident, drift, anomaly or model-change event was recorded near it."
        )
    impacts = tl.get("backends") or []
    if impacts:
        top = impacts[0]
        shift = ""
        if top.get("p95_ms_before") is not None and top.get("p95_ms_during") is not None:
            shift = f"; its p95 went from {ms(top['p95_ms_before'])} to {ms(top['p95_ms_during'])}"
        lines.append(
            f"{top['backend']} carried {pct(top['share_of_violations'])} of the violations "
            f"({top['violations']:,}, {top['violation_pct']:.1f}% of its requests){shift}."
        )
        rest = [
            f"{b['backend']} {b['violations']:,} ({pct(b['share_of_violations'])})"
            for b in impacts[1:4]
        ]
        if rest:
            lines.append("Others: " + ", ".join(rest) + ".")
    detail = _last(done, "backend_detail")
    if detail is not None:
        st = detail["state"]
        extras = []
        if detail.get("anomalies"):
            extras.append(f"{len(detail['anomalies'])} anomalies")
        if detail.get("drift_reports"):
            extras.append(
                "drift: "
                + ", ".join(f"{d['severity']} {d['kind']}" for d in detail["drift_reports"][:2])
            )
        lines.append(
            f"{st['backend']} at {t(detail['now'])}: {st['status']}, p95 {ms(st['p95_ms'])}"
            + (f", {'; '.join(extras)} around the drop" if extras else "")
            + "."
        )
    return "\n".join(lines)


def _drift(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    ds = _last(done, "drift_status")
    if ds is None:
        return _fleet(intent, done)
    lines = []
    if ds["drifted_backends"]:
        lines.append(
            f"Drift: yes, {ds['max_severity']} severity at {t(ds['now'])} on {day(ds['now'])}, on "
            f"{', '.join(ds['drifted_backends'])} (current window {ds['window'].replace('T', ' ')} "
            "against the reference window before it)."
        )
        best: dict[str, dict[str, Any]] = {}
        for f in ds["live"]:
            if f["status"] == "drift":
                cur = best.get(f["backend"])
                if cur is None or (f.get("p_adjusted") or 1) < (cur.get("p_adjusted") or 1):
                    best[f["backend"]] = f
        for name, f in best.items():
            lines.append(
                f"- {name}: mean absolute error {ms(f['reference_mae_ms'])} -> "
                f"{ms(f['current_mae_ms'])} ({f['test']}, adjusted p={f['p_adjusted']:.2g}, "
                f"{f['severity']}, {f['n_current']} vs {f['n_reference']} ticks)."
            )
    else:
        lines.append(
            f"Drift: no drift found at {t(ds['now'])} on {day(ds['now'])} (max severity "
            f"{ds['max_severity']}); current window {ds['window'].replace('T', ' ')}."
        )
        seen: dict[str, dict[str, Any]] = {}
        for f in ds["live"]:
            if f["test"] == "welch_t" and f["status"] != "insufficient_data":
                seen.setdefault(f["backend"], f)
        if seen:
            lines.append(
                "Mean absolute error, reference -> current: "
                + "; ".join(
                    f"{b} {ms(f['reference_mae_ms'])} -> {ms(f['current_mae_ms'])} "
                    f"(p={f['p_adjusted']:.2g})"
                    for b, f in seen.items()
                )
                + "."
            )
    if ds["change_points"]:
        lines.append(
            "Page-Hinkley change points: "
            + "; ".join(
                f"{c['backend']} at {t(c['at'])} "
                f"(MAE {ms(c['mae_before_ms'])} -> {ms(c['mae_after_ms'])})"
                for c in ds["change_points"][-4:]
            )
            + "."
        )
    if ds["stored_reports"]:
        lines.append(
            "Stored drift reports: "
            + "; ".join(
                f"{d['severity']} {d['kind']} ({d['test']}) on "
                f"{d['backend'] or 'the model'} at {t(d['at'])}"
                for d in ds["stored_reports"][:4]
            )
            + "."
        )
    rec = _last(done, "record_drift_reports")
    if rec is not None:
        lines.append(f"Recorded: {rec['message']}.")
    if ds["drifted_backends"]:
        lines.append(
            "Recommended: let the retraining policy decide (it needs enough new outcomes and "
            "respects a cooldown); a drift caused by a transient incident may pass without one."
        )
    lines += [f"Note: {n}." for n in ds.get("notes") or []]
    return "\n".join(lines)


def _experiments(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    ex = _last(done, "experiments")
    if ex is None:
        return _fleet(intent, done)
    if not ex["experiments"]:
        return "No champion-vs-challenger experiments are stored."
    lines = []
    for e in ex["experiments"]:
        head = (
            f"Experiment {e['experiment_id']} ({e['mode']} mode, {e['status']}): champion "
            f"{e['champion_id']} vs challenger {e['challenger_id']}, started {t(e['started_at'])} "
            f"on {day(e['started_at'])}."
        )
        lines.append(head)
        live = e.get("live")
        if live:
            lines.append(
                f"  Now: {live['state']} -> recommendation {live['recommendation'].upper()}. "
                f"{live['n_champion']:,} vs {live['n_challenger']:,} samples (minimum "
                f"{live['min_samples_per_arm']} per arm); MAE champion "
                f"{ms(live['mae_champion_ms'])},"
                f" challenger {ms(live['mae_challenger_ms'])}"
                + (
                    f" (difference {live['mae_difference_ms']:+.1f} ms, "
                    f"{100 * live['ci_level']:.0f}% CI {live['ci_low_ms']:+.1f} to "
                    f"{live['ci_high_ms']:+.1f} ms)"
                    if live.get("mae_difference_ms") is not None
                    and live.get("ci_low_ms") is not None
                    else ""
                )
                + (
                    f"; {live['test']} p={live['p_value']:.3g} against alpha "
                    f"{live['alpha_spent_at_look']:.3g}"
                    " allowed at this look"
                    if live.get("p_value") is not None
                    else ""
                )
                + "."
            )
            srm = live.get("srm")
            if srm:
                lines.append(f"  Sample-ratio check: {srm.get('summary') or srm}.")
        elif e.get("verdict"):
            lines.append(f"  Verdict: {e['verdict']} (winner {e.get('winner_id') or 'none'}).")
    return "\n".join(lines)


def _alerts(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    al = _last(done, "recent_alerts")
    if al is None:
        return _fleet(intent, done)
    if not al["alerts"]:
        return "No alerts are stored."
    lines = [f"{al['count']} recent alert(s), newest first:"]
    for a in al["alerts"][:10]:
        lines.append(
            f"- {a['at'][:10]} {t(a['at'])}: {a['severity']} {a['kind']} on {a['subject']}"
            f" (x{a['occurrences']}, delivery {a['delivery']}): {a['recommended_action']}."
        )
    return "\n".join(lines)


def _anomalies(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    an = _last(done, "anomalies")
    if an is None:
        return _fleet(intent, done)
    if not an["count"]:
        return f"No anomalies stored between {t(an['since'])} and {t(an['until'])}."
    lines = [
        f"{an['count']} anomalies between {t(an['since'])} and {t(an['until'])} on "
        f"{day(an['until'])}:"
    ]
    for b, e in an["by_backend"].items():
        lines.append(
            f"- {b}: {e['count']} from {t(e['first'])} to {t(e['last'])}, max severity "
            f"{e['max_severity']:.2f}."
        )
    return "\n".join(lines)


def _performance(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    lines = []
    perf = _last(done, "performance")
    if perf is not None:
        lines.append(
            f"Forecast accuracy between {t(perf['since'])} and {t(perf['until'])} on "
            f"{day(perf['until'])}:"
        )
        for r in perf["by_version_backend"][:8]:
            lines.append(
                f"- {r['backend']} ({r['model_version']}): MAE {ms(r['mae_ms'])}, RMSE "
                f"{ms(r['rmse_ms'])}, bias {r['bias_ms']:+.0f} ms (actual - predicted) over "
                f"{r['n']:,} outcomes."
            )
    check = _last(done, "retrain_check")
    if check is not None:
        lines.append(
            f"Retraining policy at {t(check['now'])}: "
            f"{'RETRAIN DUE' if check['retrain'] else 'no retrain'}"
            f" - {check['summary']}"
        )
    req = _last(done, "request_retrain")
    if req is not None:
        lines.append(f"Retrain request: {req['message']}.")
    return "\n".join(lines)


def _models(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    mv = _last(done, "model_versions")
    if mv is None:
        return _fleet(intent, done)
    a = mv.get("active")
    lines = []
    if a:
        lines.append(
            f"Active {mv['kind']}: {a['version_id']} (activated {a['activated_at']}, hold-out MAE "
            f"{ms(a['holdout_mae_ms'])}, interval coverage {pct(a['interval_coverage'], 1)})."
        )
    else:
        lines.append(f"No active {mv['kind']} version.")
    for h in mv["history"][-5:]:
        lines.append(
            f"- {h['at']}: {h['action']} {h['version_id']} (from {h['previous_version_id']}; "
            f"{h['reason']})."
        )
    return "\n".join(lines)


def _backend(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    d = _last(done, "backend_detail")
    if d is None:
        return _fleet(intent, done)
    s = d["state"]
    f = s["forecast"]
    lines = [
        f"{s['backend']} at {t(d['now'])} on {day(d['now'])}: {s['status'].upper()}"
        + (f" ({'; '.join(s['status_reasons'])})" if s["status_reasons"] else "")
        + f"; p95 {ms(s['p95_ms'])}, errors {pct(s['error_rate'], 1)}, forecast "
        f"{ms(f['forecast_ms'])} "
        f"({pct(f['p_over_sla'])} chance over SLA).",
        f"Last {d['window_minutes']:.0f} min: p95 {ms(d['p95_ms_min'])}-{ms(d['p95_ms_max'])} "
        f"(mean {ms(d['p95_ms_mean'])}), {d['requests']:,} requests routed to it, "
        f"{d['sla_violation_pct'] if d['sla_violation_pct'] is not None else 'n/a'}% over SLA "
        "or unanswered.",
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


def _explain(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    ex = _last(done, "explain_decision")
    if ex is not None:
        lines = list(ex["explanation"])
        if intent.backend and intent.backend != ex["backend"]:
            lines.insert(
                0,
                f"Note: decision {ex['decision_id']} went to {ex['backend']}, "
                f"not {intent.backend}.",
            )
        allowed = [c["backend"] for c in ex["candidates"] if c["allowed"]]
        lines.append(f"Allowed backends at that tick: {', '.join(allowed) or 'none'}.")
        return "\n".join(lines)
    found = _last(done, "find_decisions")
    if found is not None:
        if not found["decisions"]:
            return "No decisions are stored in that window."
        ids = ", ".join(
            f"{d['decision_id']} ({d['backend']}, {d['tier']}, {t(d['at'])})"
            for d in found["decisions"]
        )
        example = found["decisions"][0]
        return (
            'Which decision? Name its id, e.g. "why was decision '
            f'{example["decision_id"]} routed to {example["backend"]}?". '
            f"The newest ones: {ids}."
        )
    return ""


def _unknown(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    base = _fleet(intent, done)
    hint = (
        "I can answer: the state of the fleet; which backend to use for a tier (premium, "
        "standard, batch); why quality dropped (in the last hour or at a time such as 14:00); "
        "capacity risks in the next N minutes; drift; experiments; alerts; anomalies; model "
        "versions and accuracy; why decision <id> was routed where it was."
    )
    return f"{base}\n\n{hint}" if base else hint


def _route(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    for call in reversed(done):
        if call.name == "submit_decision":
            return f"Submitted {call.input.get('backend')}: {call.input.get('rationale')}"
    return "No decision submitted."


_WRITERS: dict[str, Callable[[Intent, Sequence[ToolCallRecord]], str]] = {
    "fleet": _fleet,
    "recommend": _recommend,
    "capacity": _capacity,
    "quality": _quality,
    "drift": _drift,
    "experiments": _experiments,
    "alerts": _alerts,
    "anomalies": _anomalies,
    "performance": _performance,
    "models": _models,
    "backend": _backend,
    "explain": _explain,
    "unknown": _unknown,
    "route": _route,
}
