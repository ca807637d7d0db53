"""Offline answers about what happened and how the models fare: quality drops, drift,
experiments, alerts, anomalies, accuracy, model versions and history, approvals, decisions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agents.llm.base import ToolCallRecord
from agents.offline.question import Intent
from agents.offline.text import day, last, ms, pct, span, t


def quality(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    tl = last(done, "quality_timeline")
    if tl is None:
        return ""
    window = f"{t(tl['since'])} to {t(tl['until'])} on {day(tl['until'])}"
    if not any(b.get("requests") for b in tl.get("buckets") or []):
        return (
            f"No requests are stored {span(tl['since'], tl['until'])}: I cannot say how quality "
            "was then."
        )
    at = _at_time(intent, tl)
    if at:
        return at + "\n" + _quality_body(tl, done, window)
    return _quality_body(tl, done, window)


def _at_time(intent: Intent, tl: dict[str, Any]) -> str:
    """For "at 14:00": the bucket holding that time and what was recorded within 5 minutes of it
    (the rest of the answer covers the hour around it)."""
    buckets = tl.get("buckets") or []
    if not intent.window.around or not buckets:
        return ""
    width = float(tl["bucket_minutes"]) * 60.0
    center = (_ts(tl["since"]) + _ts(tl["until"])) / 2.0  # "around" is the window's middle
    hit = next((b for b in buckets if b["start_ts"] <= center < b["start_ts"] + width), None)
    if hit is None:
        return ""
    if hit["requests"]:
        line = (
            f"At {intent.window.around} UTC ({tl['bucket_minutes']:g}-minute bucket from "
            f"{t(hit['start'])}): {hit['violation_pct']:.1f}% of {hit['requests']:,} requests over "
            "the SLA or unanswered"
        )
    else:
        line = f"At {intent.window.around} UTC: no requests are stored in that bucket"
    near = [
        e
        for e in [*(tl.get("likely_causes") or []), *(tl.get("events") or [])]
        if abs(e["ts"] - center) <= 300.0
    ]
    near = list({(e["ts"], e["summary"]): e for e in near}.values())
    if near:
        line += "; within 5 minutes of it: " + "; ".join(
            f"{e['summary']} at {t(e['at'])}" for e in sorted(near, key=lambda e: e["ts"])[:4]
        )
    return line + "."


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _quality_body(tl: dict[str, Any], done: Sequence[ToolCallRecord], window: str) -> str:
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
    detail = last(done, "backend_detail")
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


def drift(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    ds = last(done, "drift_status")
    if ds is None:
        return ""
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
    rec = last(done, "record_drift_reports")
    if rec is not None:
        lines.append(f"Recorded: {rec['message']}.")
    if ds["drifted_backends"]:
        lines.append(
            "Recommended: let the retraining policy decide (it needs enough new outcomes and "
            "respects a cooldown); a drift caused by a transient incident may pass without one."
        )
    lines += [f"Note: {n}." for n in ds.get("notes") or []]
    return "\n".join(lines)


def experiments(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    ex = last(done, "experiments")
    if ex is None:
        return ""
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


def alerts(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    al = last(done, "recent_alerts")
    if al is None:
        return ""
    if not al["alerts"]:
        return "No alerts are stored."
    lines = [f"{al['count']} recent alert(s), newest first:"]
    for a in al["alerts"][:10]:
        lines.append(
            f"- {a['at'][:10]} {t(a['at'])}: {a['severity']} {a['kind']} on {a['subject']}"
            f" (x{a['occurrences']}, delivery {a['delivery']}): {a['recommended_action']}."
        )
    return "\n".join(lines)


def anomalies(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    an = last(done, "anomalies")
    if an is None:
        return ""
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


def performance(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    lines = []
    perf = last(done, "performance")
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
    check = last(done, "retrain_check")
    if check is not None:
        lines.append(
            f"Retraining policy at {t(check['now'])}: "
            f"{'RETRAIN DUE' if check['retrain'] else 'no retrain'}"
            f" - {check['summary']}"
        )
    req = last(done, "request_retrain")
    if req is not None:
        lines.append(f"Retrain request: {req['message']}.")
    return "\n".join(lines)


def models(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    mv = last(done, "model_versions")
    if mv is None:
        return ""
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


def explain(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    ex = last(done, "explain_decision")
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
    found = last(done, "find_decisions")
    if found is not None:
        if not found["decisions"]:
            return "No decisions are stored in that window."
        ids = ", ".join(
            f"{d['decision_id']} ({d['backend']}, {d['tier']}, {t(d['at'])})"
            for d in found["decisions"]
        )
        example = found["decisions"][0]
        return (
            f"The newest decisions{' to ' + intent.backend if intent.backend else ''}: {ids}. "
            'For why one went where it did, name its id, e.g. "why was decision '
            f'{example["decision_id"]} routed to {example["backend"]}?".'
        )
    return ""


def model_history(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    mh = last(done, "model_history")
    if mh is None:
        return ""
    lines: list[str] = []
    s = mh.get("serving")
    if s is None:
        lines.append(f"No {mh['kind']} version is serving.")
    else:
        lines.append(
            f"Serving {mh['kind']}: {s['version_id']}, since {t(s['since'])} on {day(s['since'])}"
            f"; trained on {t(s['trained_from'])} to {t(s['trained_to'])}"
            + (f", parent {s['parent_id']}" if s.get("parent_id") else "")
            + (f", hold-out MAE {ms(s['holdout_mae_ms'])}" if s.get("holdout_mae_ms") else "")
            + "."
        )
        lines.append(_how(s.get("how"), s["version_id"]))
    v = mh.get("version")
    if v is not None and (s is None or v["version_id"] != s["version_id"]):
        served = "; ".join(f"{p['from']} to {p['until']}" for p in v["served"]) or "never"
        lines.append(
            f"{v['version_id']} ({v['status']}): created {t(v['created_at'])} on "
            f"{day(v['created_at'])}, trained on {t(v['trained_from'])} to {t(v['trained_to'])}"
            f", served: {served}."
        )
        for e in v["experiments"][:3]:
            lines.append(
                f"- {e['role']} in {e['experiment_id']} ({e['status']}"
                + (f": {e['verdict']}" if e.get("verdict") else "")
                + ")."
            )
    earlier = [h for h in mh["activations"][:-1]][-3:]
    if earlier:
        lines.append(
            "Before that: "
            + "; ".join(f"{h['action']} {h['version_id']} at {t(h['at'])}" for h in earlier)
            + "."
        )
    lines += [f"Note: {n}." for n in mh.get("notes") or []]
    return "\n".join(lines)


def _how(how: dict[str, Any] | None, version: str) -> str:
    if not how:
        return f"No activation of {version} is recorded."
    via = []
    if how.get("experiment_id"):
        via.append(f"experiment {how['experiment_id']}")
    if how.get("approval_id"):
        via.append(f"approval {how['approval_id']} by {how.get('approved_by')}")
    verb = "Rolled back to" if how["action"] == "rollback" else "Activated"
    return (
        f"{verb} {version} at {t(how['at'])}"
        + (f" via {' and '.join(via)}" if via else "")
        + (f" (previously {how['previous_version_id']})" if how.get("previous_version_id") else "")
        + (f": {how['reason']}" if how.get("reason") else "")
        + "."
    )


def approvals(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    ap = last(done, "approvals")
    if ap is None:
        return ""
    rows = ap["approvals"]
    if not rows:
        return "No model change has been proposed: nothing waits for an approval."
    lines = [f"{ap['pending']} change(s) waiting for an approval."]
    for r in rows[:5]:
        answer = (
            f"{r['status']} by {r['decided_by']}" + (f" ({r['reason']})" if r.get("reason") else "")
            if r.get("decided_by")
            else "waiting for an operator"
        )
        lines.append(
            f"- {r['approval_id']}: {r['action']} {r['version_id']} (serving then "
            f"{r['current_version_id']}), proposed {t(r['created_at'])} by {r['proposed_by']}: "
            f"{answer}" + (f"; {r['result']}" if r.get("result") else "") + "."
        )
    if ap["pending"]:
        first = next(r for r in rows if r["status"] == "pending")
        lines.append(
            f"Answer with `arcpoint approvals approve {first['approval_id']}` or `arcpoint "
            f"approvals reject {first['approval_id']} --reason ...`."
        )
    return "\n".join(lines)


def route(intent: Intent, done: Sequence[ToolCallRecord]) -> str:
    for call in reversed(done):
        if call.name == "submit_decision":
            return f"Submitted {call.input.get('backend')}: {call.input.get('rationale')}"
    return "No decision submitted."
