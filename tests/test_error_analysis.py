from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from tools.error_analysis.accuracy import segment_metrics
from tools.error_analysis.bias import benjamini_hochberg, segment_bias
from tools.error_analysis.distribution import error_distribution, normality_test
from tools.error_analysis.report import analyze_errors

T0 = math.floor(1_700_000_000.0 / 3600.0) * 3600.0  # on a whole hour: windows align


def _stream(n: int = 6000, seed: int = 0, bias_b1: float = 0.0):
    rng = np.random.default_rng(seed)
    actual = rng.gamma(4.0, 50.0, n)
    backend = rng.choice(np.array(["b0", "b1", "b2"]), n)
    predicted = actual + rng.normal(0.0, 20.0, n) + np.where(backend == "b1", bias_b1, 0.0)
    version = np.where(np.arange(n) < n // 2, "v1", "v2")
    ts = T0 + np.arange(n) * 10.0
    load = rng.uniform(0.0, 100.0, n)
    return predicted, actual, version, backend, ts, load


# ---------------------------------------------------------------- metrics


def test_metrics_per_version_match_sklearn():
    p, y, v, *_ = _stream()
    scored, skipped = segment_metrics(p, y, model_version=v, by=("model_version",))
    assert skipped == []
    assert [m.model_version for m in scored] == ["v1", "v2"]
    for m in scored:
        sel = v == m.model_version
        assert m.n == sel.sum()
        assert m.mae_ms == pytest.approx(mean_absolute_error(y[sel], p[sel]))
        assert m.rmse_ms == pytest.approx(math.sqrt(mean_squared_error(y[sel], p[sel])))
        assert m.r2 == pytest.approx(r2_score(y[sel], p[sel]))
        assert m.mean_error_ms == pytest.approx(np.mean(p[sel] - y[sel]))
        assert m.mape_pct == pytest.approx(100 * np.mean(np.abs(p[sel] - y[sel]) / y[sel]))


def test_metrics_per_backend_and_window():
    p, y, _, b, ts, _ = _stream(n=1080)  # 3 hours of 10 s ticks
    scored, _ = segment_metrics(
        p, y, model_version="m", backend=b, ts=ts, by=("backend", "window"), min_samples=1
    )
    assert len(scored) == 3 * 3
    for m in scored:
        sel = (b == m.backend) & (ts >= m.window_start) & (ts < m.window_end)
        assert m.window_end - m.window_start == 3600.0
        assert m.window_start % 3600.0 == 0.0
        assert m.n == sel.sum()
        assert m.mae_ms == pytest.approx(np.mean(np.abs(p[sel] - y[sel])))


def test_metrics_small_groups_are_skipped_and_reported():
    p, y, *_ = _stream(n=200)
    backend = np.where(np.arange(200) < 5, "rare", "common")
    scored, skipped = segment_metrics(
        p, y, model_version="m", backend=backend, by=("backend",), min_samples=10
    )
    assert [m.backend for m in scored] == ["common"]
    assert len(skipped) == 1
    assert skipped[0].key == {"backend": "rare"}
    assert skipped[0].n == 5 and skipped[0].min_required == 10


def test_mape_guards_zero_actuals():
    actual = np.array([0.0, 0.0, 100.0, 200.0])
    predicted = np.array([10.0, 5.0, 110.0, 180.0])
    (m,), _ = segment_metrics(predicted, actual, model_version="m", min_samples=1)
    assert m.mape_excluded == 2
    assert m.mape_pct == pytest.approx(100 * (0.1 + 0.1) / 2)
    (m0,), _ = segment_metrics([1.0, 2.0], [0.0, 0.0], model_version="m", min_samples=1)
    assert m0.mape_pct is None and m0.mape_excluded == 2
    assert math.isfinite(m0.r2)  # constant actual: sklearn's convention, 0.0


@pytest.mark.parametrize(
    "bad",
    [
        dict(predicted=[1.0, float("nan")]),
        dict(actual=[1.0, float("inf")]),
        dict(predicted=[1.0, 2.0, 3.0]),
        dict(model_version=["a", ""]),
        dict(model_version=["a", 3]),
        dict(model_version=np.array([1, 2])),
    ],
)
def test_bad_input_is_rejected_clearly(bad):
    args = dict(predicted=[1.0, 2.0], actual=[1.0, 2.0], model_version=["a", "b"])
    args.update(bad)
    with pytest.raises(ValueError, match=r"predicted|actual|model_version"):
        segment_metrics(
            args["predicted"], args["actual"], model_version=args["model_version"], min_samples=1
        )


# ---------------------------------------------------------------- distribution


def test_normality_test_choice_follows_sample_size():
    rng = np.random.default_rng(1)
    assert normality_test([1.0, 2.0]).test == "none"
    assert normality_test(np.ones(50)).test == "none"
    small = normality_test(rng.normal(size=200))
    assert small.test == "shapiro_wilk" and small.normal is True
    big = normality_test(rng.normal(size=6000))
    assert big.test == "dagostino_pearson" and big.normal is True
    skewed = normality_test(rng.exponential(size=6000))
    assert skewed.test == "dagostino_pearson" and skewed.normal is False
    assert "5000" in big.why


def test_error_distribution_statistics():
    rng = np.random.default_rng(2)
    e = rng.exponential(10.0, 3000)
    d = error_distribution(e, model_version="v1")
    assert d.n == 3000
    assert d.percentiles_ms["p50"] == pytest.approx(np.percentile(e, 50))
    assert d.percentiles_ms["p99"] == pytest.approx(np.percentile(e, 99))
    assert d.skew == pytest.approx(stats.skew(e, bias=False))
    assert d.excess_kurtosis == pytest.approx(stats.kurtosis(e, bias=False))
    assert d.normality.test == "shapiro_wilk" and d.normality.normal is False
    assert "right-skewed" in d.summary and "v1" in d.summary


# ---------------------------------------------------------------- bias


def test_bh_matches_textbook_procedure():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    adj = benjamini_hochberg(p)
    m = p.size
    order = np.argsort(p)
    expected = np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1]
    np.testing.assert_allclose(adj[order], np.minimum(expected, 1.0))


def test_bias_found_in_the_biased_backend_only():
    p, y, _, b, *_ = _stream(n=6000, seed=2, bias_b1=15.0)
    rep = segment_bias(p, y, model_version="m", backend=b, min_samples=30)
    flagged = {(t.segment, t.value): t for t in rep.tests if t.biased}
    assert set(flagged) == {("backend", "b1")}
    t = flagged[("backend", "b1")]
    assert t.direction == "over_predicts"
    assert t.ci_low_ms < 15.0 < t.ci_high_ms
    assert "b1" in rep.summary and "over-predicts" in rep.summary


def test_bias_by_load_band_and_hour():
    rng = np.random.default_rng(3)
    n = 24 * 360
    ts = T0 + np.arange(n) * 10.0
    load = rng.uniform(0.0, 100.0, n)
    y = rng.gamma(4.0, 50.0, n)
    # under-predicts by 20 ms at high load only
    p = y + rng.normal(0.0, 10.0, n) - np.where(load > 80.0, 20.0, 0.0)
    rep = segment_bias(p, y, model_version="m", load=load, ts=ts, load_bands=[40.0, 80.0])
    assert rep.load_band_edges == [40.0, 80.0]
    bands = {t.value: t for t in rep.tests if t.segment == "load_band"}
    assert set(bands) == {"[-inf, 40)", "[40, 80)", "[80, inf)"}
    assert bands["[80, inf)"].biased and bands["[80, inf)"].direction == "under_predicts"
    assert not bands["[-inf, 40)"].biased and not bands["[40, 80)"].biased
    hours = [t for t in rep.tests if t.segment == "hour"]
    assert len(hours) == 24 and {t.n for t in hours} == {360}


def test_bias_false_discovery_rate_on_unbiased_segments():
    """Many unbiased segments: BH keeps false flags rare (no segment has a true bias)."""
    flagged = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n = 4000
        backend = rng.choice(np.array([f"b{i}" for i in range(20)]), n)
        y = rng.gamma(4.0, 50.0, n)
        p = y + rng.normal(0.0, 20.0, n)
        rep = segment_bias(p, y, model_version="m", backend=backend, fdr=0.05)
        flagged += any(t.biased for t in rep.tests)
    # under the global null, P(any flag) <= fdr; 20 runs, allow a little slack
    assert flagged <= 3


def test_bias_min_samples_enforced_and_reported():
    rng = np.random.default_rng(4)
    n = 400
    backend = np.where(np.arange(n) < 10, "tiny", "big")
    y = rng.gamma(4.0, 50.0, n)
    p = y + 30.0  # strongly biased everywhere
    rep = segment_bias(p, y, model_version="m", backend=backend, min_samples=30)
    assert [t.value for t in rep.tests] == ["big"]
    assert rep.skipped[0].key == {"model_version": "m", "backend": "tiny"}
    assert rep.skipped[0].n == 10
    assert rep.tests[0].biased


def test_bias_min_bias_ms_ignores_tiny_effects():
    rng = np.random.default_rng(5)
    n = 50_000
    y = rng.gamma(4.0, 50.0, n)
    p = y + rng.normal(0.5, 5.0, n)  # significant but tiny
    loose = segment_bias(p, y, model_version="m", backend="b0")
    strict = segment_bias(p, y, model_version="m", backend="b0", min_bias_ms=2.0)
    assert loose.tests[0].biased and not strict.tests[0].biased


def test_constant_errors_do_not_crash():
    y = np.full(40, 100.0)
    rep = segment_bias(y + 5.0, y, model_version="m", backend="b0")
    assert rep.tests[0].p_value == 0.0 and rep.tests[0].biased
    rep0 = segment_bias(y, y, model_version="m", backend="b0")
    assert rep0.tests[0].p_value == 1.0 and not rep0.tests[0].biased


# ---------------------------------------------------------------- full report


def test_analyze_errors_report_is_json_ready_and_readable():
    p, y, v, b, ts, load = _stream(n=6000, bias_b1=12.0)
    rep = analyze_errors(p, y, model_version=v, backend=b, ts=ts, load=load)
    doc = json.loads(rep.model_dump_json())
    assert doc["n_rows"] == 6000
    levels = {(m["backend"] is None, m["window_start"] is None) for m in doc["metrics"]}
    assert levels == {(True, True), (False, True), (True, False)}
    assert [d["model_version"] for d in doc["distributions"]] == ["v1", "v2"]
    assert "model v1: MAE" in rep.summary and "b1" in rep.summary
    hours_per_version = 3000 * 10 // 3600 + 1  # 3000 ticks of 10 s each span 9 UTC hours
    assert rep.bias.n_tested == 2 * (3 + 3 + hours_per_version)
