"""Scores of one entry from its runs: a simulated scenario's policies against the chaos it
injected (ground truth), or an observe-only telemetry entry against its labelled windows.

The scorers themselves (flaps, detection precision and recall, drift delay) are pure functions in
`evals.scoring`; this module applies them to a replay and assembles the `EntryResult` the gate
and the report read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.monitors.routing_drift import SIGNAL_TEXT, RoutingDriftConfig
from agents.monitors.routing_drift import replay as replay_routing_drift
from evals.expectations import at_least, check_expectations
from evals.results import START_TS, EntryResult, PolicyRun
from evals.scenario_file import ScenarioFile
from evals.scoring import (
    GRACE_S,
    count_flaps,
    label_windows,
    merge_windows,
    percent_better,
    score_detections,
    score_drift,
)
from tools.sim.scenario import Scenario


def score_telemetry(entry: ScenarioFile, parts: Sequence[dict[str, Any]]) -> EntryResult:
    """Combine the series of an observe-only telemetry entry into its scores.

    Ground truth is the labelled windows as given (no grace: NAB's windows are already wide).
    The timeline puts every series on its own clock (hours from its first point)."""
    parts = sorted(parts, key=lambda p: p["k"])
    labelled = all(p["windows"] is not None for p in parts)
    windows = {p["backend"]: list(p["windows"]) for p in parts if p["windows"] is not None}
    detections = [d for p in parts for d in p["anomalies"]]
    changes = [c for p in parts for c in p["change_points"]]
    score = score_detections(detections, windows, grace_s=0.0) if labelled else None
    in_windows = sum(1 for t, b in changes if any(a <= t <= e for a, e in windows.get(b, [])))
    per_series = []
    rel: dict[str, Any] = {"windows": {}, "anomalies": [], "drift_alarms": [], "alerts": []}
    for p in parts:
        one = score_detections(p["anomalies"], {p["backend"]: p["windows"] or []}, grace_s=0.0)
        per_series.append(
            {
                "backend": p["backend"],
                "path": p["path"],
                "points": p["points"],
                "rejected_rows": p["rejected_rows"],
                "windows": len(p["windows"] or []),
                "anomalies": len(p["anomalies"]),
                "change_points": len(p["change_points"]),
                "anomaly": one.to_json() if p["windows"] is not None else None,
            }
        )
        t0 = p["start_ts"]
        rel["windows"][p["backend"]] = [(a - t0, e - t0) for a, e in p["windows"] or []]
        rel["anomalies"] += [(t - t0, b) for t, b in p["anomalies"]]
        rel["drift_alarms"] += [(t - t0, b) for t, b in p["change_points"]]
    rel["start_ts"] = 0.0
    rel["end_ts"] = max((p["end_ts"] - p["start_ts"] for p in parts), default=0.0)
    metrics: dict[str, float | int | None] = {
        "anomalies": len(detections),
        "anomaly_precision": score.precision if score else None,
        "anomaly_recall": score.recall if score else None,
        "anomaly_delay_s": score.mean_delay_s if score else None,
        "change_points": len(changes),
        "change_points_in_windows": in_windows if labelled else None,
    }
    ex = entry.expect
    expectations = []
    if ex.min_anomaly_recall is not None:
        expectations.append(
            at_least("min_anomaly_recall", metrics["anomaly_recall"], ex.min_anomaly_recall)
        )
    if ex.min_anomaly_precision is not None:
        expectations.append(
            at_least(
                "min_anomaly_precision", metrics["anomaly_precision"], ex.min_anomaly_precision
            )
        )
    return EntryResult(
        name=entry.name,
        kind="telemetry",
        source=str(entry.source) if entry.source else None,
        description=entry.description,
        metrics=metrics,
        detail={
            "traffic": "telemetry",
            "observe_only": True,
            "series": per_series,
            "anomaly": score.to_json() if score else None,
            "ground_truth": "labelled windows (no grace)" if labelled else "none",
        },
        expectations=expectations,
        seconds=sum(p["seconds"] for p in parts),
        timeline=rel,
    )


def ground_truth(
    scenario: Scenario, run: PolicyRun
) -> tuple[dict[str, list[tuple[float, float]]], list[tuple[float, float, list[str]]]]:
    """Per-backend chaos windows (labelled ticks plus fleet-wide events) and drift events."""
    names = list(run.counts)
    windows: dict[str, list[tuple[float, float]]] = {}
    for n in names:
        labelled = np.array([bool(k) for k in run.chaos.get(n, [])], dtype=bool)
        found = label_windows(run.ts[: labelled.size], labelled) if labelled.size else []
        windows[n] = found
    for ev in scenario.chaos:
        if ev.backend is None and ev.kind == "traffic_surge":
            w = (START_TS + ev.start_s, START_TS + ev.end_s)
            for n in names:
                windows[n] = merge_windows([*windows[n], w])
    drifts = [
        (
            START_TS + ev.start_s,
            START_TS + min(ev.end_s, scenario.duration_s),
            [ev.backend] if ev.backend else names,
        )
        for ev in scenario.chaos
        if ev.kind == "gradual_drift"
    ]
    return windows, drifts


def routing_drift_config(entry: ScenarioFile) -> RoutingDriftConfig:
    """The routing drift detector's settings: the loop's own when the entry runs the loop."""
    if entry.loop is not None:
        from agents.feedback_loop import LoopConfig

        return LoopConfig.model_validate(entry.loop.config).routing_drift
    return RoutingDriftConfig()


def score_scenario(
    entry: ScenarioFile, scenario: Scenario, runs: Mapping[str, PolicyRun], seconds: float = 0.0
) -> EntryResult:
    """Scores, expected properties and the detection timeline of one replayed scenario."""
    pred = runs["predictive"]
    policies: dict[str, dict[str, Any]] = {}
    for name, r in runs.items():
        flaps = count_flaps(r.counts, r.ts)
        policies[name] = {
            **r.summary,
            "flaps": sum(flaps.values()),
            "flaps_by_backend": flaps,
            "requests": r.requests,
            "seconds": round(r.seconds, 2),
        }
    windows, drifts = ground_truth(scenario, pred)
    anomaly = score_detections([(t, b) for t, b, _ in pred.anomalies], windows)
    every = merge_windows(w for ws in windows.values() for w in ws)
    during_chaos = sum(
        1 for t, _b, _s in pred.anomalies if any(s <= t <= e + GRACE_S for s, e in every)
    )
    fleet_precision = during_chaos / len(pred.anomalies) if pred.anomalies else None
    # Drift: the routing model's detector (agents.monitors.routing_drift), per backend. The
    # closed loop runs it live; a plain replay runs the same monitor over the recorded ticks.
    routing = routing_drift_config(entry)
    if pred.loop is not None:
        drift_alarms = [(float(t), str(b)) for t, b in pred.loop["routing_drift_alarms"]]
    else:
        drift_alarms = [
            (a.ts, a.backend)
            for a in replay_routing_drift(
                pred.ts, pred.residuals, list(pred.counts), routing, start_ts=START_TS
            )
        ]
    drift = score_drift(drift_alarms, drifts, windows)
    forecaster_drift = None
    if pred.loop is not None:
        # The loop's forecaster detector judges the 5-minute forecaster (which no longer
        # routes), not a backend: scored fleet-wide, reported beside the routing model's.
        fleet_windows = {"fleet": merge_windows(w for ws in windows.values() for w in ws)}
        loop_alarms = [(t, "fleet") for t in pred.loop["drift_detected_ts"]]
        forecaster_drift = score_drift(
            loop_alarms, [(a, b, ["fleet"]) for a, b, _ in drifts], fleet_windows
        )
    baselines = [p for p in runs if p != "predictive"]
    best = min(baselines, key=lambda p: runs[p].summary["sla_violation_pct"], default=None)
    esc = pred.escalation
    escalation_pct = esc["escalated_pct"] if esc is not None else pred.summary["ambiguous_pct"]
    sent = [a for a in pred.alerts if not a["suppressed"]]
    p = policies["predictive"]
    metrics: dict[str, float | int | None] = {
        "sla_violation_pct": p["sla_violation_pct"],
        "p95_latency_ms": p["p95_latency_ms"],
        "mean_cost": p["mean_cost"],
        "flaps": p["flaps"],
        "escalation_pct": escalation_pct,
        "anomalies": anomaly.detections,
        "anomaly_precision": anomaly.precision,
        "anomaly_recall": anomaly.recall,
        "anomaly_delay_s": anomaly.mean_delay_s,
        "anomaly_precision_fleet": fleet_precision,
        "drift_delay_s": drift.delay_s,
        "drift_false_alarms": drift.false_alarms,
        "drift_alarms": drift.alarms,
        "forecaster_drift_delay_s": forecaster_drift.delay_s if forecaster_drift else None,
        "alerts_sent": len(sent),
    }
    if best is not None:
        b = policies[best]
        metrics["best_baseline_sla_violation_pct"] = b["sla_violation_pct"]
        metrics["sla_improvement_vs_best_baseline_pct"] = percent_better(
            p["sla_violation_pct"], b["sla_violation_pct"]
        )
    if pred.loop is not None:
        st = pred.loop["stats"]
        for k in ("retrains", "experiments", "promotions", "rollbacks", "outcomes_accepted"):
            metrics[f"loop_{k}"] = st.get(k, 0)
    expectations = check_expectations(entry, runs, policies, metrics, drift.delay_s)
    detail = {
        "traffic": entry.traffic.kind,
        "duration_s": scenario.duration_s,
        "seed": entry.seed,
        "chaos": [
            {
                "kind": ev.kind,
                "backend": ev.backend,
                "start_s": ev.start_s,
                "end_s": ev.end_s,
                "magnitude": ev.magnitude,
            }
            for ev in scenario.chaos
        ],
        "policies": policies,
        "best_baseline": best,
        "anomaly": {**anomaly.to_json(), "during_any_chaos": during_chaos},
        "drift": drift.to_json(),
        "drift_forecaster": forecaster_drift.to_json() if forecaster_drift else None,
        "drift_detector": f"calibrated Page-Hinkley (up, warm-up {routing.warmup_ticks} ticks "
        f"after {routing.burn_in_s:g} s, h={routing.threshold_sigmas:g} sigma, "
        f"k={routing.delta_sigmas:g} sigma) per backend on the routing model's per-tick mean "
        + SIGNAL_TEXT[routing.signal]
        + (" (run live by the closed loop)" if pred.loop is not None else ""),
        "alerts": {
            "sent": len(sent),
            "suppressed": len(pred.alerts) - len(sent),
            "by_kind": _count(a["kind"] for a in sent),
        },
        "escalation": {
            "wired": esc is not None,
            "rate_pct": round(escalation_pct, 3),
            "agent": esc,
            "outcomes": pred.decisions,
            "note": None
            if esc is not None
            else "the replay has no escalation hook yet: the rate is the share of ambiguous "
            "requests (those that would be escalated), and their outcomes are the policy's",
        },
        "loop": pred.loop,
        "db": pred.db,
        "ground_truth_windows": {n: len(w) for n, w in windows.items()},
    }
    return EntryResult(
        name=entry.name,
        kind="scenario",
        source=str(entry.source) if entry.source else None,
        description=entry.description,
        metrics=metrics,
        detail=detail,
        expectations=expectations,
        seconds=seconds,
        runs=dict(runs),
        timeline={
            "windows": windows,
            "anomalies": [(t, b) for t, b, _ in pred.anomalies],
            "drift_alarms": drift_alarms,
            "alerts": [(a["ts"], a["subject"], a["kind"]) for a in sent],
            "start_ts": START_TS,
            "end_ts": START_TS + scenario.duration_s,
        },
    )


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out
