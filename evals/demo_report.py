"""The demo's tables as text: scenario x policy with seed intervals, and the verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from evals.demo import DemoResult
from evals.replay import RunResult
from tools.sim.metrics import mean_interval

_COLUMNS = (
    ("sla_violation_pct", "SLO viol %", 15),
    ("goodput_rps", "goodput/s", 10),
    ("ttft_p50_ms", "TTFT p50", 9),
    ("ttft_p99_ms", "TTFT p99", 9),
    ("tpot_p99_ms", "TPOT p99", 9),
    ("e2e_p99_ms", "e2e p99", 8),
    ("error_pct", "err %", 6),
    ("mean_cost", "cost u$", 8),
    ("flaps_per_h", "flaps/h", 8),
    ("escalated_pct", "esc %", 6),
)


def _cell(key: str, values: list[float | None], width: int) -> str:
    iv = mean_interval(values)
    if iv is None:
        return "-".rjust(width)
    if key == "sla_violation_pct":
        half = "" if iv.low is None else f"+-{(iv.high - iv.low) / 2:.1f}"
        return f"{iv.mean:.2f}{half}".rjust(width)
    if key == "mean_cost":
        return f"{iv.mean * 1e6:.1f}".rjust(width)
    if key.endswith("_ms"):
        return (f"{iv.mean / 1000:.1f}s" if iv.mean >= 10_000 else f"{iv.mean:.0f}").rjust(width)
    return f"{iv.mean:.1f}".rjust(width)


def format_table(
    by_cell: Mapping[str, Mapping[str, Sequence[RunResult]]], policies: Sequence[str]
) -> str:
    """Scenario x policy, one block per scenario, means over seeds; the SLO violation column
    carries the 95% interval's half-width, and the lowest mean is marked."""
    header = f"{'scenario':<18} {'policy':<17}" + "".join(
        f" {label:>{w}}" for _, label, w in _COLUMNS
    )
    lines = [header, "-" * len(header)]
    for scenario, by_policy in by_cell.items():
        means = {
            p: sum(r.sla_violation_pct for r in runs) / len(runs) for p, runs in by_policy.items()
        }
        best = min(means.values())
        first = True
        for p in policies:
            runs = by_policy.get(p)
            if not runs:
                continue
            mark = "*" if means[p] == best else " "
            cells = "".join(
                " " + _cell(k, [r.metrics.get(k) for r in runs], w) for k, _, w in _COLUMNS
            )
            lines.append(f"{scenario if first else '':<18} {p:<16}{mark}{cells}")
            first = False
        lines.append("")
    return "\n".join(lines)


def format_versus(demo: DemoResult) -> str:
    """Per scenario: predictive against the best baseline, paired over seeds."""
    lines = []
    for scenario, v in demo.versus_best().items():
        d = v["difference"]
        ci = ""
        if d is not None and d["ci95"][0] is not None:
            ci = f", difference {d['mean']:+.2f} points [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
        rel = f" ({v['relative']:+.0%})" if v["relative"] is not None else ""
        lines.append(
            f"  {scenario:<18} predictive {v['predictive_pct']:6.2f}% vs {v['best_baseline']} "
            f"{v['best_baseline_pct']:6.2f}%{rel}{ci}: {v['verdict']}"
        )
    return "\n".join(lines)


def format_escalation(demo: DemoResult) -> str:
    """Escalations per scenario (first seed) and how the escalated requests fared."""
    lines = []
    seen = set()
    for r in demo.runs:
        e = r.escalation
        if e is None or r.scenario in seen:
            continue
        seen.add(r.scenario)
        used, pick = e.get("violation_prob_used"), e.get("violation_prob_policy_pick")
        said = "as routed"
        if demo.escalation_mode == "advisory" and e.get("scored_agent"):
            used = e.get("violation_prob_agent_choice")
            pick = e.get("violation_prob_policy_pick_same_requests")
            said = "at the agent's choice"
        outcome = (
            f"P(miss TTFT SLO) {100 * used:.1f}% {said} vs {100 * pick:.1f}% for the policy's pick"
            if used is not None and pick is not None
            else "not scored"
        )
        lines.append(
            f"  {r.scenario:<18} escalated {r.metrics['escalated_pct']:5.2f}% of requests "
            f"(ambiguous {r.ambiguous_pct:5.2f}%), {e['agent_runs']} agent runs, "
            f"{e['changed_backend'] or e.get('advised', 0)} "
            f"{'moved' if e['changed_backend'] else 'advised'}, {e['fallback_total']} fallbacks; "
            f"{outcome}"
        )
    if lines:
        from evals.escalation_figures import describe_gain, escalation_gain

        gain = escalation_gain(demo.summary()["escalation"], demo.escalation_mode)
        lines.append("  " + describe_gain(gain))
    return "\n".join(lines)


def format_monitor(demo: DemoResult) -> str:
    """What the fleet monitor raised during each recorded predictive run."""
    lines = []
    for r in demo.runs:
        m = r.monitor
        if m is None:
            continue
        chaos = m["chaos"]
        start = min((c["start_ts"] for c in chaos), default=None)
        where = ", ".join(f"{c['kind']} on {c['backend'] or 'fleet'}" for c in chaos) or "none"
        anomalies = m["anomalies"]
        if anomalies and start is not None:
            in_window = [
                a
                for a in anomalies
                if any(c["start_ts"] <= a["ts"] <= c["end_ts"] + 60 for c in chaos)
            ]
            first = min((a["ts"] for a in in_window), default=None)
            lag = f"first {first - start:+.0f} s from chaos start" if first else "none in window"
            found = f"{len(anomalies)} anomalies ({len(in_window)} during chaos, {lag})"
        else:
            found = f"{len(anomalies)} anomalies"
        cascaded = ", ".join(f"{b} at {t:.0f} s" for t, b in m.get("cascaded") or [])
        lines.append(
            f"  {r.scenario:<18} chaos: {where:<30} {found}; alerts {m['alerts_sent']} sent, "
            f"{m['alerts_suppressed']} suppressed" + (f"; cascaded: {cascaded}" if cascaded else "")
        )
    return "\n".join(lines)
