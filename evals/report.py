"""The eval report: `report.json` (everything), `report.md` (a headline table first) and PNG plots.

Plots (matplotlib, Agg backend: no display needed), per simulated scenario:
- `plots/<name>_backends.png`: one panel per backend, its measured p95 latency over time under the
  predictive router (and under the best baseline, dashed), chaos windows shaded, and on a second
  axis the predictive router's share of traffic to that backend;
- `plots/<name>_detections.png`: per backend, the ground-truth chaos windows and, on them, the
  anomalies the monitor raised, the drift alarms and the alerts sent.
Telemetry entries get the detection timeline only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evals.results import EntryResult, SuiteResult
from evals.scoring import FLAP_MOVE, FLAP_WITHIN_S, GRACE_S, traffic_shares
from tools.sim.workload import TIERS

DEFINITIONS = (
    f"SLO violation: a request that failed (timeout, 5xx, 429) or whose time to first token or "
    f"end-to-end latency was over its tier's limit (standard 1 s / 30 s, premium 0.5 s / 15 s, "
    f"batch 5 s / 60 s). p95 ms: the 95th percentile of the time to first token. "
    f"Flap: a backend's traffic share moves {FLAP_MOVE * 100:.0f} points "
    f"and reverses by as much within {FLAP_WITHIN_S:.0f} s. Escalation rate: requests handed to "
    f"the router agent (or, without the escalation hook, the ambiguous requests that would be). "
    f"Anomaly precision/recall: against the simulator's per-tick chaos labels per backend "
    f"(windows extended by {GRACE_S:.0f} s); for telemetry, against the labelled windows. Drift "
    f"delay: first drift alarm on the drifting backend after a gradual_drift onset; false alarms "
    f"fall outside every chaos window."
)


def _fmt(v: Any, digits: int = 2, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int):
        return f"{v}{unit}"
    return f"{v:.{digits}f}{unit}"


# --- JSON -----------------------------------------------------------------------------------


def report_json(suite: SuiteResult, command: str | None = None) -> dict[str, Any]:
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "llm": suite.config.llm,
        "passed": suite.passed,
        "seconds": round(suite.seconds, 1),
        "forecasters": suite.forecasters,
        "definitions": DEFINITIONS,
        "entries": [e.to_json() for e in suite.entries],
        "notes": suite.notes,
    }


# --- Markdown -----------------------------------------------------------------------------------


def headline_table(entries: Sequence[EntryResult]) -> str:
    """Scenario entries, one row each: the predictive router (the full loop) against the best
    reactive baseline, with the loop's detection figures."""
    head = (
        "| scenario | traffic | SLO viol. % | best baseline | vs best | TTFT p95 ms | cost m$/req "
        "| flaps | escalated % | anomaly P / R | drift delay | expectations | gate |\n"
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---|\n"
    )
    rows = []
    for e in entries:
        if e.kind not in ("scenario", "telemetry"):
            continue
        gate = "pass" if e.passed else ("**error**" if e.error else "**FAIL**")
        exp = f"{e.expectations_passed}/{len(e.expectations)}" if e.expectations else "-"
        if e.error is not None:
            rows.append(f"| {e.name} | - | - | - | - | - | - | - | - | - | - | - | {gate} |")
            continue
        m = e.metrics
        pr = f"{_fmt(m.get('anomaly_precision'))} / {_fmt(m.get('anomaly_recall'))}"
        if e.kind == "telemetry":
            rows.append(
                f"| {e.name} | telemetry (observe-only) | - | - | - | - | - | - | - | {pr} "
                f"| - | {exp} | {gate} |"
            )
            continue
        best = e.detail.get("best_baseline")
        best_txt = (
            f"{best} {_fmt(m.get('best_baseline_sla_violation_pct'))}" if best is not None else "-"
        )
        gain = m.get("sla_improvement_vs_best_baseline_pct")
        gain_txt = "-" if gain is None else f"{-gain:+.0f}%" + (" LOST" if gain < 0 else "")
        delay = m.get("drift_delay_s")
        drifts = e.detail.get("drift", {}).get("drifts", 0)
        drift_txt = (
            f"{delay:.0f} s" if delay is not None else ("missed" if drifts else "-")
        ) + f" ({m.get('drift_false_alarms', 0)} FA)"
        cost = m.get("mean_cost")
        rows.append(
            f"| {e.name} | {e.detail.get('traffic')} | {_fmt(m.get('sla_violation_pct'))} "
            f"| {best_txt} | {gain_txt} | {_fmt(m.get('p95_latency_ms'), 0)} "
            f"| {_fmt(None if cost is None else cost * 1000, 3)} | {m.get('flaps')} "
            f"| {_fmt(m.get('escalation_pct'), 1)} | {pr} | {drift_txt} | {exp} | {gate} |"
        )
    return head + "\n".join(rows) + "\n"


def benchmark_table(entries: Sequence[EntryResult]) -> str:
    rows = []
    for e in entries:
        if e.kind not in ("nab_benchmark", "drift_benchmark"):
            continue
        gate = "pass" if e.passed else ("**error**" if e.error else "**FAIL**")
        if e.error:
            figures = f"did not run: {e.error}"
        elif e.kind == "nab_benchmark":
            m = e.metrics
            figures = (
                f"NAB standard {_fmt(m.get('nab_standard'), 1)}, reward-low-FP "
                f"{_fmt(m.get('nab_reward_low_fp'), 1)}, reward-low-FN "
                f"{_fmt(m.get('nab_reward_low_fn'), 1)} ({m.get('files')} files)"
            )
        else:
            m = e.metrics
            figures = (
                f"Page-Hinkley x{_fmt(m.get('ph_speedup'), 0)} river's speed; stationary false "
                f"alarms {m.get('stationary_false_alarms')} (river "
                f"{m.get('river_stationary_false_alarms')}); drifts detected "
                f"{_fmt(m.get('detected_pct'), 0)}%, delay x{_fmt(m.get('delay_vs_river_best'))} "
                f"of river's best, false alarms x{_fmt(m.get('false_alarms_vs_river_best'))}"
            )
        exp = f"{e.expectations_passed}/{len(e.expectations)}" if e.expectations else "-"
        rows.append(f"| {e.name} | {e.kind} | {figures} | {exp} | {gate} |")
    if not rows:
        return ""
    return (
        "| benchmark | kind | figures | expectations | gate |\n|---|---|---|---:|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def _policy_table(e: EntryResult) -> str:
    pol = e.detail.get("policies") or {}
    if not pol:
        return ""
    best = min(v["sla_violation_pct"] for v in pol.values())
    lines = [
        "| policy | SLO viol. % | goodput/s | TTFT p95 ms | TTFT p99 ms | TPOT p99 ms "
        "| err % | cost m$/req | flaps | ambiguous % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in pol.items():
        mark = " *" if v["sla_violation_pct"] == best else ""
        lines.append(
            f"| {name} | {v['sla_violation_pct']:.2f}{mark} | {_fmt(v.get('goodput_rps'))} "
            f"| {_fmt(v.get('p95_latency_ms'), 0)} | {_fmt(v.get('ttft_p99_ms'), 0)} "
            f"| {_fmt(v.get('tpot_p99_ms'), 1)} | {_fmt(v.get('error_pct'))} "
            f"| {v['mean_cost'] * 1000:.4f} | {v['flaps']} | {v.get('ambiguous_pct', 0.0):.1f} |"
        )
    return "\n".join(lines) + "\n"


def _checks(title: str, checks: Sequence[Any]) -> str:
    if not checks:
        return ""
    out = [f"{title}:", ""]
    for c in checks:
        mark = {True: "pass", False: "**FAIL**", None: "n/a"}[c.passed]
        out.append(f"- {mark}: `{c.name}`: {c.detail}")
    return "\n".join(out) + "\n"


def _loop_lines(loop: dict[str, Any]) -> list[str]:
    st, first = loop.get("stats", {}), loop.get("first", {})

    def at(key: str) -> str:
        t = first.get(key)
        return "-" if t is None else f"{t / 60:.0f} min"

    lines = [
        f"Closed loop: {st.get('outcomes_accepted', 0)} outcomes joined, "
        f"{st.get('drift_reports', 0)} drift reports, {st.get('retrains', 0)} retrains, "
        f"{st.get('experiments', 0)} experiments, {st.get('promotions', 0)} promotions, "
        f"{st.get('rollbacks', 0)} rollbacks; active model `{loop.get('active_model')}`. "
        f"The routing model's drift first detected {at('routing_drift_detected')}; the "
        f"forecaster's (which no longer routes) {at('drift_detected')}, challenger trained "
        f"{at('challenger_trained')}, experiment verdict {at('experiment_verdict')}, "
        f"promotion {at('promotion')}.",
        "",
    ]
    for e in (loop.get("timeline") or [])[:20]:
        lines.append(f"- {e['t_s'] / 60:.1f} min `{e['kind']}`: {e['summary'][:200]}")
    return [*lines, ""]


def report_markdown(suite: SuiteResult, command: str | None = None) -> str:
    failures = [e for e in suite.entries if not e.passed]
    parts = [
        "# Arcpoint eval report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in "
        f"{suite.seconds:.0f} s; router agent model: `{suite.config.llm}`."
        + (f" Command: `{command}`." if command else ""),
        "",
        f"**Gate: {'PASS' if not failures else 'FAIL'}**"
        + (f" ({', '.join(e.name for e in failures)})" if failures else ""),
        "",
    ]
    if any(e.kind in ("scenario", "telemetry") for e in suite.entries):
        parts += ["## Headline", "", headline_table(suite.entries)]
        parts += [
            "`vs best`: the predictive router's SLA violations relative to the best reactive "
            "baseline's (negative is fewer). " + DEFINITIONS,
            "",
        ]
    bench = benchmark_table(suite.entries)
    if bench:
        parts += ["## Real-data benchmarks", "", bench]
    if suite.forecasters:
        parts += ["## Forecasters", ""]
        for v in suite.forecasters.values():
            s = v["spec"]
            parts.append(
                f"- `{v['version']}`: {s['n_estimators']} trees (max depth {s['max_depth']}) on "
                f"{s['history_hours']:g} h of simulated history; hold-out MAE {v['mae_ms']} ms "
                f"(persistence {v['persistence_mae_ms']} ms), interval coverage "
                f"{v['interval_coverage']:.0%}"
            )
        parts.append("")
    for e in suite.entries:
        parts += [f"## {e.name}", ""]
        if e.description:
            parts += [e.description, ""]
        if e.source:
            parts += [f"Source: `{e.source}`; {e.seconds:.0f} s.", ""]
        if e.error:
            parts += [f"**Did not run:** {e.error}", ""]
            continue
        parts.append(_policy_table(e))
        d = e.detail
        if e.kind == "scenario":
            esc = d.get("escalation", {})
            out = esc.get("outcomes", {})
            amb, rout = out.get("ambiguous", {}), out.get("routine", {})
            line = (
                f"Escalation: {esc.get('rate_pct', 0):.1f}% of requests; ambiguous requests "
                f"violated the SLA {_fmt(amb.get('violation_pct'))}% of the time, routine ones "
                f"{_fmt(rout.get('violation_pct'))}%."
            )
            agent = esc.get("agent")
            if agent:
                line += (
                    f" Router agent: {agent.get('agent_runs')} runs, {agent.get('accepted')} "
                    f"answers accepted, {agent.get('changed_backend')} changed the backend, "
                    f"{agent.get('fallback_total')} fell back ({agent.get('fallbacks')}); "
                    f"expected violation probability of the backend used "
                    f"{_fmt(agent.get('violation_prob_used'), 3)} against "
                    f"{_fmt(agent.get('violation_prob_policy_pick'), 3)} for the policy's pick."
                )
                if agent.get("advised"):
                    line += (
                        f" Advisory mode: {agent['advised']} answers recorded, not used; the "
                        f"agent's choices {_fmt(agent.get('violation_prob_agent_choice'), 3)} "
                        "against "
                        f"{_fmt(agent.get('violation_prob_policy_pick_same_requests'), 3)}."
                    )
            elif esc.get("note"):
                line += f" ({esc['note']}.)"
            a, dr, al = d.get("anomaly", {}), d.get("drift", {}), d.get("alerts", {})
            parts += [
                line,
                "",
                f"Monitor: {a.get('detections')} anomalies ({a.get('true_positives')} in their "
                f"backend's chaos windows, {a.get('during_any_chaos')} during any chaos; "
                f"{a.get('windows_detected')}/{a.get('windows')} windows found, mean "
                f"delay {_fmt(a.get('mean_delay_s'), 0)} s); alerts sent {al.get('sent')}, "
                f"suppressed {al.get('suppressed')}. Drift ({d.get('drift_detector')}): "
                f"{dr.get('alarms')} alarms, {dr.get('detected')}/{dr.get('drifts')} drifts "
                f"detected, {dr.get('false_alarms')} false alarms, "
                f"{dr.get('other_chaos_alarms')} during other chaos.",
                "",
            ]
            if d.get("loop"):
                parts += _loop_lines(d["loop"])
            if d.get("db"):
                parts += [f"Store of the predictive run: `{d['db']}`", ""]
        elif e.kind == "telemetry":
            for s in d.get("series", []):
                parts.append(
                    f"- `{s['backend']}` ({s['points']} points, {s['windows']} labelled windows): "
                    f"{s['anomalies']} anomalies, {s['change_points']} change points"
                    + (
                        f"; precision {_fmt(s['anomaly']['precision'])}, recall "
                        f"{_fmt(s['anomaly']['recall'])}"
                        if s.get("anomaly")
                        else ""
                    )
                )
            parts.append("")
        elif d.get("command"):
            parts += [f"Command: `{d['command']}`", ""]
        parts.append(_checks("Expected properties", e.expectations))
        parts.append(_checks("Thresholds", e.thresholds))
        for p in e.plots:
            parts += [f"![{Path(p).stem}]({p})", ""]
    return "\n".join(parts).rstrip() + "\n"


# --- plots ---------------------------------------------------------------------------------------


def _minutes(ts: np.ndarray | float, start: float) -> Any:
    return (np.asarray(ts, dtype=float) - start) / 60.0


def plot_backends(e: EntryResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = e.runs["predictive"]
    best = e.detail.get("best_baseline")
    base = e.runs.get(best) if best else None
    start = e.timeline.get("start_ts", float(pred.ts[0]) - 10.0)
    names = list(pred.counts)
    shares = traffic_shares(pred.counts)
    fig, axes = plt.subplots(
        len(names), 1, figsize=(11, 2.3 * len(names) + 0.6), sharex=True, squeeze=False
    )
    t = _minutes(pred.ts, start)
    for ax, n in zip(axes[:, 0], names, strict=True):
        for s, en in e.timeline.get("windows", {}).get(n, []):
            ax.axvspan(_minutes(s, start), _minutes(en, start), color="tab:red", alpha=0.15, lw=0)
        ax.plot(t, pred.p95_ms[n], color="tab:blue", lw=1.1, label="TTFT p95, predictive")
        if base is not None:
            ax.plot(
                _minutes(base.ts, start),
                base.p95_ms[n],
                color="tab:gray",
                lw=0.9,
                ls="--",
                label=f"TTFT p95, {best}",
            )
        ax.axhline(TIERS[0].ttft_slo_ms, color="black", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_ylabel(f"{n} TTFT p95 ms")
        ax2 = ax.twinx()
        ax2.plot(t, 100 * shares[n], color="tab:green", lw=0.9, alpha=0.8, label="share %")
        ax2.set_ylim(0, 100)
        ax2.set_ylabel("share %", color="tab:green")
        if n == names[0]:
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=7, ncols=3)
    axes[-1, 0].set_xlabel("minutes from scenario start (shaded: chaos on the backend)")
    fig.suptitle(f"{e.name}: latency and the predictive router's traffic share", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_detections(e: EntryResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = e.timeline
    start = tl.get("start_ts", 0.0)
    windows = tl.get("windows", {})
    seen = {b for key in ("anomalies", "drift_alarms") for _, b in tl.get(key, [])}
    names = sorted(set(windows) | seen)
    if e.runs:
        names = list(next(iter(e.runs.values())).counts)
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(names) + 1.6))
    unit = 60.0 if e.kind == "scenario" else 3600.0
    for y, n in enumerate(names):
        for s, en in windows.get(n, []):
            ax.barh(
                y,
                (en - s) / unit,
                left=(s - start) / unit,
                height=0.6,
                color="tab:red",
                alpha=0.25,
                lw=0,
            )
    marks = (
        ("anomalies", "o", "tab:orange", "anomaly", -0.15),
        ("drift_alarms", "x", "tab:purple", "drift alarm", 0.0),
    )
    for key, marker, color, label, dy in marks:
        pts = tl.get(key, [])
        xs = [(t - start) / unit for t, b in pts if b in names]
        ys = [names.index(b) + dy for _, b in pts if b in names]
        ax.scatter(xs, ys, marker=marker, color=color, s=22, label=f"{label} ({len(xs)})", zorder=3)
    alerts = tl.get("alerts", [])
    xs = [(a[0] - start) / unit for a in alerts if a[1] in names]
    ys = [names.index(a[1]) + 0.2 for a in alerts if a[1] in names]
    label = f"alert sent ({len(xs)})"
    ax.scatter(xs, ys, marker="^", color="tab:green", s=22, label=label, zorder=3)
    end = tl.get("end_ts")
    if end is not None:
        ax.set_xlim(0, (end - start) / unit)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlabel(f"{'minutes' if unit == 60 else 'hours'} from start (red: ground-truth windows)")
    ax.legend(loc="upper left", fontsize=7, ncols=3)
    ax.set_title(f"{e.name}: detection timeline", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(suite: SuiteResult, out_dir: Path, command: str | None = None) -> dict[str, Path]:
    """Plots first (the Markdown links them), then report.json and report.md."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for e in suite.entries:
        if e.error is not None:
            continue
        if e.kind == "scenario" and "predictive" in e.runs:
            p = plots / f"{e.name}_backends.png"
            plot_backends(e, p)
            e.plots.append(str(p.relative_to(out_dir)))
        if e.kind in ("scenario", "telemetry") and e.timeline:
            p = plots / f"{e.name}_detections.png"
            plot_detections(e, p)
            e.plots.append(str(p.relative_to(out_dir)))
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report_json(suite, command), indent=2) + "\n")
    md_path = out_dir / "report.md"
    md_path.write_text(report_markdown(suite, command))
    return {"json": json_path, "markdown": md_path, "plots": plots}
