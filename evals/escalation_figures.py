"""Does the router agent earn its place? Escalated requests as routed against the policy's own pick,
over seeds.

Every escalated request is scored twice at its tick (`Escalator.score_pending`): the chance that
a request sent to the backend it was routed to missed its SLO, and the same for the policy's own
pick (the counterfactual), both read from the tick's finished requests on those backends. Summed
over a run's escalated requests they are the expected SLO misses as routed and as the policy
would have routed. Per seed (all scenarios pooled) the agent's gain is
`1 - misses as routed / misses at the policy's pick` (in advisory mode, where requests keep the
policy's pick, "as routed" is the agent's recorded choice, scored the same way on the same
requests); the seeds give its mean and a 95%
t-interval (n - 1 degrees of freedom; seeds are independent replications, each a paired
comparison on the same requests). The target is a gain of at least 20%.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from scipy import stats

TARGET_GAIN = 0.20


def _seed_of(key: str) -> tuple[str, int]:
    scenario, _, seed = key.rpartition(":")
    return scenario, int(seed)


def escalation_gain(
    escalation: Mapping[str, Mapping[str, Any]], mode: str = "advisory"
) -> dict[str, Any]:
    """From a demo's `escalation` figures (`"scenario:seed" -> Escalator.stats.summary()` plus
    `escalated_pct`): per replicate, the expected misses as routed and at the policy's pick,
    and the gain; with their mean, interval and the verdict against `TARGET_GAIN`. In advisory
    mode "as routed" is the agent's recorded choice (the requests kept the policy's pick); in
    override mode it is the backend each request was really sent to."""
    by_scenario: dict[str, list[tuple[int, Mapping[str, Any]]]] = defaultdict(list)
    for key, e in escalation.items():
        scenario, seed = _seed_of(key)
        by_scenario[scenario].append((seed, e))
    replicates: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    if mode not in ("advisory", "override"):
        raise ValueError(f"mode must be advisory or override, got {mode!r}")
    advisory = mode == "advisory" and any(e.get("scored_agent") for e in escalation.values())
    for runs in by_scenario.values():
        for k, (_seed, e) in enumerate(sorted(runs, key=lambda r: r[0])):
            # The agent's own choice where it was recorded (advisory mode scores it on every
            # valid answer); else the backend each request was routed to.
            if advisory and e.get("scored_agent"):
                n = int(e["scored_agent"])
                used = e.get("violation_prob_agent_choice")
                pick = e.get("violation_prob_policy_pick_same_requests")
            else:
                n = int(e.get("scored") or 0)
                used, pick = e.get("violation_prob_used"), e.get("violation_prob_policy_pick")
            if not n or used is None or pick is None:
                continue
            r = replicates[k]
            r["escalated"] += n
            r["misses_routed"] += used * n
            r["misses_policy_pick"] += pick * n
            r["changed"] += int(e.get("changed_backend") or 0)
    rows = []
    for k in sorted(replicates):
        r = replicates[k]
        gain = (
            1.0 - r["misses_routed"] / r["misses_policy_pick"] if r["misses_policy_pick"] else None
        )
        rows.append(
            {
                "replicate": k,
                "escalated": int(r["escalated"]),
                "changed_backend": int(r["changed"]),
                "misses_routed": round(r["misses_routed"], 1),
                "misses_policy_pick": round(r["misses_policy_pick"], 1),
                "gain": None if gain is None else round(gain, 4),
            }
        )
    gains = [row["gain"] for row in rows if row["gain"] is not None]
    out: dict[str, Any] = {
        "target_gain": TARGET_GAIN,
        "basis": "agent_choice" if advisory else "as_routed",
        "replicates": rows,
        "n": len(gains),
    }
    if gains:
        mean = sum(gains) / len(gains)
        out["mean_gain"] = round(mean, 4)
        if len(gains) >= 2:
            sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / (len(gains) - 1))
            half = stats.t.ppf(0.975, len(gains) - 1) * sd / math.sqrt(len(gains))
            out["gain_95ci"] = [round(mean - half, 4), round(mean + half, 4)]
        out["meets_target"] = mean >= TARGET_GAIN
    return out


def describe_gain(gain: Mapping[str, Any]) -> str:
    """One paragraph for the demo's output and the README."""
    if not gain.get("n"):
        return "escalations: none scored"
    ci = gain.get("gain_95ci")
    interval = f" (95% CI {100 * ci[0]:+.1f}% to {100 * ci[1]:+.1f}%)" if ci else ""
    per = ", ".join(
        f"{100 * r['gain']:+.1f}%" if r["gain"] is not None else "n/a" for r in gain["replicates"]
    )
    verdict = "meets" if gain.get("meets_target") else "misses"
    basis = (
        "at the agent's recorded choice (advisory: not routed there)"
        if gain.get("basis") == "agent_choice"
        else "as routed"
    )
    return (
        f"escalated requests {basis} vs the policy's own pick, over {gain['n']} seeds: "
        f"{100 * gain['mean_gain']:+.1f}% fewer expected SLO misses{interval}; per seed {per}; "
        f"{verdict} the {100 * gain['target_gain']:.0f}% target"
    )
