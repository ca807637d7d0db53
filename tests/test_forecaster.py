"""Forecaster: dataset alignment, temporal split without leakage, report, serving path."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from tools.features import FEATURE_NAMES, LONG_TICKS, batch_features, feature_index
from tools.flat_forest import FlatForest
from tools.forecaster import (
    HORIZON_S,
    Forecaster,
    build_dataset,
    conformal_quantile,
    refit_leaf_medians,
    temporal_split,
    train,
)
from tools.metrics import improvement, interval_coverage, regression_metrics
from tools.telemetry import TICK_SECONDS, TelemetryPoint

T0 = 1_700_000_000.0
SMALL = {"n_estimators": 12, "n_jobs": 1, "seed": 3}


def synthetic_history(
    hours: float = 6.0, backends: tuple[str, ...] = ("b0", "b1"), seed: int = 0
) -> list[TelemetryPoint]:
    """Per backend: load = slow wave + AR(1) wander; p95 from a queueing-shaped curve of the
    utilisation, with multiplicative measurement noise that persistence cannot average away."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 / TICK_SECONDS)
    out = []
    for k, name in enumerate(backends):
        cap, base = 100.0 + 30 * k, 60.0 + 20 * k
        wander = 0.0
        for i in range(n):
            wander = 0.98 * wander + rng.normal(0, 2.0)
            rps = max(1.0, 55 + 35 * math.sin(2 * math.pi * i / 1400 + k) + wander)
            rho = min(rps / cap, 0.97)
            p50 = base / (1 - rho) * rng.lognormal(0, 0.1)
            p95 = 2.5 * base / (1 - rho) * rng.lognormal(0, 0.3)
            out.append(
                TelemetryPoint(
                    ts=T0 + (i + 1) * TICK_SECONDS,
                    backend=name,
                    rps=rps,
                    p50_ms=p50,
                    p95_ms=p95,
                    error_rate=float(min(1.0, max(0.0, rng.normal(0.01 + 0.05 * rho**8, 0.005)))),
                    in_flight=rps * p50 / 1000,
                )
            )
    out.sort(key=lambda p: (p.ts, p.backend))
    return out


@pytest.fixture(scope="module")
def history() -> list[TelemetryPoint]:
    return synthetic_history()


@pytest.fixture(scope="module")
def trained(history):
    return train(history, **SMALL)


# ---------------------------------------------------------------------------------- dataset
def test_dataset_rows_pair_features_at_t_with_p95_one_horizon_later(history):
    ds = build_dataset(history)
    b0 = [p for p in history if p.backend == "b0"]
    p95_at = {p.ts: p.p95_ms for p in b0}
    X0 = batch_features(b0)
    row_of = {p.ts: i for i, p in enumerate(b0)}
    mask = ds.backend == "b0"
    assert mask.sum() == len(b0) - (LONG_TICKS - 1) - 30  # warm-up rows and the last horizon
    for i in np.flatnonzero(mask)[::97]:
        assert ds.target_ts[i] == ds.ts[i] + HORIZON_S
        assert ds.y[i] == p95_at[ds.target_ts[i]]
        assert ds.p95_now[i] == p95_at[ds.ts[i]]
        assert np.array_equal(ds.X[i], X0[row_of[ds.ts[i]]])
        assert ds.p95_ma[i] == ds.X[i, feature_index("p95_ma_long")]
    assert ds.X.shape[1] == len(FEATURE_NAMES)


def test_dataset_ignores_input_order_and_skips_rows_without_a_target(history):
    shuffled = list(history)
    random.Random(1).shuffle(shuffled)
    a, b = build_dataset(history), build_dataset(shuffled)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    # drop one b0 point: the row whose target it was disappears
    victim = [p for p in history if p.backend == "b0"][500]
    c = build_dataset([p for p in history if p is not victim])
    assert not np.any((c.backend == "b0") & (c.target_ts == victim.ts))
    assert len(c) < len(a)


def test_dataset_rejects_duplicates():
    pts = synthetic_history(hours=0.5, backends=("b0",))
    with pytest.raises(ValueError, match="duplicate"):
        build_dataset([*pts, pts[100]])


# ------------------------------------------------------------------------------------ split
def test_split_periods_are_ordered_with_horizon_gaps(history):
    ds = build_dataset(history)
    sp = temporal_split(ds, holdout_fraction=0.2, calibration_fraction=0.15)
    fit, cal, hold = (ds.take(i) for i in (sp.fit, sp.calibration, sp.holdout))
    assert fit.target_ts.max() < sp.calibration_cut_ts <= cal.ts.min()
    assert cal.target_ts.max() < sp.cut_ts <= hold.ts.min()
    # no training target (fit or calibration) lies in the hold-out period
    assert max(fit.target_ts.max(), cal.target_ts.max()) < hold.ts.min()
    assert hold.ts.min() - fit.ts.max() >= 2 * HORIZON_S
    assert not set(sp.fit) & set(sp.calibration) and not set(sp.calibration) & set(sp.holdout)
    span = ds.ts.max() - ds.ts.min()
    assert (hold.ts.max() - hold.ts.min()) == pytest.approx(0.2 * span, abs=TICK_SECONDS)


def test_validation_period_telemetry_does_not_leak_into_training(history, trained):
    forecaster, report = trained
    cut = report.cut_ts
    perturbed = [
        replace(p, p95_ms=p.p95_ms * 7 + 100, p50_ms=p.p50_ms * 3, rps=p.rps * 2, error_rate=0.5)
        if p.ts >= cut
        else p
        for p in history
    ]
    assert sum(p.ts >= cut for p in history) > 500
    again, report2 = train(perturbed, **SMALL)
    # Same forest, same interval, same training window: the model never saw the hold-out.
    assert again.version_id == forecaster.version_id
    for name, arr in forecaster.forest.arrays().items():
        assert np.array_equal(arr, again.forest.arrays()[name]), name
    assert again.interval_multiplier == forecaster.interval_multiplier
    assert again.trained_to_ts < cut
    # ... while the hold-out figures do see the change.
    assert report2.forest.mae_ms != report.forest.mae_ms


def test_too_short_history_is_a_clear_error():
    with pytest.raises(ValueError, match=r"too short|no training rows"):
        train(synthetic_history(hours=0.2), **SMALL)
    with pytest.raises(ValueError, match="fraction"):
        temporal_split(build_dataset(synthetic_history(hours=1)), holdout_fraction=1.5)


# ----------------------------------------------------------------------------------- report
def test_report_compares_forest_and_baselines_on_the_same_rows(trained):
    forecaster, report = trained
    assert report.forest.n == report.persistence.n == report.moving_average.n == report.n_holdout
    for m in (report.forest, report.persistence, report.moving_average):
        assert all(math.isfinite(v) for v in (m.mae_ms, m.rmse_ms, m.r2, m.mape_pct))
        assert m.rmse_ms >= m.mae_ms > 0
    assert report.mae_improvement_vs_persistence == pytest.approx(
        1 - report.forest.mae_ms / report.persistence.mae_ms
    )
    # on noisy but smooth synthetic latency the forest beats echoing the last value
    assert report.forest.mae_ms < report.persistence.mae_ms
    assert set(report.per_backend_mae_ms) == {"b0", "b1"}
    assert report.interval.nominal_coverage == 0.9
    assert 0.0 <= report.interval.holdout_coverage <= 1.0
    assert report.interval.calibration_coverage >= 0.9  # conformal rank on those very rows
    assert report.interval.multiplier == forecaster.interval_multiplier > 0
    assert forecaster.report is report
    assert report.model_dump_json()  # JSON-safe


def test_training_is_deterministic_for_a_seed(history, trained):
    forecaster, _ = trained
    again, _ = train(history, **{**SMALL, "n_jobs": 2})
    assert again.version_id == forecaster.version_id
    other, _ = train(history, **{**SMALL, "seed": 4})
    assert other.version_id != forecaster.version_id


# ---------------------------------------------------------------------------------- serving
def test_predict_gives_ordered_intervals_from_the_flat_forest(history, trained, monkeypatch):
    forecaster, _ = trained
    import sklearn.ensemble
    import sklearn.tree

    def boom(*_a, **_k):
        raise AssertionError("scikit-learn predict must not be on the serving path")

    monkeypatch.setattr(sklearn.ensemble.RandomForestRegressor, "predict", boom)
    monkeypatch.setattr(sklearn.tree.DecisionTreeRegressor, "predict", boom)
    X = build_dataset(history).X[:50]
    fc = forecaster.predict(X)
    assert fc.mean.shape == fc.lo.shape == fc.hi.shape == (50,)
    assert np.all(fc.lo <= fc.mean) and np.all(fc.mean <= fc.hi) and np.all(fc.lo >= 0)
    one = forecaster.predict(X[0])
    assert one.mean.shape == (1,) and one.mean[0] == fc.mean[0]
    assert isinstance(forecaster.forest, FlatForest)
    assert forecaster.feature_names == FEATURE_NAMES
    assert forecaster.trained_from_ts < forecaster.trained_to_ts


def test_predict_rejects_bad_rows(trained):
    forecaster, _ = trained
    with pytest.raises(ValueError, match="shape"):
        forecaster.predict(np.zeros((2, 3)))
    bad = np.zeros((1, len(FEATURE_NAMES)))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        forecaster.predict(bad)


def test_every_target_encoding_trains_and_serves(history):
    ds = build_dataset(history)
    for target in ("log_ratio", "ms"):
        fc, rep = train(
            ds, target=target, leaf_values="mean", model_features=FEATURE_NAMES, **SMALL
        )
        assert rep.target == target
        assert np.isfinite(fc.predict(ds.X[:10]).mean).all()
    with pytest.raises(ValueError, match="leaf_values"):
        train(ds, leaf_values="mode", **SMALL)
    with pytest.raises(KeyError, match="unknown feature"):
        train(ds, model_features=("nope",), **SMALL)


def test_forecaster_rejects_inconsistent_parts(trained):
    forecaster, _ = trained
    kwargs = dict(
        forest=forecaster.forest,
        feature_names=forecaster.feature_names,
        model_features=forecaster.model_features,
        target=forecaster.target,
        interval_multiplier=1.0,
        spread_floor=0.01,
        nominal_coverage=0.9,
        trained_from_ts=1.0,
        trained_to_ts=2.0,
        hyperparameters={},
    )
    Forecaster(**kwargs)
    for change, msg in [
        ({"model_features": ("p95_ms",)}, "expects"),
        ({"model_features": ("bogus",) * 4}, "model_features"),
        ({"interval_multiplier": -1.0}, "interval_multiplier"),
        ({"nominal_coverage": 1.0}, "nominal_coverage"),
        ({"trained_from_ts": 3.0}, "trained_from_ts"),
        ({"target": "sqrt"}, "target"),
    ]:
        with pytest.raises(ValueError, match=msg):
            Forecaster(**{**kwargs, **change})


# ------------------------------------------------------------------------------ components
def test_leaf_medians_replace_leaf_means():
    from sklearn.ensemble import RandomForestRegressor

    X = np.repeat(np.array([[0.0], [1.0]]), 5, axis=0)
    y = np.array([1, 1, 1, 1, 100, 5, 6, 7, 8, 9], dtype=float)
    rf = RandomForestRegressor(n_estimators=3, bootstrap=False, random_state=0).fit(X, y)
    flat = refit_leaf_medians(FlatForest.from_sklearn(rf), X, y)
    assert np.array_equal(flat.predict(np.array([[0.0], [1.0]])), [1.0, 7.0])
    assert rf.predict(np.array([[0.0]]))[0] == pytest.approx(20.8)  # the mean it replaced


def test_conformal_quantile_rank():
    scores = np.arange(1, 11, dtype=float)  # 1..10
    assert conformal_quantile(scores, 0.9) == 10.0  # ceil(11 * 0.9) = 10th
    assert conformal_quantile(scores, 0.5) == 6.0  # ceil(5.5) = 6th
    with pytest.raises(ValueError):
        conformal_quantile(np.array([]), 0.9)


def test_regression_metrics_and_coverage():
    y = np.array([100.0, 200.0, 300.0, 400.0])
    m = regression_metrics(y, y + np.array([10.0, -10.0, 30.0, -30.0]))
    assert m.mae_ms == 20.0
    assert m.rmse_ms == pytest.approx(math.sqrt((100 + 100 + 900 + 900) / 4))
    assert m.r2 == pytest.approx(1 - 2000 / 50000)
    assert m.mape_pct == pytest.approx(100 * np.mean([0.1, 0.05, 0.1, 0.075]))
    assert regression_metrics(np.ones(3), np.ones(3)).r2 == 1.0
    assert regression_metrics(np.ones(3), np.zeros(3)).r2 == 0.0
    assert regression_metrics(np.zeros(2), np.array([0.5, 0.5])).mape_pct == 50.0  # 1 ms floor
    assert interval_coverage(y, y - 1, y + 1) == 1.0
    assert interval_coverage(y, y + 1, y + 2) == 0.0
    assert improvement(75.0, 100.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="length"):
        regression_metrics(y, y[:2])
    with pytest.raises(ValueError, match="finite"):
        regression_metrics(y, np.full(4, np.nan))
    with pytest.raises(ValueError, match="lo > hi"):
        interval_coverage(y, y + 1, y - 1)
