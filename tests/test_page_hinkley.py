"""Page-Hinkley: river parity, batch == streaming, calibrated mode, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.drift.page_hinkley import PageHinkley, robust_sigma

drift = pytest.importorskip("river.drift")

MODES = ["up", "down", "both"]


def _river_streams() -> dict[str, np.ndarray]:
    """The reference streams of river's own drift-detector tests, built exactly as there."""
    np.random.seed(12345)
    s1 = np.concatenate((np.random.randint(2, size=1000), np.random.randint(8, size=1000)))
    np.random.seed(12345)
    s2 = np.concatenate(
        [
            [np.random.binomial(1, 0.2) for _ in range(1000)],
            [np.random.binomial(1, 0.8) for _ in range(1000)],
        ]
    ).astype(int)
    np.random.seed(12345)
    s3 = np.concatenate(
        (
            np.random.normal(0.0, 0.1, 500) > 0,
            np.random.normal(0.25, 0.1, 500) > 0,
            np.random.normal(0.0, 0.1, 500) > 0,
            np.random.normal(0.25, 0.1, 500) > 0,
        )
    ).astype(int)
    return {"data_stream_1": s1, "data_stream_2": s2, "data_stream_3": s3}


STREAMS = _river_streams()


def _river_detections(detector, stream) -> list[int]:
    out = []
    for i, val in enumerate(stream):
        detector.update(val)
        if detector.drift_detected:
            out.append(i)
    return out


def _streaming(detector: PageHinkley, stream) -> list[int]:
    return [i for i, v in enumerate(stream) if detector.update(v)]


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("mode", MODES)
def test_reproduces_river_on_its_reference_streams(name, mode):
    stream = STREAMS[name]
    expected = _river_detections(drift.PageHinkley(mode=mode), stream)
    assert _streaming(PageHinkley(mode=mode), stream) == expected
    assert PageHinkley(mode=mode).detect(stream) == expected


def test_matches_the_indices_hard_coded_in_rivers_tests():
    # river/drift/test_drift_detectors.py::test_page_hinkley (data_stream_3).
    s3 = STREAMS["data_stream_3"]
    assert PageHinkley(mode="up").detect(s3) == [588, 1681]
    assert PageHinkley(mode="down").detect(s3) == [1172]
    assert PageHinkley(mode="both").detect(s3) == [588, 1097, 1585]


@pytest.mark.parametrize("mode", MODES)
def test_reproduces_river_on_noise_with_shifts_and_other_parameters(mode):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 1, 3000), rng.normal(1.5, 2, 3000), rng.normal(-1, 1, 2000)])
    for params in (
        {},
        {"min_instances": 5, "delta": 0.1, "threshold": 10.0},
        {"alpha": 0.99, "threshold": 20.0},
    ):
        expected = _river_detections(drift.PageHinkley(mode=mode, **params), x)
        assert expected, "the stream should make river fire"
        assert PageHinkley(mode=mode, **params).detect(x) == expected


def test_lazy_reset_and_min_instances_follow_river():
    ph = PageHinkley(mode="up", min_instances=3, threshold=1.0, delta=0.0)
    assert [ph.update(v) for v in (0, 0, 0, 10)] == [False, False, False, True]
    # The state of the detection stays readable until the next sample arrives.
    assert ph.drift_detected and ph.n_segment == 4
    assert ph.update(10) is False  # first sample of a new segment
    assert not ph.drift_detected and ph.n_segment == 1
    # min_instances counts from the reset: the 2nd new sample cannot fire, the 3rd can.
    assert [ph.update(v) for v in (-50, 50)] == [False, True]
    river = drift.PageHinkley(mode="up", min_instances=3, threshold=1.0, delta=0.0)
    stream = (0, 0, 0, 10, 10, -50, 50)
    assert _river_detections(river, stream) == [3, 6]


# ------------------------------------------------------------------ batch == streaming

_params = st.fixed_dictionaries(
    {
        "min_instances": st.integers(1, 60),
        "mode": st.sampled_from(MODES),
        "alpha": st.sampled_from([1.0, 0.9999, 0.99, 0.5]),
        "delta": st.sampled_from([0.0, 0.005, 0.1, 1.0, "auto"]),
        "threshold": st.sampled_from([0.1, 1.0, 5.0, 50.0, "auto"]),
        "warmup": st.integers(2, 80),
        "threshold_sigmas": st.sampled_from([1.0, 5.0, 25.0]),
    }
)
_values = st.lists(
    st.one_of(
        st.integers(-5, 5).map(float),
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    ),
    max_size=300,
)


def _split_feed(ph: PageHinkley, x: np.ndarray, cuts: list[int]) -> list[int]:
    """Feed ``x`` in batches cut at ``cuts``, every third batch through `update`."""
    out: list[int] = []
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(x)), len(x)]
    for j, (a, b) in enumerate(itertools.pairwise(bounds)):
        if j % 3 == 2:
            out += [a + i for i, v in enumerate(x[a:b]) if ph.update(v)]
        else:
            out += [a + i for i in ph.detect(x[a:b])]
    return out


def _state(ph: PageHinkley) -> tuple:
    return (ph.drift_detected, ph.n_segment, ph.n_detections, ph.delta_, ph.threshold_)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=_params, values=_values, cuts=st.lists(st.integers(0, 300), max_size=4))
def test_detect_equals_update_one_by_one(params, values, cuts):
    x = np.asarray(values, dtype=float)
    one_by_one = PageHinkley(**params)
    expected = _streaming(one_by_one, x)
    batch = PageHinkley(**params)
    assert batch.detect(x) == expected
    assert _state(batch) == _state(one_by_one)
    mixed = PageHinkley(**params)
    assert _split_feed(mixed, x, cuts) == expected
    assert _state(mixed) == _state(one_by_one)


@settings(max_examples=40, deadline=None)
@given(
    params=_params,
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(200, 6000),
    kind=st.sampled_from(["noise", "shifts", "integers", "binary"]),
    cuts=st.lists(st.integers(0, 6000), max_size=3),
)
def test_detect_equals_update_on_long_streams(params, seed, length, kind, cuts):
    # Long enough to cross the batch path's block screening and chunk boundaries.
    rng = np.random.default_rng(seed)
    if kind == "noise":
        x = rng.normal(0, rng.uniform(0.01, 100), length)
    elif kind == "shifts":
        x = rng.normal(0, 1, length) + np.repeat(rng.normal(0, 3, 4), -(-length // 4))[:length]
    elif kind == "integers":
        x = rng.integers(-3, 4, length).astype(float)
    else:
        x = (rng.random(length) < rng.uniform(0.05, 0.5)).astype(float)
    expected = _streaming(PageHinkley(**params), x)
    assert PageHinkley(**params).detect(x) == expected
    assert _split_feed(PageHinkley(**params), x, cuts) == expected


# ------------------------------------------------------------------------ calibrated mode


def test_calibrated_mode_is_quiet_on_stationary_noise_where_river_is_not():
    x = np.random.default_rng(0).normal(0.0, 1.0, 50_000)
    river_alarms = _river_detections(drift.PageHinkley(), x)
    assert len(river_alarms) >= 20  # "dozens" with river's defaults
    for mode in MODES:
        assert PageHinkley.calibrated(mode=mode).detect(x) == []


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_calibrated_mode_catches_a_three_sigma_shift_within_tens_of_samples(seed, scale):
    rng = np.random.default_rng(seed)
    x = 5.0 + scale * np.concatenate([rng.normal(0, 1, 2000), rng.normal(3, 1, 300)])
    for mode in ("up", "both"):
        found = PageHinkley.calibrated(mode=mode).detect(x)
        assert found and 2000 <= found[0] < 2030, found
    down = PageHinkley.calibrated(mode="down").detect(-x)
    assert down and 2000 <= down[0] < 2030
    assert PageHinkley.calibrated(mode="down").detect(x) == []


def test_calibration_is_robust_to_outliers_in_the_warm_up():
    rng = np.random.default_rng(3)
    warm = rng.normal(0, 1, 100)
    warm[::10] = 50.0  # ten 50-sigma outliers: they would make the standard deviation ~15
    x = np.concatenate([warm, rng.normal(0, 1, 1900), rng.normal(3, 1, 100)])
    ph = PageHinkley.calibrated(mode="up", warmup=100)
    assert ph.detect(x[:100]) == []
    assert ph.sigma_ == pytest.approx(1.0, rel=0.3)
    found = ph.detect(x[100:])
    assert found and 2000 <= found[0] + 100 < 2030


def test_calibration_exposes_its_parameters_and_recalibrates_after_a_detection():
    rng = np.random.default_rng(4)
    ph = PageHinkley.calibrated(mode="up", warmup=50)
    assert ph.threshold_ is None and ph.delta_ is None
    ph.detect(rng.normal(0, 2, 50))
    assert ph.sigma_ == pytest.approx(2, rel=0.4)
    assert ph.threshold_ == pytest.approx(25 * ph.sigma_)
    assert ph.delta_ == pytest.approx(0.3 * ph.sigma_)
    found = ph.detect(rng.normal(20, 0.1, 200))
    assert found == [found[0]] and found[0] < 10
    ph.detect(rng.normal(20, 0.1, 60))
    assert ph.sigma_ == pytest.approx(0.1, rel=0.4)


def test_calibrated_clipping_keeps_lone_outliers_from_alarming():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 3000)
    x[1500] = 60.0  # one wild sample, e.g. a timeout recorded as a huge latency
    assert PageHinkley.calibrated(mode="up").detect(x) == []
    assert PageHinkley.calibrated(mode="up", clip_sigmas=None).detect(x) == [1500]


def test_constant_streams_never_alarm_but_a_step_on_them_does():
    ph = PageHinkley.calibrated(mode="both")
    assert ph.detect(np.full(20_000, 0.1)) == []
    found = ph.detect([0.2] * 50)
    assert found and found[0] < 10


def test_calibrated_min_sigma_floors_zero_noise_warm_ups():
    # An error stream that was exactly 0 during warm-up, then a tiny persistent offset.
    x = np.concatenate([np.zeros(100), np.full(500, 0.05)])
    floored = PageHinkley.calibrated(mode="up", warmup=100, min_sigma=0.3)
    assert floored.detect(x) == [] and floored.sigma_ == 0.3
    bare = PageHinkley.calibrated(mode="up", warmup=100)
    found = bare.detect(x)
    assert found and found[0] < 110


def test_robust_sigma():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, 5000)
    assert robust_sigma(x) == pytest.approx(3, rel=0.05)
    x[:500] = 1e6
    assert robust_sigma(x) == pytest.approx(3, rel=0.25)
    assert robust_sigma([0, 0, 0, 1]) == pytest.approx(np.std([0, 0, 0, 1]))
    assert robust_sigma([2.0, 2.0]) == 0.0
    with pytest.raises(ValueError):
        robust_sigma([])
    with pytest.raises(ValueError):
        robust_sigma([1.0, math.nan])


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e200, "x", None])
def test_update_rejects_bad_values_with_a_clear_error(bad):
    ph = PageHinkley()
    ph.update(1.0)
    with pytest.raises(ValueError, match=r"PageHinkley\.update"):
        ph.update(bad)
    assert ph.n_segment == 1


def test_detect_rejects_bad_batches_without_changing_state():
    ph = PageHinkley()
    ph.detect([1.0, 2.0])
    with pytest.raises(ValueError, match="index 2"):
        ph.detect([1.0, 2.0, math.nan, 3.0])
    with pytest.raises(ValueError, match="index 1"):
        ph.detect([1.0, -math.inf])
    with pytest.raises(ValueError, match="1-D"):
        ph.detect([[1.0, 2.0]])
    assert ph.n_segment == 2
    assert ph.detect([]) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "sideways"},
        {"min_instances": 0},
        {"min_instances": 2.5},
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"delta": -1.0},
        {"delta": "big"},
        {"threshold": 0.0},
        {"threshold": math.inf},
        {"warmup": 1},
        {"threshold_sigmas": 0.0},
        {"min_sigma": -1.0},
    ],
)
def test_invalid_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        PageHinkley(**kwargs)


def test_reset_forgets_everything():
    ph = PageHinkley(mode="up", min_instances=1, threshold=1.0)
    ph.detect([0, 0, 10])
    assert ph.n_detections == 1
    ph.reset()
    assert (ph.n_detections, ph.n_segment, ph.drift_detected) == (0, 0, False)
