from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tools.online_learner import LearnerParams, OnlineLearner, ResidualCorrector, RunningStats


def _linear_stream(n: int = 6000, seed: int = 0, noise: float = 5.0):
    rng = np.random.default_rng(seed)
    X = rng.normal([50.0, 10.0, 200.0], [20.0, 3.0, 60.0], size=(n, 3))
    w = np.array([2.0, -5.0, 0.5])
    y = X @ w + 100.0 + rng.normal(0.0, noise, n)
    return X, y, w


# ---------------------------------------------------------------- running statistics


def test_running_stats_match_numpy_over_uneven_batches():
    rng = np.random.default_rng(1)
    data = rng.normal([1e6, -3.0, 0.0], [1e-3, 10.0, 1.0], size=(1000, 3))  # large offset too
    rs = RunningStats(3)
    start = 0
    for size in [1, 1, 2, 7, 100, 389, 500]:
        rs.update(data[start : start + size])
        start += size
        seen = data[:start]
        np.testing.assert_allclose(rs.mean, seen.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(rs.var, seen.var(axis=0), rtol=1e-7, atol=1e-18)
    assert rs.n == 1000


def test_running_stats_first_samples_are_stable():
    rs = RunningStats(2)
    assert np.all(rs.scale() == 1.0)
    rs.update(np.array([5.0, -2.0]))
    assert np.all(rs.var == 0.0) and np.all(rs.scale() == 1.0)  # only centred, never / 0
    rs.update(np.array([5.0, 2.0]))
    assert rs.scale()[0] == 1.0 and rs.scale()[1] == pytest.approx(2.0)


def test_learner_standardises_with_the_running_statistics():
    X, y, _ = _linear_stream(n=500)
    learner = OnlineLearner(["a", "b", "c"])
    for i in range(0, 500, 50):
        learner.learn_many(X[i : i + 50], y[i : i + 50])
    arrays, meta = learner.export_state()
    np.testing.assert_allclose(arrays["x_mean"], X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(arrays["x_m2"] / 500, X.var(axis=0), rtol=1e-10)
    np.testing.assert_allclose(arrays["y_mean"][0], y.mean(), rtol=1e-12)
    assert meta["n_seen"] == 500


# ---------------------------------------------------------------- learning


def test_converges_on_a_linear_stream():
    X, y, w = _linear_stream(n=6000, noise=5.0)
    learner = OnlineLearner(["a", "b", "c"])
    errors = []
    for i in range(0, len(y), 20):  # prequential: predict, then learn
        if learner.fitted:
            errors.append(np.abs(learner.predict_many(X[i : i + 20]) - y[i : i + 20]))
        learner.learn_many(X[i : i + 20], y[i : i + 20])
    late = np.concatenate(errors[-50:]).mean()
    assert late < 1.1 * 5.0 * np.sqrt(2 / np.pi)  # within 10% of the noise floor
    coef, intercept = learner.coefficients()
    np.testing.assert_allclose([coef["a"], coef["b"], coef["c"]], w, rtol=0.05)  # SGD noise
    assert intercept == pytest.approx(100.0, abs=5.0)


def test_learn_one_with_dicts_equals_arrays():
    X, y, _ = _linear_stream(n=300)
    names = ["a", "b", "c"]
    by_dict = OnlineLearner()
    by_array = OnlineLearner(names)
    for row, target in zip(X, y, strict=True):
        by_dict.learn_one(dict(zip(names, row, strict=True)), target)
        by_array.learn_one(row, target)
    assert by_dict.feature_names == names
    x = {"a": 40.0, "b": 12.0, "c": 150.0}
    assert by_dict.predict_one(x) == by_array.predict_one([40.0, 12.0, 150.0])
    np.testing.assert_array_equal(by_dict.predict_many(X[:5]), by_array.predict_many(X[:5]))


def test_output_range_clips_a_challenger():
    X, y, _ = _linear_stream(n=500)
    learner = OnlineLearner(["a", "b", "c"], output_min=0.0)
    learner.learn_many(X, y)
    assert learner.predict_one([0.0, 1000.0, 0.0]) == 0.0


@pytest.mark.parametrize(
    "x, y",
    [
        ([1.0, float("nan"), 3.0], 1.0),
        ([1.0, float("inf"), 3.0], 1.0),
        ([1.0, 2.0, 3.0], float("nan")),
        ([1.0, 2.0, 1e300], 1.0),
    ],
)
def test_non_finite_input_is_rejected_and_nothing_changes(x, y):
    X, ys, _ = _linear_stream(n=200)
    learner = OnlineLearner(["a", "b", "c"]).learn_many(X, ys)
    before = learner.predict_many(X[:10])
    with pytest.raises(ValueError, match="NaN, infinite or out-of-range"):
        learner.learn_one(x, y)
    with pytest.raises(ValueError, match="NaN, infinite or out-of-range"):
        learner.learn_many(np.vstack([X[:3], [x]]), np.append(ys[:3], y))
    assert learner.n_seen == 200
    np.testing.assert_array_equal(learner.predict_many(X[:10]), before)
    if not np.all(np.isfinite(x)):
        with pytest.raises(ValueError, match="feature 'b'"):
            learner.predict_one(x)


def test_shape_and_name_errors_are_clear():
    learner = OnlineLearner(["a", "b"])
    with pytest.raises(ValueError, match="expected 2 features"):
        learner.learn_one([1.0, 2.0, 3.0], 1.0)
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        learner.learn_one({"a": 1.0}, 1.0)
    with pytest.raises(ValueError, match="unexpected \\['z'\\]"):
        learner.learn_one({"a": 1.0, "b": 2.0, "z": 3.0}, 1.0)
    with pytest.raises(ValueError, match="not seen any sample"):
        learner.predict_one([1.0, 2.0])
    with pytest.raises(ValueError, match="y must hold 2"):
        learner.learn_many([[1.0, 2.0], [3.0, 4.0]], [1.0])


# ---------------------------------------------------------------- state


def _roundtrip(arrays: dict[str, np.ndarray], meta: dict) -> tuple[dict[str, np.ndarray], dict]:
    """Through the formats a model registry would use: .npz (no pickle) and JSON."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    return loaded, json.loads(json.dumps(meta))


def test_state_round_trips_and_keeps_learning_identically():
    X, y, _ = _linear_stream(n=1000)
    original = OnlineLearner(["a", "b", "c"], learning_rate="invscaling", eta0=0.01)
    original.learn_many(X[:500], y[:500])
    restored = OnlineLearner.from_state(*_roundtrip(*original.export_state()))
    np.testing.assert_array_equal(restored.predict_many(X), original.predict_many(X))
    assert restored.params == original.params and restored.n_seen == 500
    for i in range(500, 1000, 25):
        original.learn_many(X[i : i + 25], y[i : i + 25])
        restored.learn_many(X[i : i + 25], y[i : i + 25])
    np.testing.assert_array_equal(restored.predict_many(X), original.predict_many(X))


def test_unfitted_state_round_trips_and_bad_state_is_refused():
    fresh = OnlineLearner.from_state(*_roundtrip(*OnlineLearner(["a"]).export_state()))
    assert not fresh.fitted and fresh.feature_names == ["a"]
    arrays, meta = OnlineLearner(["a"]).learn_many([[1.0], [2.0]], [1.0, 2.0]).export_state()
    with pytest.raises(ValueError, match="not an online learner state"):
        OnlineLearner.from_state(arrays, {**meta, "kind": "forest"})
    with pytest.raises(ValueError, match="shape"):
        OnlineLearner.from_state({**arrays, "coef": np.zeros(3)}, meta)


# ---------------------------------------------------------------- residual correction


def _biased_base_stream(n: int = 4000, seed: int = 2):
    """The base model regresses to the mean: it under-predicts high latencies, over-predicts low."""
    rng = np.random.default_rng(seed)
    load = rng.uniform(0.0, 100.0, n)
    truth = 80.0 + 3.0 * load
    actual = truth + rng.normal(0.0, 10.0, n)
    base = 0.7 * truth + 20.0 + rng.normal(0.0, 5.0, n)
    return load[:, None], actual, base


def test_residual_correction_reduces_mae_of_a_biased_base_model():
    X, actual, base = _biased_base_stream()
    rc = ResidualCorrector(["load"])
    corrected = np.empty_like(actual)
    for i in range(0, len(actual), 10):  # prequential, in small batches as outcomes arrive
        corrected[i : i + 10] = rc.predict_many(X[i : i + 10], base[i : i + 10])
        rc.learn_many(X[i : i + 10], actual[i : i + 10], base[i : i + 10])
    half = len(actual) // 2
    base_mae = np.abs(base[half:] - actual[half:]).mean()
    corrected_mae = np.abs(corrected[half:] - actual[half:]).mean()
    assert corrected_mae < 0.5 * base_mae


def test_residual_corrector_waits_for_min_samples_and_clips():
    X, actual, base = _biased_base_stream(n=200)
    rc = ResidualCorrector(["load"], min_samples=50, max_correction_ms=5.0)
    rc.learn_many(X[:49], actual[:49], base[:49])
    assert not rc.active
    np.testing.assert_array_equal(rc.predict_many(X[:20], base[:20]), base[:20])
    with pytest.raises(ValueError, match="NaN"):
        rc.predict_one([float("nan")], 100.0)
    rc.learn_many(X[49:], actual[49:], base[49:])
    assert rc.active
    corr = rc.corrections(X, base)
    assert np.all(np.abs(corr) <= 5.0) and np.any(corr != 0.0)
    floor = ResidualCorrector(["load"], min_samples=0, min_prediction_ms=0.0)
    floor.learn_many(X, actual, base)
    assert floor.predict_one({"load": 50.0}, -100.0) >= 0.0


def test_residual_corrector_one_by_one_and_state_round_trip():
    X, actual, base = _biased_base_stream(n=300)
    rc = ResidualCorrector(["load"], params=LearnerParams(eta0=0.01))
    for x, a, b in zip(X, actual, base, strict=True):
        rc.learn_one({"load": float(x[0])}, a, b)
    restored = ResidualCorrector.from_state(*_roundtrip(*rc.export_state()))
    np.testing.assert_array_equal(restored.predict_many(X, base), rc.predict_many(X, base))
    assert restored.predict_one([50.0], 200.0) == rc.predict_one({"load": 50.0}, 200.0)
    with pytest.raises(ValueError, match="base prediction"):
        rc.predict_one([50.0], float("nan"))
