"""Feature windows: one implementation for batch and stream, bounded, finite, strict on input."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from tools.features import (
    FEATURE_NAMES,
    LONG_TICKS,
    SHORT_TICKS,
    FeatureWindow,
    batch_features,
    batch_features_with_ready,
    feature_index,
)
from tools.telemetry import TICK_SECONDS, TelemetryPoint

T0 = 1_700_000_000.0


def series(n: int, backend: str = "b0", seed: int = 0, start: float = T0) -> list[TelemetryPoint]:
    """Load with a slow wave and noise; p95 from a queueing-shaped curve of the utilisation."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rps = max(0.0, 50 + 30 * math.sin(i / 200) + rng.normal(0, 4))
        rho = min(rps / 100, 0.97)
        p50 = 40 / (1 - rho) * rng.lognormal(0, 0.05)
        out.append(
            TelemetryPoint(
                ts=start + i * TICK_SECONDS,
                backend=backend,
                rps=rps,
                p50_ms=p50,
                p95_ms=p50 * 2.5 * rng.lognormal(0, 0.1),
                error_rate=float(min(1.0, max(0.0, rng.normal(0.01, 0.01)))),
                in_flight=rps * p50 / 1000,
            )
        )
    return out


def stream(points, **kw) -> np.ndarray:
    w = FeatureWindow(**kw)
    rows = []
    for p in points:
        w.update(p)
        rows.append(w.features())
    return np.vstack(rows)


def test_batch_equals_streaming_bit_for_bit():
    pts = series(500)
    # a gap of 3 ticks inside the series, to exercise uneven timestamps
    pts = pts[:200] + [replace(p, ts=p.ts + 3 * TICK_SECONDS) for p in pts[200:]]
    X = batch_features(pts)
    assert X.shape == (500, len(FEATURE_NAMES))
    assert X.dtype == np.float64
    assert np.array_equal(X, stream(pts))


def test_partial_window_gives_finite_features_and_ready_flag():
    pts = series(LONG_TICKS + 5)
    X, ready = batch_features_with_ready(pts)
    assert np.isfinite(X).all()
    assert not ready[: LONG_TICKS - 1].any() and ready[LONG_TICKS - 1 :].all()
    first = X[0]
    p = pts[0]
    assert first[feature_index("p95_ma_long")] == p.p95_ms
    assert first[feature_index("p95_slope")] == 0.0
    assert first[feature_index("p95_std_long")] == 0.0
    assert first[feature_index("rps_ma_short")] == p.rps


def test_zero_load_and_zero_latency_stay_finite():
    pts = [
        TelemetryPoint(T0 + i * TICK_SECONDS, "b0", 0.0, 0.0, 0.0, 0.0, 0.0, load_known=False)
        for i in range(3)
    ]
    assert np.isfinite(batch_features(pts)).all()


def test_known_values_constant_and_ramp():
    w = FeatureWindow()
    for i in range(LONG_TICKS):
        w.update(TelemetryPoint(T0 + i * TICK_SECONDS, "b0", 10.0, 50.0, 100.0 + 2 * i, 0.02, 1.0))
    f = dict(zip(FEATURE_NAMES, w.features(), strict=True))
    assert f["p95_slope"] == pytest.approx(2.0)  # ms per tick
    assert f["rps_slope"] == pytest.approx(0.0, abs=1e-12)
    assert f["rps_ma_long"] == pytest.approx(10.0)
    last = 100.0 + 2 * (LONG_TICKS - 1)
    assert f["p95_ms"] == last
    assert f["p95_max_long"] == last
    assert f["p95_ma_short"] == pytest.approx(last - (SHORT_TICKS - 1))
    assert f["p95_ma_long"] == pytest.approx(100.0 + (LONG_TICKS - 1))
    assert f["error_rate_ma_long"] == pytest.approx(0.02)
    assert f["tail_ratio"] == pytest.approx(f["p95_ma_short"] / 50.0)
    assert f["load_latency_ratio"] == pytest.approx(10.0 / f["p95_ma_short"])
    assert f["ms_per_request"] == pytest.approx(100.0)  # Little's law: 1 in flight at 10 rps


def test_ring_is_bounded_and_only_the_recent_ticks_count():
    pts = series(400)
    long_lived = FeatureWindow(capacity=LONG_TICKS)
    for p in pts:
        long_lived.update(p)
    fresh = FeatureWindow()
    for p in pts[-LONG_TICKS:]:
        fresh.update(p)
    assert len(long_lived) == LONG_TICKS
    assert np.array_equal(long_lived.features(), fresh.features())
    roomy = FeatureWindow(capacity=100)
    for p in pts:
        roomy.update(p)
    assert np.array_equal(roomy.features(), fresh.features())


def test_long_gap_restarts_the_window():
    pts = series(60)
    late = replace(pts[-1], ts=pts[-1].ts + (LONG_TICKS + 1) * TICK_SECONDS)
    w = FeatureWindow()
    for p in pts:
        w.update(p)
    assert w.ready
    w.update(late)
    assert not w.ready and len(w) == 1
    assert w.features()[feature_index("p95_ma_long")] == late.p95_ms


def test_rejections_leave_the_window_unchanged():
    pts = series(40)
    w = FeatureWindow("b0")
    for p in pts:
        w.update(p)
    before = w.features()
    bad = {
        "out-of-order": replace(pts[-2], ts=pts[-1].ts - 1),
        "duplicate": pts[-1],
        "backend": replace(pts[-1], ts=pts[-1].ts + 10, backend="b1"),
        "p95_ms": replace(pts[-1], ts=pts[-1].ts + 10, p95_ms=float("nan")),
        "rps": replace(pts[-1], ts=pts[-1].ts + 10, rps=-1.0),
        "p50_ms": replace(pts[-1], ts=pts[-1].ts + 10, p50_ms=float("inf")),
        "error_rate": replace(pts[-1], ts=pts[-1].ts + 10, error_rate=1.5),
    }
    for reason, p in bad.items():
        with pytest.raises(ValueError):
            w.update(p)
        assert np.array_equal(w.features(), before), reason
    assert w.last_ts == pts[-1].ts


def test_window_binds_to_first_backend_and_batch_rejects_mixed():
    w = FeatureWindow()
    w.update(series(1, backend="b2")[0])
    assert w.backend == "b2"
    mixed = series(5, "b0") + series(5, "b1", start=T0 + 1000)
    with pytest.raises(ValueError, match="backend"):
        batch_features(mixed)
    with pytest.raises(ValueError, match="out-of-order"):
        batch_features(list(reversed(series(5))))


def test_empty_window_and_bad_capacity():
    with pytest.raises(ValueError, match="no telemetry"):
        FeatureWindow().features()
    with pytest.raises(ValueError, match="capacity"):
        FeatureWindow(capacity=LONG_TICKS - 1)
    assert batch_features([]).shape == (0, len(FEATURE_NAMES))
    with pytest.raises(KeyError, match="unknown feature"):
        feature_index("nope")
