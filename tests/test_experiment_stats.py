from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from tools.experiment_stats import (
    ExperimentConfig,
    alpha_at_look,
    alpha_spent,
    assign_arm,
    bootstrap_mean_difference_ci,
    evaluate_shadow,
    evaluate_split,
    hash_unit,
    srm_check,
    t_interval_mean_difference,
)

FAST = dict(n_bootstrap=300)  # enough for the tests' decisions, keeps repetitions fast


def _errors(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Absolute latency-forecast errors: skewed, like real ones."""
    return np.abs(rng.normal(0.0, scale, n)) + rng.exponential(scale / 4.0, n)


# ---------------------------------------------------------------- assignment


def test_assignment_is_stable_salted_and_follows_the_split():
    ids = [f"req-{i}" for i in range(20_000)]
    arms = [assign_arm(r, 0.2, salt="exp-7") for r in ids]
    assert arms == [assign_arm(r, 0.2, salt="exp-7") for r in ids]  # stable
    share = arms.count("challenger") / len(arms)
    assert abs(share - 0.2) < 0.01
    other = [assign_arm(r, 0.2, salt="exp-8") for r in ids]
    agree = np.mean([x == y for x, y in zip(arms, other, strict=True)])
    assert agree < 0.75  # independent salts: ~0.68 agreement for a 20% split
    assert hash_unit("ab", "c") != hash_unit("abc", "") != hash_unit("c", "ab")
    u = np.array([hash_unit(r) for r in ids[:5000]])
    assert stats.kstest(u, "uniform").pvalue > 0.001
    assert srm_check(arms.count("champion"), arms.count("challenger"), 0.2).detected is False


def test_assignment_rejects_bad_input():
    with pytest.raises(ValueError):
        assign_arm("", 0.5)
    with pytest.raises(ValueError):
        assign_arm("r1", 1.5)


# ---------------------------------------------------------------- alpha spending


def test_obrien_fleming_spending_sums_to_at_most_alpha():
    looks = [0.2, 0.4, 0.6, 0.8, 1.0]
    spent = []
    prev = 0.0
    for t in looks:
        spent.append(alpha_at_look(t, prev, 0.05))
        prev = t
    assert sum(spent) <= 0.05 + 1e-15
    assert sum(spent) == pytest.approx(0.05)
    assert all(x >= 0 for x in spent)
    assert spent[0] < 0.05 / 100  # an early look needs a much smaller p
    assert spent == sorted(spent)  # O'Brien-Fleming: little early, most late
    assert alpha_spent(0.5, 0.05) == pytest.approx(2 * stats.norm.sf(1.959964 / np.sqrt(0.5)))


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock", "fixed_horizon"])
def test_every_spending_function_reaches_alpha_at_the_horizon(spending):
    grid = np.linspace(0.0, 1.2, 61)
    values = [alpha_spent(t, 0.05, spending) for t in grid]
    assert values[0] == 0.0 and values[-1] == 0.05
    assert np.all(np.diff(values) >= 0)
    assert alpha_at_look(0.5, 0.5, 0.05, spending) == 0.0  # no new information, no alpha


def test_early_look_needs_a_much_smaller_p():
    rng = np.random.default_rng(0)
    champion = _errors(rng, 250, 20.0)
    challenger = _errors(rng, 250, 17.5)
    cfg = ExperimentConfig(planned_samples_per_arm=1000, **FAST)
    early = evaluate_split(champion, challenger, cfg)
    assert early.information_fraction == 0.25
    assert early.p_value is not None and early.p_value < 0.05  # would win a fixed test ...
    assert early.state == "collecting" and early.recommendation == "continue"  # ... not here
    assert early.alpha_spent_at_look < 1e-4
    fixed = ExperimentConfig(planned_samples_per_arm=250, **FAST)
    assert evaluate_split(champion, challenger, fixed).state == "challenger_wins"


# ---------------------------------------------------------------- split mode


def test_detects_a_real_improvement_and_a_regression():
    rng = np.random.default_rng(1)
    champion = _errors(rng, 1000, 20.0)
    better = _errors(rng, 1000, 16.0)
    cfg = ExperimentConfig(planned_samples_per_arm=1000, **FAST)
    v = evaluate_split(champion, better, cfg)
    assert v.state == "challenger_wins" and v.recommendation == "promote"
    assert v.test == "welch_t" and v.ci_method == "bootstrap_bca"
    assert v.ci_high_ms < 0 and v.mae_difference_ms < 0 and v.effect_size < 0
    assert v.p_value < v.alpha_spent_at_look
    assert v.summary.startswith("Challenger wins") and "Promote" in v.summary
    worse = evaluate_split(better, champion, cfg)
    assert worse.state == "champion_wins" and worse.recommendation == "rollback"
    json.loads(v.model_dump_json())


def test_identical_arms_false_positive_rate_with_interim_looks():
    """200 seeded A/A experiments, 4 looks each with O'Brien-Fleming spending: the share that
    ever declares a winner stays within alpha (plus Monte Carlo tolerance)."""
    cfg = ExperimentConfig(
        planned_samples_per_arm=200, min_samples_per_arm=50, n_bootstrap=200, alpha=0.05
    )
    winners = 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        a, b = _errors(rng, 200, 20.0), _errors(rng, 200, 20.0)
        prev = 0.0
        for n in (50, 100, 150, 200):
            v = evaluate_split(a[:n], b[:n], cfg, previous_information_fraction=prev)
            prev = v.spent_through_fraction
            if v.state in ("challenger_wins", "champion_wins"):
                winners += 1
                break
        else:
            assert v.state == "no_difference" and v.final_look
            assert v.alpha_spent_total == pytest.approx(0.05)
    # sd of the rate at alpha = 0.05 over 200 runs is ~0.015; allow ~2.5 sd
    assert winners / 200 <= 0.05 + 0.04


def test_min_samples_per_arm_is_enforced():
    rng = np.random.default_rng(2)
    v = evaluate_split(_errors(rng, 99, 20.0), _errors(rng, 99, 5.0), ExperimentConfig(**FAST))
    assert v.state == "collecting" and v.test is None and v.p_value is None
    assert v.alpha_spent_at_look == 0.0 and v.spent_through_fraction == 0.0
    assert "100 per arm needed" in v.summary


def test_sample_ratio_mismatch_on_a_55_45_split():
    rng = np.random.default_rng(3)
    v = evaluate_split(_errors(rng, 5500, 20.0), _errors(rng, 4500, 10.0), ExperimentConfig())
    assert v.state == "srm_failed" and v.recommendation == "keep"
    assert v.srm is not None and v.srm.detected and v.srm.p_value < 1e-20
    assert v.test is None  # a broken assignment is never tested, even with a big difference
    assert "MISMATCH" in v.summary
    ok = srm_check(5030, 4970, 0.5)
    assert not ok.detected and ok.p_value > 0.001
    assert srm_check(2, 1, 0.5).p_value is None  # too few to test


def test_min_effect_turns_a_tiny_significant_difference_into_no_difference():
    rng = np.random.default_rng(4)
    a, b = _errors(rng, 5000, 20.0), _errors(rng, 5000, 19.0)
    cfg = ExperimentConfig(planned_samples_per_arm=5000, min_effect_ms=2.0, **FAST)
    v = evaluate_split(a, b, cfg)
    assert v.p_value < 0.05
    assert v.state == "no_difference" and v.recommendation == "keep"
    assert "No practical difference" in v.summary


def test_very_large_arms_use_the_t_interval():
    rng = np.random.default_rng(5)
    a, b = _errors(rng, 30_000, 20.0), _errors(rng, 30_000, 19.0)
    v = evaluate_split(a, b, ExperimentConfig(planned_samples_per_arm=30_000))
    assert v.ci_method == "welch_t" and v.state == "challenger_wins"


def test_bad_errors_are_rejected():
    with pytest.raises(ValueError, match="NaN or infinite"):
        evaluate_split([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="pairs errors by request"):
        evaluate_shadow([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="previous_information_fraction"):
        evaluate_split([1.0], [1.0], previous_information_fraction=-0.1)
    with pytest.raises(ValidationError):
        ExperimentConfig(planned_samples_per_arm=50, min_samples_per_arm=100)


# ---------------------------------------------------------------- shadow mode


def _shadow(rng: np.random.Generator, n: int, gain: float):
    """Per-request difficulty varies a lot; the challenger is ``gain`` ms better on each."""
    difficulty = rng.exponential(30.0, n)
    champion = difficulty + rng.normal(0.0, 2.0, n)
    challenger = np.maximum(difficulty - gain + rng.normal(0.0, 2.0, n), 0.0)
    return np.abs(champion), challenger


def test_shadow_mode_pairing_detects_what_split_mode_cannot():
    rng = np.random.default_rng(6)
    a, b = _shadow(rng, 400, gain=2.0)
    cfg = ExperimentConfig(planned_samples_per_arm=400, **FAST)
    paired = evaluate_shadow(a, b, cfg)
    assert paired.test == "paired_t" and paired.state == "challenger_wins"
    assert paired.srm is None
    unpaired = evaluate_split(a, b, cfg)  # the same numbers read as independent arms
    assert unpaired.state == "no_difference"
    wil = evaluate_shadow(a, b, cfg.model_copy(update={"shadow_test": "wilcoxon"}))
    assert wil.test == "wilcoxon_signed_rank" and wil.state == "challenger_wins"


def test_shadow_identical_models_do_not_win():
    rng = np.random.default_rng(7)
    a, _ = _shadow(rng, 500, 0.0)
    v = evaluate_shadow(a, a.copy(), ExperimentConfig(planned_samples_per_arm=500, **FAST))
    assert v.state == "no_difference" and v.p_value == 1.0
    assert v.ci_low_ms == v.ci_high_ms == 0.0


def test_shadow_false_positive_rate_fixed_horizon():
    cfg = ExperimentConfig(
        planned_samples_per_arm=150,
        min_samples_per_arm=150,
        n_bootstrap=200,
        spending="fixed_horizon",
    )
    winners = 0
    for seed in range(200):
        rng = np.random.default_rng(5000 + seed)
        difficulty = rng.exponential(30.0, 150)
        a = np.abs(difficulty + rng.normal(0.0, 5.0, 150))
        b = np.abs(difficulty + rng.normal(0.0, 5.0, 150))
        winners += evaluate_shadow(a, b, cfg).state in ("challenger_wins", "champion_wins")
    assert winners / 200 <= 0.05 + 0.04


# ---------------------------------------------------------------- intervals


def test_bootstrap_intervals_agree_with_scipy_and_the_t_interval():
    rng = np.random.default_rng(8)
    a, b = rng.exponential(20.0, 300), rng.exponential(15.0, 250)
    lo, hi = bootstrap_mean_difference_ci(a, b, paired=False, n_resamples=5000, seed=1)
    ref = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: y.mean(axis) - x.mean(axis),
        method="BCa",
        n_resamples=5000,
        rng=2,
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.4) and hi == pytest.approx(ref.high, abs=0.4)
    t_lo, t_hi = t_interval_mean_difference(a, b, paired=False)
    assert lo == pytest.approx(t_lo, abs=0.6) and hi == pytest.approx(t_hi, abs=0.6)
    again = bootstrap_mean_difference_ci(a, b, paired=False, n_resamples=5000, seed=1)
    assert again == (lo, hi)  # seeded
