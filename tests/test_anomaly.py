"""The streaming anomaly detector: compiled forest, batch = stream, no look-ahead, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.ensemble import IsolationForest

from tools.anomaly import (
    VARIANTS,
    DetectorConfig,
    GaussianDetector,
    IsolationForestDetector,
    make_detector,
    score_series,
)
from tools.anomaly.calibration import AlertGate, TailCalibrator, alert_strength
from tools.anomaly.features import FeatureSpec, detect_period, feature_rows
from tools.anomaly.forest import fit_forest

SMALL = DetectorConfig(window=400, warmup=100, refit_every=50, n_estimators=30)


def test_forest_isolates_like_scikit_learn() -> None:
    """Same algorithm as scikit-learn's IsolationForest: the scores of both rank points alike,
    sit on the same scale, and single out the same planted outliers."""
    rng = np.random.default_rng(0)
    scale = np.array([1.0, 1e8, 1e-3, 10.0, 0.5, 3.0])
    X = rng.normal(size=(1500, 6)) * scale
    X[:15] += 6.0 * scale  # planted outliers
    ours = fit_forest(X, n_estimators=200, max_samples=256, seed=1).score(X)
    theirs = (
        -IsolationForest(n_estimators=200, max_samples=256, random_state=1).fit(X).score_samples(X)
    )
    assert spearmanr(ours, theirs).statistic > 0.95
    assert abs(float(ours.mean() - theirs.mean())) < 0.02
    assert set(np.argsort(-ours)[:15]) == set(range(15)) == set(np.argsort(-theirs)[:15])


def test_forest_is_deterministic_and_scores_one_row_like_many() -> None:
    X = np.random.default_rng(1).normal(size=(300, 3))
    a = fit_forest(X, n_estimators=20, max_samples=64, seed=5)
    b = fit_forest(X, n_estimators=20, max_samples=64, seed=5)
    np.testing.assert_array_equal(a.score(X), b.score(X))
    assert a.score_one(X[7]) == a.score(X)[7]
    assert a.score(X).min() > 0.0 and a.score(X).max() <= 1.0
    # A constant column cannot be split on; a constant matrix isolates nothing (all equal).
    flat = fit_forest(np.ones((50, 2)), n_estimators=5, max_samples=32, seed=0)
    assert np.unique(flat.score(np.ones((3, 2)))).size == 1
    with pytest.raises(ValueError, match="finite"):
        fit_forest(np.array([[1.0], [np.nan]]), n_estimators=2, max_samples=2, seed=0)


def test_batch_detection_equals_streaming_updates() -> None:
    """`detect` on an array, in any chunking, gives exactly what `update` gives one by one."""
    x = np.random.default_rng(8).normal(size=900).cumsum()
    x[700] += 40.0
    one_by_one = score_series(x, IsolationForestDetector(SMALL))
    det = IsolationForestDetector(SMALL)
    runs = [det.detect(x[:130]), det.detect(x[130:131]), det.detect(x[131:])]
    surprise = np.concatenate([r.surprise for r in runs])
    alert = np.concatenate([r.alert for r in runs])
    ready = np.concatenate([r.ready for r in runs])
    np.testing.assert_array_equal(surprise, [r.surprise for r in one_by_one])
    np.testing.assert_array_equal(alert, [r.alert for r in one_by_one])
    np.testing.assert_array_equal(ready, [r.ready for r in one_by_one])


def test_features_of_one_row_equal_the_batch_and_ignore_the_future() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=600).cumsum()
    spec = FeatureSpec(names=("value", "level", "slope", "spread", "seasonal", "change"))
    batch = feature_rows(x, np.arange(len(x)), spec, period=50)
    need = spec.history_needed(50)
    for r in (0, 3, 40, 151, 599):
        tail = x[max(0, r + 1 - need) : r + 1]
        one = feature_rows(tail, np.array([len(tail) - 1]), spec, period=50)[0]
        np.testing.assert_allclose(one, batch[r], rtol=1e-12, atol=1e-9)
    # Changing later values leaves earlier rows' features untouched: no look-ahead.
    y = x.copy()
    y[300:] += 1000.0
    np.testing.assert_array_equal(feature_rows(y, np.arange(300), spec, 50), batch[:300])


def test_detect_period() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(1000)
    assert detect_period(np.sin(2 * np.pi * t / 24) + 0.2 * rng.normal(size=1000)) == 24
    assert detect_period(rng.normal(size=1000)) == 0
    assert detect_period(np.full(100, 3.0)) == 0


def test_tail_calibrator_is_monotone_and_extrapolates() -> None:
    rng = np.random.default_rng(2)
    cal = TailCalibrator(rng.normal(size=1000))
    grid = np.linspace(-5, 10, 400)
    p = cal.p_values(grid)
    assert np.all(np.diff(p) <= 1e-15)
    assert p[0] == 1.0  # below every training score
    assert 0 < p[-1] < 1e-6  # far beyond the largest one, still ordered
    assert cal.p_value(0.0) == pytest.approx(cal.p_values(np.array([0.0]))[0])
    # Inside the range: the conformal share (1 + #{train >= s}) / (n + 1).
    s = float(np.sort(cal._sorted)[500])
    assert cal.p_value(s) == pytest.approx((1 + 500) / 1001)


def test_severity_means_the_same_rarity_on_different_series() -> None:
    """On stationary streams about 10% of points reach severity 0.9, whatever the scale/shape."""
    shares = []
    for seed, draw in (
        (1, lambda r: r.normal(5, 2, 2500)),
        (2, lambda r: r.exponential(100, 2500)),
    ):
        det = IsolationForestDetector(SMALL)
        results = score_series(draw(np.random.default_rng(seed)), det)
        sev = np.array([r.severity for r in results if r.ready])
        shares.append(float((sev >= 0.9).mean()))
    # Binomial sd of a 10% share over ~2400 points is 0.6%; in-sample training scores run a
    # little low, so allow 7..16%.
    assert all(0.07 <= s <= 0.16 for s in shares), shares
    assert abs(shares[0] - shares[1]) < 0.04


def test_scores_use_no_future_points() -> None:
    x = np.random.default_rng(3).normal(size=700)
    x[650:] += 50.0  # a later change must not alter earlier scores
    full = score_series(x, IsolationForestDetector(SMALL))
    prefix = score_series(x[:600], IsolationForestDetector(SMALL))
    assert full[:600] == prefix


def test_spike_is_flagged_and_recovery_does_not_alert() -> None:
    x = np.random.default_rng(4).normal(10.0, 1.0, 900)
    x[700:705] = 40.0
    results = score_series(x, IsolationForestDetector(SMALL))
    assert not results[50].ready and results[50].alert == 0.0
    spike = results[700]
    assert spike.is_anomaly and spike.severity > 0.999 and spike.alert > 0.5
    # While the incident lasts it may escalate (each alert a decade rarer than the last), but
    # the return to normal raises no alert of its own.
    assert sum(r.alert > 0 for r in results[705:800]) == 0
    quiet = [r for r in results[150:700] if r.alert > 0 and r.surprise > spike.surprise / 2]
    assert not quiet


def test_contamination_share_is_left_out_of_training() -> None:
    """A past spike excluded from training does not make the next identical spike look normal."""
    x = np.random.default_rng(2).normal(0.0, 1.0, 1200)
    x[600] = x[900] = 15.0
    cfg = DetectorConfig(window=500, warmup=100, refit_every=50, n_estimators=30)
    kept = score_series(x, IsolationForestDetector(cfg))
    naive = score_series(
        x,
        IsolationForestDetector(
            DetectorConfig(
                window=500, warmup=100, refit_every=50, n_estimators=30, exclude_anomalies=False
            )
        ),
    )
    assert kept[900].surprise > 5.0
    assert kept[900].surprise > naive[900].surprise + 3.0


def test_level_shift_is_learned_as_the_new_normal() -> None:
    x = np.random.default_rng(5).normal(0.0, 1.0, 1500)
    x[600:] += 20.0
    results = score_series(x, IsolationForestDetector(SMALL))
    assert results[600].is_anomaly
    late = np.array([r.surprise for r in results[1200:]])
    assert np.median(late) < 1.5


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    det = IsolationForestDetector(SMALL)
    det.update(1.0)
    with pytest.raises(ValueError, match="finite"):
        det.update(bad)
    with pytest.raises(ValueError, match="finite"):
        GaussianDetector().update(bad)


def test_same_seed_same_scores() -> None:
    x = np.random.default_rng(6).normal(size=400)
    assert score_series(x, IsolationForestDetector(SMALL)) == score_series(
        x, IsolationForestDetector(SMALL)
    )


def test_alert_gate_speaks_at_new_peaks_only() -> None:
    gate = AlertGate(memory=3, margin=1.0)
    out = [gate.update(s) for s in (2.0, 2.5, 3.6, 1.0, 1.0, 1.0, 2.1, 0.0)]
    # 2.0 fires (nothing before it); 2.5 is not a decade above 2.0; 3.6 is above 2.5 + 1;
    # once 3.6 has left the 3-tick memory, 2.1 beats the 1.0s by more than a decade; 0 never fires.
    assert [o > 0 for o in out] == [True, False, True, False, False, False, True, False]
    assert out[2] == pytest.approx(alert_strength(3.6))
    assert 0 < alert_strength(3.0) < alert_strength(30.0) < alert_strength(150.0) < 1.0


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError):
        DetectorConfig(contamination=0.0)
    with pytest.raises(ValueError):
        DetectorConfig(warmup=10)
    with pytest.raises(ValueError):
        FeatureSpec(names=("value", "colour"))
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("magic")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_streams(variant: str) -> None:
    x = np.random.default_rng(7).normal(size=300)
    x[250] = 30.0
    results = score_series(x, make_detector(variant, SMALL))
    assert len(results) == 300
    assert all(0.0 <= r.severity <= 1.0 and 0.0 <= r.alert <= 1.0 for r in results)
    assert results[250].severity > 0.99
