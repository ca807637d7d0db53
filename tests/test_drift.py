"""Drift tests: decisions, severities, minimum sizes, multiple-testing correction, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tools.drift import (
    DriftReport,
    adjust_p_values,
    combine_reports,
    concept_drift,
    data_drift,
    prediction_drift,
    severity_for,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------- corrections


def test_benjamini_hochberg_matches_scipy():
    p = _rng().random(50) ** 3
    np.testing.assert_allclose(
        adjust_p_values(p, "benjamini-hochberg"), stats.false_discovery_control(p)
    )


def test_holm_step_down_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    np.testing.assert_allclose(adjust_p_values(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    assert adjust_p_values([], "holm").size == 0


def test_invalid_p_values_and_corrections_are_rejected():
    with pytest.raises(ValueError):
        adjust_p_values([0.1, 1.2], "holm")
    with pytest.raises(ValueError):
        adjust_p_values([math.nan], "benjamini-hochberg")
    with pytest.raises(ValueError):
        adjust_p_values([0.1], "bonferroni")  # type: ignore[arg-type]


# -------------------------------------------------------------------------- severity


@pytest.mark.parametrize(
    ("effect", "measure", "p_adj", "expected"),
    [
        (0.9, "cohen_d", 0.2, "none"),  # not significant: no severity whatever the effect
        (0.05, "cohen_d", 1e-9, "low"),
        (-0.3, "cohen_d", 1e-9, "medium"),  # the sign does not matter
        (0.6, "cohen_d", 1e-9, "high"),
        (0.9, "cohen_d", 1e-9, "critical"),
        (0.9, "cohen_d", 0.01, "high"),  # critical needs p_adj < alpha / 100
        (0.15, "ks_distance", 1e-6, "medium"),
        (0.3, "psi", 1e-6, "high"),
        (0.5, "rank_biserial", 1e-6, "critical"),
        (1.2, "wasserstein_sigmas", 1e-6, "critical"),
    ],
)
def test_severity_rule(effect, measure, p_adj, expected):
    assert severity_for(effect, measure, p_adj, alpha=0.05) == expected


# ------------------------------------------------------------------------ data drift


def test_data_drift_flags_the_shifted_feature_only():
    rng = _rng(12)
    ref = {"load": rng.normal(0, 1, 400), "latency": rng.gamma(2, 50, 400)}
    cur = {"load": rng.normal(0, 1, 400), "latency": rng.gamma(2, 50, 400) + 60}
    report = data_drift(ref, cur)
    by_name = {r.name: r for r in report.results}
    assert by_name["latency"].status == "drift" and by_name["latency"].test == "ks"
    assert by_name["latency"].severity in ("high", "critical")
    assert by_name["load"].status == "ok" and by_name["load"].severity == "none"
    assert report.drifted == ["latency[ks]"]
    assert report.n_tests == 2 and report.correction == "benjamini-hochberg"
    assert "latency" in report.summary


def test_data_drift_below_the_minimum_sample_size_reports_counts_not_a_test():
    rng = _rng(2)
    report = data_drift({"a": rng.normal(size=12)}, {"a": rng.normal(5, 1, 500)}, min_samples=30)
    (r,) = report.results
    assert r.status == "insufficient_data" and r.p_value is None and r.severity == "none"
    assert (r.n_reference, r.n_current, r.min_samples) == (12, 500, 30)
    assert "12 reference and 500 current" in r.detail
    assert report.n_tests == 0 and report.insufficient == ["a[ks]"]


def test_large_references_switch_to_an_effect_size_that_means_something():
    rng = _rng(3)
    ref = rng.normal(0, 2, 20_000)
    tiny = data_drift({"x": ref}, {"x": rng.normal(0.1, 2, 20_000)})
    (r,) = tiny.results
    assert r.test == "wasserstein" and r.effect_measure == "wasserstein_sigmas"
    assert r.effect_size == pytest.approx(0.05, abs=0.03)  # 0.1 / sigma 2
    assert r.severity in ("none", "low")  # significant perhaps, but negligible
    big = data_drift({"x": ref}, {"x": rng.normal(2.0, 2, 20_000)})
    assert big.results[0].severity == "critical"
    psi = data_drift({"x": ref}, {"x": rng.normal(2.0, 2, 20_000)}, large_method="psi")
    assert psi.results[0].test == "psi" and psi.results[0].effect_size > 0.5
    forced = data_drift({"x": ref[:500]}, {"x": ref[500:1000]}, method="psi")
    assert forced.results[0].test == "psi" and forced.results[0].status == "ok"


def test_psi_needs_a_hundred_samples_per_side():
    rng = _rng(4)
    report = data_drift({"x": rng.normal(size=80)}, {"x": rng.normal(size=80)}, method="psi")
    assert report.results[0].status == "insufficient_data"
    assert report.results[0].min_samples == 100


def test_array_input_with_feature_names_and_nan_are_dropped_and_counted():
    rng = _rng(5)
    ref = rng.normal(size=(300, 2))
    cur = rng.normal(size=(300, 2))
    cur[:10, 1] = np.nan
    report = data_drift(ref, cur, feature_names=["cpu", "mem"])
    mem = next(r for r in report.results if r.name == "mem")
    assert mem.n_dropped == 10 and mem.n_current == 290
    default_names = data_drift(ref, cur)
    assert [r.name for r in default_names.results] == ["f0", "f1"]


def test_data_drift_bad_input():
    with pytest.raises(ValueError, match="different features"):
        data_drift({"a": [1.0] * 50}, {"b": [1.0] * 50})
    with pytest.raises(ValueError, match="feature names"):
        data_drift(np.zeros((40, 2)), np.zeros((40, 2)), feature_names=["only_one"])
    with pytest.raises(ValueError, match="numbers"):
        data_drift({"a": ["x"] * 40}, {"a": [1.0] * 40})
    with pytest.raises(ValueError, match="alpha"):
        data_drift({"a": [1.0] * 40}, {"a": [1.0] * 40}, alpha=0.0)


def test_correction_keeps_false_alarms_rare_across_many_features():
    # Twenty stationary features, 60 reports: without correction about 64% of the reports
    # would flag something (1 - 0.95**20); with BH (= FWER under the global null) about 5%.
    rng = _rng(6)
    flagged = 0
    for _ in range(60):
        ref = rng.normal(size=(120, 20))
        cur = rng.normal(size=(120, 20))
        flagged += bool(data_drift(ref, cur).drifted)
    assert flagged <= 9


def test_correction_can_turn_a_nominal_hit_into_no_drift():
    rng = _rng(7)
    ref = rng.normal(size=(200, 20))
    cur = rng.normal(size=(200, 20))
    cur[:, 0] += 0.22  # a weak shift, nominally significant on its own
    single = data_drift(ref[:, :1], cur[:, :1]).results[0]
    many = data_drift(ref, cur, correction="holm").results[0]
    assert single.status == "drift" and single.p_value == pytest.approx(0.0043, abs=1e-4)
    assert many.status == "ok"
    assert many.p_adjusted == pytest.approx(20 * single.p_value)  # smallest of 20: x 20


# ------------------------------------------------------------------ prediction drift


def test_prediction_drift_mean_shift_and_shape_change():
    rng = _rng(8)
    ref = rng.normal(200, 20, 500)
    shifted = prediction_drift(ref, rng.normal(215, 20, 500))
    assert {r.test for r in shifted.results if r.status == "drift"} == {"ks", "welch_t"}
    wider = prediction_drift(ref, rng.normal(200, 45, 500))
    status = {r.test: r.status for r in wider.results}
    assert status == {"ks": "drift", "welch_t": "ok"}  # same mean, different spread
    same = prediction_drift(ref, rng.normal(200, 20, 500))
    assert same.drifted == [] and same.max_severity == "none"


# --------------------------------------------------------------------- concept drift


def test_concept_drift_detects_an_error_increase_not_a_decrease():
    rng = _rng(9)
    ref = np.abs(rng.normal(0, 10, 300))
    worse = concept_drift(ref, np.abs(rng.normal(0, 16, 300)))
    assert {r.test for r in worse.results} == {"welch_t", "mann_whitney_u"}
    assert all(r.status == "drift" for r in worse.results)
    assert worse.max_severity in ("medium", "high", "critical")
    better = concept_drift(ref, np.abs(rng.normal(0, 5, 300)))
    assert better.drifted == []
    two_sided = concept_drift(ref, np.abs(rng.normal(0, 5, 300)), alternative="two-sided")
    assert len(two_sided.drifted) == 2


def test_concept_drift_minimum_size_bad_errors_and_constant_windows():
    small = concept_drift([1.0] * 10, [2.0] * 50)
    assert all(r.status == "insufficient_data" for r in small.results)
    assert small.n_tests == 0
    with pytest.raises(ValueError, match=">= 0"):
        concept_drift([1.0, -2.0] * 20, [1.0] * 40)
    assert concept_drift([1.0] * 40, [1.0] * 40).drifted == []
    jump = concept_drift([1.0] * 40, [2.0] * 40)
    assert jump.max_severity == "critical"
    assert all(math.isfinite(r.effect_size or 0.0) for r in jump.results)


# ------------------------------------------------------------------ combined reports


def test_combined_report_corrects_across_all_tests_and_round_trips_json():
    rng = _rng(10)
    data = data_drift(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)))
    pred = prediction_drift(rng.normal(size=200), rng.normal(0.5, 1, 200))
    conc = concept_drift(np.abs(rng.normal(size=200)), np.abs(rng.normal(0, 2, 200)))
    joint = combine_reports(data, pred, conc, correction="holm")
    assert joint.kind == "combined" and joint.n_tests == 9
    own = {(r.kind, r.name, r.test): r.p_adjusted for r in pred.results + conc.results}
    for r in joint.results:
        if (r.kind, r.name, r.test) in own:
            assert r.p_adjusted >= own[(r.kind, r.name, r.test)]
    assert "prediction" in " ".join(joint.drifted) and "abs_error" in " ".join(joint.drifted)
    again = DriftReport.model_validate_json(joint.model_dump_json())
    assert again == joint
