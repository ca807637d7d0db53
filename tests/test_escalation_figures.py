"""The router agent's measured gain over seeds, from a demo's escalation figures."""

from __future__ import annotations

import pytest

from evals.escalation_figures import describe_gain, escalation_gain


def _e(scored: int, used: float, pick: float) -> dict:
    return {
        "scored": scored,
        "violation_prob_used": used,
        "violation_prob_policy_pick": pick,
        "changed_backend": 3,
    }


def test_gain_pools_scenarios_per_seed_and_intervals_over_seeds() -> None:
    figures = {
        "spike:101": _e(100, 0.10, 0.20),  # seed 0 of spike: 10 vs 20 misses
        "spike:102": _e(100, 0.15, 0.20),
        "surge:104": _e(300, 0.20, 0.20),  # seed 0 of surge: 60 vs 60
        "surge:105": _e(300, 0.10, 0.20),
    }
    g = escalation_gain(figures)
    r0, r1 = g["replicates"]
    assert (r0["misses_routed"], r0["misses_policy_pick"]) == (70.0, 80.0)
    assert r0["gain"] == pytest.approx(1 - 70 / 80, abs=1e-4)
    assert r1["gain"] == pytest.approx(1 - 45 / 80, abs=1e-4)
    assert g["mean_gain"] == pytest.approx((0.125 + 0.4375) / 2, abs=1e-4)
    lo, hi = g["gain_95ci"]
    assert lo < g["mean_gain"] < hi
    assert g["meets_target"] is True
    assert "2 seeds" in describe_gain(g) and "meets the 20% target" in describe_gain(g)


def test_a_tie_misses_the_target_and_nothing_scored_is_said() -> None:
    g = escalation_gain({"a:1": _e(50, 0.3, 0.3), "a:2": _e(50, 0.31, 0.3)})
    assert g["meets_target"] is False and g["mean_gain"] < 0.2
    assert "misses the 20% target" in describe_gain(g)
    assert describe_gain(escalation_gain({"a:1": _e(0, 0.0, 0.0)})) == "escalations: none scored"


def test_override_mode_scores_the_backend_really_used_not_the_agents_answer() -> None:
    # The agent's recorded choice scores worse than what was routed (its worse answers were
    # refused): advisory reads the recorded choice, override what the requests really got.
    e = {
        **_e(100, 0.10, 0.20),
        "scored_agent": 100,
        "violation_prob_agent_choice": 0.30,
        "violation_prob_policy_pick_same_requests": 0.20,
    }
    advisory = escalation_gain({"a:1": e, "a:2": e})
    override = escalation_gain({"a:1": e, "a:2": e}, "override")
    assert advisory["basis"] == "agent_choice" and advisory["mean_gain"] == pytest.approx(-0.5)
    assert override["basis"] == "as_routed" and override["mean_gain"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        escalation_gain({"a:1": e}, "sometimes")
