"""An entry's expected properties, each checked into a `PropertyResult` that says why it passed
or failed: traffic leaving a failing backend in time, drift detected within a delay, limits on
the scores, the predictive router beating its baselines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from evals.results import START_TS, PolicyRun, PropertyResult
from evals.scenario_file import BASELINE_NAMES, ScenarioFile
from evals.scoring import leave_delay_s, percent_better, traffic_shares


def at_most(name: str, value: Any, limit: float, unit: str = "") -> PropertyResult:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return PropertyResult(name, False, f"no value to compare with {limit:g}{unit}", None, limit)
    ok = value <= limit
    return PropertyResult(
        name, ok, f"{value:.4g}{unit} {'<=' if ok else '>'} {limit:g}{unit}", float(value), limit
    )


def at_least(name: str, value: Any, limit: float, unit: str = "") -> PropertyResult:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return PropertyResult(name, False, f"no value to compare with {limit:g}{unit}", None, limit)
    ok = value >= limit
    return PropertyResult(
        name, ok, f"{value:.4g}{unit} {'>=' if ok else '<'} {limit:g}{unit}", float(value), limit
    )


def check_expectations(
    entry: ScenarioFile,
    runs: Mapping[str, PolicyRun],
    policies: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Any],
    drift_delay: float | None,
) -> list[PropertyResult]:
    ex = entry.expect
    out: list[PropertyResult] = []
    pred = runs["predictive"]
    shares = traffic_shares(pred.counts)
    for leave in ex.traffic_leaves:
        if isinstance(leave.after, str):
            idx = leave.event
            if idx is None:
                idx = next(
                    (k for k, ev in enumerate(entry.chaos) if ev.backend == leave.backend), 0
                )
            ev = entry.chaos[idx]
            t0 = START_TS + (ev.start_s if leave.after == "chaos_start" else ev.end_s)
            anchor = f"{ev.kind} {leave.after.split('_')[1]}"
        else:
            t0 = START_TS + leave.after
            anchor = f"t={leave.after:g} s"
        delay = leave_delay_s(shares[leave.backend], pred.ts, t0, leave.max_share)
        name = f"traffic_leaves {leave.backend}"
        if delay is None:
            out.append(
                PropertyResult(
                    name,
                    False,
                    f"{leave.backend}'s share never fell to {leave.max_share:.0%} after {anchor}",
                    None,
                    leave.within_s,
                )
            )
        else:
            ok = delay <= leave.within_s
            out.append(
                PropertyResult(
                    name,
                    ok,
                    f"share <= {leave.max_share:.0%} {delay:.0f} s after {anchor} "
                    f"({'within' if ok else 'later than'} {leave.within_s:g} s)",
                    delay,
                    leave.within_s,
                )
            )
    if ex.drift_detected_within_s is not None:
        lim = ex.drift_detected_within_s
        if drift_delay is None:
            out.append(PropertyResult("drift_detected", False, "drift not detected", None, lim))
        else:
            ok = drift_delay <= lim
            out.append(
                PropertyResult(
                    "drift_detected",
                    ok,
                    f"detected {drift_delay:.0f} s after onset ({'<=' if ok else '>'} {lim:g} s)",
                    drift_delay,
                    lim,
                )
            )
    if ex.max_drift_false_alarms is not None:
        out.append(
            at_most(
                "max_drift_false_alarms", metrics["drift_false_alarms"], ex.max_drift_false_alarms
            )
        )
    if ex.max_escalation_pct is not None:
        out.append(
            at_most("max_escalation_pct", metrics["escalation_pct"], ex.max_escalation_pct, "%")
        )
    if ex.max_sla_violation_pct is not None:
        out.append(
            at_most(
                "max_sla_violation_pct", metrics["sla_violation_pct"], ex.max_sla_violation_pct, "%"
            )
        )
    if ex.max_p95_latency_ms is not None:
        out.append(
            at_most("max_p95_latency_ms", metrics["p95_latency_ms"], ex.max_p95_latency_ms, " ms")
        )
    if ex.max_flaps is not None:
        out.append(at_most("max_flaps", metrics["flaps"], ex.max_flaps))
    if ex.min_anomaly_recall is not None:
        out.append(at_least("min_anomaly_recall", metrics["anomaly_recall"], ex.min_anomaly_recall))
    if ex.min_anomaly_precision is not None:
        out.append(
            at_least(
                "min_anomaly_precision", metrics["anomaly_precision"], ex.min_anomaly_precision
            )
        )
    if ex.loop_promotes is not None:
        promotions = int(metrics.get("loop_promotions") or 0)
        ok = (promotions > 0) == ex.loop_promotes
        want = "a promotion" if ex.loop_promotes else "no promotion"
        out.append(
            PropertyResult(
                "loop_promotes",
                ok,
                f"expected {want}; the loop promoted {promotions} challenger(s)",
                promotions,
                None,
            )
        )
    for beat in ex.beats_baselines:
        names = beat.baselines or [p for p in runs if p in BASELINE_NAMES]
        ours = policies["predictive"][beat.metric]
        worst_gap = None
        failed = []
        for b in names:
            theirs = policies[b][beat.metric]
            gain = percent_better(ours, theirs)
            if gain is None:
                ok = ours <= theirs and beat.by_pct == 0
            else:
                ok = gain >= beat.by_pct - 1e-9
            if not ok:
                failed.append(f"{b} ({theirs:.4g})")
            if gain is not None and (worst_gap is None or gain < worst_gap):
                worst_gap = gain
        req = f"{beat.by_pct:g}% lower" if beat.by_pct else "no higher"
        out.append(
            PropertyResult(
                f"beats_baselines {beat.metric}",
                not failed,
                f"predictive {ours:.4g} vs {', '.join(names)}: needs {req}"
                + (f"; not met against {', '.join(failed)}" if failed else "")
                + (f"; smallest margin {worst_gap:.1f}%" if worst_gap is not None else ""),
                worst_gap,
                beat.by_pct,
            )
        )
    return out
