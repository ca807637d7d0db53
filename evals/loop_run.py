"""Run the closed loop end to end on a drift scenario and collect its timeline.

The scenario (`loop_scenario`): traffic held flat (no diurnal swing, the usual short bursts), so
that the only change is the drift: from `drift_start_s` on, the primary backend's service time
grows (x2.5 over an hour by default, at 16 rps: a quarter of the fleet's capacity) and then
stays there, so its load-latency curve bends earlier for good. The ground truth (when the drift
began) comes from the scenario, never from the loop.

`run_loop` trains the first champion on simulated history that ends where the scenario starts,
stores it, and replays the scenario request by request through `agents.feedback_loop`: the
loop routes, records sampled decisions and their late outcomes, detects the drift, retrains,
runs the experiment and promotes (or not), all in the SQLite store. The result holds the
timeline and the figures an operator asks for: detection delay, false alarms, the experiment's
verdict, and MAE before and after the promotion.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.feedback_loop import FeedbackLoop, LoopConfig, TimelineEntry, clock
from context_api.alerting import AlertService
from context_api.model_store import artifact_dir_for
from context_api.runs import Terminated
from context_api.store import Store
from evals.loop_replay import LoopAdapter, make_loop
from evals.replay import run_policy
from tools.forecaster import Forecaster, train
from tools.routing import BackendInfo
from tools.sim.chaos import ChaosEvent
from tools.sim.history import simulate_history
from tools.sim.run import SimConfig, SimTick
from tools.sim.scenario import Scenario, SyntheticTraffic, build
from tools.sim.spec import backend_infos
from tools.telemetry import TICK_SECONDS

START_TS = 1_700_000_000.0
Progress = Callable[[str], None]


def loop_scenario(
    hours: float = 4.0,
    *,
    seed: int = 0,
    drift_start_s: float = 3600.0,
    ramp_s: float = 3600.0,
    drift_factor: float = 2.5,
    backend: str | None = "b0",
    mean_rps: float = 10.0,
) -> Scenario:
    """Flat traffic; from `drift_start_s` the backend's iteration time ramps up to
    x`drift_factor` over `ramp_s`, then levels off until the end.

    `gradual_drift` is a linear ramp that ends with its window, so the plateau is composed: the
    rising ramp continues at the same slope to the end, and a second, opposite ramp (factor
    below 1) starts when the first should stop. Their product is a parabola whose top is set
    at the middle of the plateau: over a 2 h plateau the factor goes x1.5 -> x1.6 -> x1.5 for
    `drift_factor` 1.5, and x2.5 -> x2.9 -> x2.5 for the default 2.5 (a level, not a ramp).
    """
    duration = hours * 3600.0
    plateau_start = drift_start_s + ramp_s
    if not plateau_start < duration:
        raise ValueError("the drift must reach its plateau before the scenario ends")
    if not drift_factor > 1.0:
        raise ValueError("drift_factor must be > 1 (a slower service)")
    a = (drift_factor - 1.0) / ramp_s  # slope of the rising ramp, per second
    rise_s = duration - drift_start_s
    middle = (plateau_start + duration) / 2.0 - drift_start_s
    b = a / (1.0 + a * (2.0 * middle - ramp_s))  # d/dx (1 + a x)(1 - b (x - ramp)) = 0 there
    fall_s = duration - plateau_start
    return Scenario(
        name="loop_gradual_drift",
        seed=105 + seed,
        duration_s=duration,
        traffic=SyntheticTraffic(mean_rps=mean_rps, diurnal_amplitude=0.0),
        chaos=(
            ChaosEvent(
                kind="gradual_drift",
                start_s=drift_start_s,
                duration_s=rise_s,
                backend=backend,
                magnitude=1.0 + a * rise_s,
            ),
            ChaosEvent(
                kind="gradual_drift",
                start_s=plateau_start,
                duration_s=fall_s,
                backend=backend,
                magnitude=1.0 - b * fall_s,
            ),
        ),
    )


def drift_factor_at(scenario: Scenario, t_s: float) -> float:
    """The scenario's iteration-time factor at `t_s` seconds (as the simulator applies it)."""
    f = 1.0
    for ev in scenario.chaos:
        if ev.kind == "gradual_drift" and ev.active(t_s):
            progress = min(1.0, max(0.0, (t_s + TICK_SECONDS - ev.start_s) / ev.duration_s))
            f *= 1.0 + (ev.magnitude - 1.0) * progress
    return f


@dataclass(frozen=True)
class LoopRunConfig:
    db: str = "arcpoint.db"
    hours: float = 4.0
    seed: int = 0
    history_hours: float = 6.0
    drift_start_s: float = 3600.0
    ramp_s: float = 3600.0
    drift_factor: float = 2.5
    drift_backend: str | None = "b0"
    mean_rps: float = 10.0
    champion_trees: int = 60
    loop: LoopConfig = field(default_factory=LoopConfig)
    artifact_dir: str | None = None
    """Where model artifacts go; default: `<db stem>.models/` beside the database."""


@dataclass
class LoopRunResult:
    timeline: dict[str, Any]
    entries: list[TimelineEntry]
    run_id: str
    loop: FeedbackLoop
    """The loop itself (its store is closed): models, errors, statistics."""


def train_champion(
    hours: float, *, seed: int, trees: int, end_ts: float = START_TS
) -> tuple[Forecaster, list]:
    """The first champion: trained on simulated history that ends where the scenario begins."""
    history = simulate_history(hours * 3600.0, seed=seed + 1000, start_ts=end_ts - hours * 3600.0)
    model, _ = train(history, n_estimators=trees, seed=seed, n_jobs=1)
    return model, history


def run_loop(config: LoopRunConfig, progress: Progress = lambda _m: None) -> LoopRunResult:
    wall = time.perf_counter()
    scenario = loop_scenario(
        config.hours,
        seed=config.seed,
        drift_start_s=config.drift_start_s,
        ramp_s=config.ramp_s,
        drift_factor=config.drift_factor,
        backend=config.drift_backend,
        mean_rps=config.mean_rps,
    )
    progress(
        f"training the first champion ({config.champion_trees} trees) on "
        f"{config.history_hours:g} h of simulated history"
    )
    champion, history = train_champion(
        config.history_hours, seed=config.seed, trees=config.champion_trees
    )
    seconds = {"champion_training": time.perf_counter() - wall}
    artifacts = config.artifact_dir or str(artifact_dir_for(config.db))
    store = Store(config.db)
    try:
        run = store.start_run(
            "loop",
            params={
                "hours": config.hours,
                "seed": config.seed,
                "history_hours": config.history_hours,
                "drift_start_s": config.drift_start_s,
                "ramp_s": config.ramp_s,
                "drift_factor": config.drift_factor,
                "drift_backend": config.drift_backend,
                "mean_rps": config.mean_rps,
                "loop": config.loop.model_dump(mode="json"),
            },
            started_at=START_TS,
        )
        # A rerun replaces the previous loop's rows, so answers never count two runs.
        for old in store.replace_runs("loop", keep=run.run_id):
            progress(f"replaced the previous loop run {old.run_id} ({old.status})")
        store.insert_telemetry(history, source="loop:history", run_id=run.run_id, simulated=True)
        alerts = AlertService(store, clock=lambda: loop.now, restore=False)
        loop = make_loop(
            build(scenario),
            champion,
            store,
            start_ts=START_TS,
            loop_config=config.loop,
            run_id=run.run_id,
            alerts=alerts,
            artifact_dir=artifacts,
            progress=progress,
        )
        drift = scenario.chaos[0]
        store.record_event(
            "chaos",
            subject=drift.backend,
            detail={
                "chaos": drift.kind,
                "scenario": scenario.name,
                "start_ts": START_TS + drift.start_s,
                "end_ts": START_TS + drift.end_s,
                "magnitude": drift.magnitude,
            },
            ts=START_TS + drift.start_s,
            run_id=run.run_id,
        )
        t0 = time.perf_counter()
        replay(scenario, loop, progress)
        loop.finish()
        seconds["replay"] = time.perf_counter() - t0
        seconds["total"] = time.perf_counter() - wall
        timeline = build_timeline(loop, scenario, config, seconds)
        store.finish_run(run.run_id, summary=_summary(timeline), finished_at=loop.now)
        alerts.close()
    except BaseException as exc:  # Ctrl-C, SIGTERM or an error: say so in the run's row
        if "run" in locals():
            interrupted = isinstance(exc, KeyboardInterrupt | Terminated)
            with contextlib.suppress(Exception):
                store.finish_run(
                    run.run_id,
                    summary={"error": f"{type(exc).__name__}: {exc}"[:500]},
                    status="interrupted" if interrupted else "failed",
                )
        raise
    finally:
        store.close()
    return LoopRunResult(
        timeline=timeline, entries=list(loop.timeline), run_id=run.run_id, loop=loop
    )


def backends_of(scenario: Scenario) -> tuple[BackendInfo, ...]:
    """What the loop's routers are configured with for the scenario's fleet."""
    return backend_infos(scenario.backends())


def replay(
    scenario: Scenario,
    loop: FeedbackLoop,
    progress: Progress = lambda _m: None,
    *,
    start_ts: float = START_TS,
) -> None:
    """Request by request, as `evals.replay` does, but through the loop (which may switch the
    router's forecaster or split traffic between two routers mid-run)."""
    built = build(scenario)
    adapter = LoopAdapter(loop, [s.name for s in built.fleet])
    hour_ticks = int(3600 / TICK_SECONDS)

    def tick(t: SimTick) -> None:
        if (t.index + 1) % hour_ticks == 0:
            progress(f"simulated {(t.index + 1) // hour_ticks} h")

    run_policy(
        built, "predictive", policy=adapter, sim_config=SimConfig(start_ts=start_ts), on_tick=tick
    )


# ------------------------------------------------------------------------------------ timeline
def _mae(values: list[float] | np.ndarray) -> float | None:
    a = np.asarray(values, dtype=float)
    return round(float(a.mean()), 2) if a.size else None


def _experiment_view(e: TimelineEntry, rel: Callable[[float | None], float | None]) -> dict:
    v = e.detail.get("verdict") or {}
    look = e.detail.get("look_detail") or {}
    return {
        "id": e.detail["experiment_id"],
        "purpose": e.detail["purpose"],
        "mode": e.detail["mode"],
        "champion": e.detail["champion"],
        "challenger": e.detail["challenger"],
        "started_s": rel(e.detail.get("started_at")),
        "ended_s": rel(e.ts),
        "status": e.detail["status"],
        "winner": e.detail.get("winner"),
        "state": v.get("state"),
        "recommendation": v.get("recommendation"),
        "test": v.get("test"),
        "p_value": v.get("p_value"),
        "alpha": v.get("alpha"),
        "alpha_spent_at_look": v.get("alpha_spent_at_look"),
        "alpha_spent_total": v.get("alpha_spent_total"),
        "spending": v.get("spending"),
        "ci_level": v.get("ci_level"),
        "ci_low_ms": v.get("ci_low_ms"),
        "ci_high_ms": v.get("ci_high_ms"),
        "ci_method": v.get("ci_method"),
        "mae_champion_ms": v.get("mae_champion_ms"),
        "mae_challenger_ms": v.get("mae_challenger_ms"),
        "mae_difference_ms": v.get("mae_difference_ms"),
        "n_champion": v.get("n_champion"),
        "n_challenger": v.get("n_challenger"),
        "min_samples_per_arm": v.get("min_samples_per_arm"),
        "looks": e.detail.get("looks"),
        "information_fraction": v.get("information_fraction"),
        "srm": v.get("srm"),
        "unit": look.get("unit"),
        "requests": look.get("requests"),
        "request_mae_ms": look.get("request_mae_ms"),
        "logged_srm": look.get("logged_srm"),
        "routed_requests": look.get("routed_requests"),
        "routed_srm": look.get("routed_srm"),
        "lag1_autocorrelation": look.get("lag1_autocorrelation"),
        "effective_samples": look.get("effective_samples"),
        "summary": v.get("summary"),
    }


def build_timeline(
    loop: FeedbackLoop, scenario: Scenario, config: LoopRunConfig, seconds: dict[str, float]
) -> dict[str, Any]:
    """The run as one JSON-able dict: ground truth, each milestone, the figures.

    Every challenger and experiment is listed; the headline ones are those that led to the
    first promotion (or the last challenge when nothing was promoted)."""
    start = loop.start_ts
    drift = scenario.chaos[0]
    drift_ts = start + drift.start_s
    entries = loop.timeline

    def rel(ts: float | None) -> float | None:
        return None if ts is None else round(ts - start, 1)

    def milestone(e: TimelineEntry | None) -> dict[str, Any] | None:
        return None if e is None else {"ts": e.ts, "t_s": rel(e.ts), "summary": e.summary}

    detected = next((e for e in entries if e.kind == "drift_detected"), None)
    promotion = next((e for e in entries if e.kind == "promotion"), None)
    challengers = [
        {
            **milestone(e),
            "version": e.detail["version"],
            "parent": e.detail["parent"],
            "window_s": [rel(e.detail["window"]["start_ts"]), rel(e.detail["window"]["end_ts"])],
            "starts_at_drift": e.detail["window"]["starts_at_drift"],
            "holdout": e.detail["holdout"],
        }
        for e in entries
        if e.kind == "challenger_trained"
    ]
    experiments = [_experiment_view(e, rel) for e in entries if e.kind == "experiment_verdict"]
    challenges = [x for x in experiments if x["purpose"] == "challenge"]
    promoted = promotion.detail["version"] if promotion else None
    decisive = next((x for x in challenges if x["winner"] == promoted and promoted), None)
    decisive = decisive or (challenges[-1] if challenges else None)
    headline = next(
        (c for c in challengers if decisive and c["version"] == decisive["challenger"]),
        challengers[-1] if challengers else None,
    )
    watch = next(
        (x for x in experiments if x["purpose"] == "watch" and x["champion"] == promoted), None
    )
    false_alarms = [a for a in loop.ph_alarms if a < drift_ts]

    champion_errors = loop.model_errors[0]
    ts0 = np.asarray(champion_errors.ts)
    e0 = np.asarray(champion_errors.abs_err)
    before_drift = e0[ts0 < drift_ts]
    drifted = e0[(ts0 >= drift_ts) & (ts0 < (promotion.ts if promotion else loop.now))]
    after = None
    if watch is not None:
        new, old = watch["mae_champion_ms"], watch["mae_challenger_ms"]
        after = {
            "promoted_mae_ms": new,
            "previous_champion_mae_ms": old,
            "n": watch["n_champion"],
            "watch_state": watch["state"],
            "watch_status": watch["status"],
            "improvement": round(1.0 - new / old, 4) if new is not None and old else None,
        }
    online = [o for o in loop.online if o["model_version"] == champion_errors.version]
    online_drifted = [o for o in online if o["ts"] > drift_ts]
    return {
        "scenario": {
            "name": scenario.name,
            "hours": config.hours,
            "seed": config.seed,
            "mean_rps": config.mean_rps,
            "drift": {
                "kind": drift.kind,
                "backend": drift.backend,
                "start_ts": drift_ts,
                "start_s": drift.start_s,
                "ramp_s": config.ramp_s,
                "plateau_factor": config.drift_factor,
                "service_time_factor": {
                    clock(h * 1800.0): round(drift_factor_at(scenario, h * 1800.0), 3)
                    for h in range(int(config.hours * 2))
                },
            },
        },
        "sampling": {
            "samples_per_tick": config.loop.samples_per_tick,
            "note": (
                "outcomes are recorded for a seeded sample of requests per tick (independent "
                "of the experiment's arm assignment); the outcome of a decision is its backend's "
                "measured p95 one horizon (300 s) later, so it arrives 300 s late"
            ),
        },
        "champion": {
            "version": champion_errors.version,
            "trees": config.champion_trees,
            "history_hours": config.history_hours,
        },
        "run_id": loop.run_id,
        "start_ts": start,
        "drift_began_s": drift.start_s,
        "drift_detected": milestone(detected),
        "detection_delay_s": rel(detected.ts - drift.start_s) if detected else None,
        "change_point_estimate_s": (
            rel(detected.detail.get("change_point_ts")) if detected else None
        ),
        "detection_severity": detected.detail.get("severity") if detected else None,
        "false_alarms_before_drift": len(false_alarms),
        "page_hinkley_alarms_s": [rel(a) for a in loop.ph_alarms],
        "challenger_trained": headline,
        "experiment": decisive,
        "promotion": (
            {**milestone(promotion), "version": promotion.detail["version"]} if promotion else None
        ),
        "proposals": [
            {
                **milestone(e),
                "approval_id": e.detail.get("approval_id"),
                "action": e.detail.get("action"),
                "version": e.detail.get("version"),
            }
            for e in entries
            if e.kind == "change_proposed"
        ],
        "mae_ms": {
            "champion_before_drift": _mae(before_drift),
            "champion_drifted_until_promotion": _mae(drifted),
            "n_before_drift": int(before_drift.size),
            "n_drifted": int(drifted.size),
            "after_promotion": after,
        },
        "online_learner": {
            "kind": "residual correction of the champion forest (SGD, huber, micro-batches)",
            "drifted_forest_mae_ms": _mae([o["forest_mae_ms"] for o in online_drifted]),
            "drifted_corrected_mae_ms": _mae([o["corrected_mae_ms"] for o in online_drifted]),
            "windows": online,
        },
        "challengers": challengers,
        "experiments": experiments,
        "error_analysis": loop.analyses,
        "error_analysis_window_s": config.loop.analysis_every_s,
        "active_version_at_end": loop.champion.version_id,
        "stats": loop.stats,
        "events": [{"t_s": rel(e.ts), "kind": e.kind, "summary": e.summary} for e in loop.timeline],
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def _summary(t: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "drift_began_s",
        "detection_delay_s",
        "false_alarms_before_drift",
        "active_version_at_end",
        "mae_ms",
        "stats",
    )
    return {k: t[k] for k in keys}


def format_timeline(t: dict[str, Any]) -> str:
    """The timeline as text for a terminal."""
    d = t["scenario"]["drift"]
    lines = [
        f"Closed loop on {t['scenario']['name']}: {t['scenario']['hours']:g} h, seed "
        f"{t['scenario']['seed']}, {t['scenario']['mean_rps']:g} rps flat; gradual drift on "
        f"{d['backend'] or 'every backend'} from {clock(d['start_s'])}: its service time grows to "
        f"x{d['plateau_factor']:g} over {clock(d['ramp_s'])}, then levels off",
        f"Outcomes: {t['sampling']['samples_per_tick']} sampled requests per tick; label = the "
        "backend's measured p95 300 s after the decision (arrives 300 s late).",
        "",
        f"{'time':>8}  event",
    ]
    marks = sorted(
        [(e["t_s"], e["kind"], e["summary"]) for e in t["events"]]
        + [(t["drift_began_s"], "truth", "drift begins (ground truth from the scenario)")],
        key=lambda x: x[0],
    )
    for t_s, _kind, summary in marks:
        lines.append(f"{clock(t_s):>8}  {summary}")
    lines.append("")
    lines += _figures(t)
    return "\n".join(lines)


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} ms"


def _figures(t: dict[str, Any]) -> list[str]:
    out = ["Figures"]
    delay = t["detection_delay_s"]
    cp = t["change_point_estimate_s"]
    out.append(
        f"  drift began      {clock(t['drift_began_s'])} (truth); detected "
        + (
            f"{clock(t['drift_detected']['t_s'])}, delay {clock(delay)} "
            f"(includes the 300 s label lag)"
            if delay is not None
            else "never"
        )
        + (f"; change point estimated at {clock(cp)}" if cp is not None else "")
        + f"; false alarms before the drift: {t['false_alarms_before_drift']}"
    )
    c = t["challenger_trained"]
    if c:
        w = c["window_s"]
        out.append(
            f"  challenger       {c['version']} (parent {c['parent']}) trained at "
            f"{clock(c['t_s'])} on {clock(w[0])}-{clock(w[1])}; hold-out MAE "
            f"{_ms(c['holdout']['mae_ms'])}"
        )
    e = t["experiment"]
    if e:
        ci = (
            f"{e['ci_level']:.0%} CI [{e['ci_low_ms']:+.1f}, {e['ci_high_ms']:+.1f}] ms"
            if e["ci_low_ms"] is not None
            else "no CI"
        )
        p = f"p = {e['p_value']:.2g}" if e["p_value"] is not None else "no test"
        req = e.get("requests") or {}
        out.append(
            f"  experiment       {e['mode']} mode, {e['state']} after {e['looks']} looks "
            f"({e['spending']} alpha spending, alpha {e['alpha']:g}): {e['test']} {p} "
            f"(allowed {e['alpha_spent_at_look']:.2g} at the last look); MAE challenger - "
            f"champion {ci}"
        )
        out.append(
            f"                   n = {e['n_champion']} champion / {e['n_challenger']} challenger"
            f" {e['unit']}s (min {e['min_samples_per_arm']}; {req.get('champion')} / "
            f"{req.get('challenger')} requests); lag-1 autocorrelation of the units "
            f"{e['lag1_autocorrelation']}, effective n ~{e['effective_samples']}"
        )
        for what in ("routed_srm", "logged_srm"):
            if e.get(what):
                label = "routed" if what == "routed_srm" else "sampled"
                out.append(f"                   {label} split: {e[what]['summary']}")
    others = [c["version"] for c in t["challengers"] if c is not t["challenger_trained"]]
    if others:
        out.append(f"                   other challengers: {', '.join(others)} (see the events)")
    for prop in t.get("proposals") or []:
        out.append(
            f"  proposed         {prop['action']} {prop['version']} at {clock(prop['t_s'])} "
            f"(approval {prop['approval_id']})"
        )
    p = t["promotion"]
    waiting = [x for x in t.get("proposals") or [] if not p]
    out.append(
        f"  promotion        {p['version']} at {clock(p['t_s'])}"
        if p
        else "  promotion        none"
        + (
            f": approval {waiting[-1]['approval_id']} waits for an operator (`arcpoint approvals"
            f" approve {waiting[-1]['approval_id']}`; `--auto-approve` approves in the replay)"
            if waiting
            else ""
        )
    )
    m = t["mae_ms"]
    out.append(
        f"  MAE              champion before the drift {_ms(m['champion_before_drift'])} "
        f"(n={m['n_before_drift']}); champion on the drifted regime until promotion "
        f"{_ms(m['champion_drifted_until_promotion'])} (n={m['n_drifted']})"
    )
    a = m["after_promotion"]
    if a:
        imp = ""
        if a["improvement"] is not None:
            imp = f", {abs(a['improvement']):.1%} {'better' if a['improvement'] >= 0 else 'worse'}"
        out.append(
            f"                   after promotion, same requests: promoted "
            f"{_ms(a['promoted_mae_ms'])} vs previous champion "
            f"{_ms(a['previous_champion_mae_ms'])} (n={a['n']}{imp}; watch: {a['watch_state']})"
        )
    o = t["online_learner"]
    if o["drifted_forest_mae_ms"] is not None:
        out.append(
            f"  online learner   residual correction on the drifted regime (prequential): "
            f"{_ms(o['drifted_corrected_mae_ms'])} vs forest {_ms(o['drifted_forest_mae_ms'])}"
        )
    if t["error_analysis"]:
        minutes = t["error_analysis_window_s"] / 60
        out.append(
            f"  error analysis   {minutes:g}-min windows (by outcome time): model, n, MAE, bias"
        )
        for w in t["error_analysis"]:
            cells = "; ".join(
                f"{v} n={m['n']} MAE {_ms(m['mae_ms'])} bias {m['bias_ms']:+.0f} ms"
                for v, m in w["models"].items()
            )
            flagged = len(w["biased_segments"])
            out.append(
                f"    {clock(w['window_start_ts'] - t['start_ts']):>8}  {cells}"
                + (f"; {flagged} biased segment(s)" if flagged else "")
            )
    s = t["stats"]
    out.append(
        f"  store            {s['decisions_sampled']} sampled decisions, "
        f"{s['outcomes_accepted']} outcomes joined, {s.get('outcomes_expired', 0)} expired, "
        f"{s['drift_reports']} drift reports, {s['alerts']} alerts; "
        f"{t['seconds'].get('total', 0):.0f} s wall"
    )
    return out
