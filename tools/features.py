"""Per-backend feature windows: the one feature code for training (batch) and serving (stream).

A `FeatureWindow` keeps the last `capacity` ticks of one backend in a bounded ring buffer and turns
them into a fixed-length float64 vector (`FEATURE_NAMES`). `batch_features` runs this very class
over a backend's history, point by point, so a training row and a served row computed from the
same telemetry are the same numbers, bit for bit, by construction rather than by a second
implementation kept in step.

Windows (in ticks of TICK_SECONDS): short moving averages over `SHORT_TICKS` (1 min), long ones over
`LONG_TICKS` (5 min), least-squares slopes over the last `SLOPE_TICKS` (2 min) against the points'
real timestamps, in units per tick.

A window that is not yet full still gives finite features: averages and the standard deviation run
over the points it has (the deviation is 0 for one point), slopes are 0 until there are two points,
and ratios guard their denominators. `ready` turns true once `LONG_TICKS` points are held; the
forecaster trains only on ready rows, and a server may choose to trust only ready ones.

A gap longer than the long window (no point for more than LONG_TICKS ticks) empties the window:
points from before an outage no longer describe the backend, and mixing them in would fake slopes.

Not every feature feeds the forecaster: it fits on the subset that earned its place in a measured
ablation (`tools.forecaster.DEFAULT_MODEL_FEATURES`); the load and failure features describe a
backend for the router, the monitors and the operator.

The ring is written twice (at i and i + capacity) so the most recent rows are always one
contiguous slice: no copy or reordering per call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from tools.telemetry import TICK_SECONDS, TelemetryPoint

SHORT_TICKS = 6
LONG_TICKS = 30
SLOPE_TICKS = 12
DEFAULT_CAPACITY = LONG_TICKS
MAX_GAP_SECONDS = LONG_TICKS * TICK_SECONDS

FEATURE_NAMES: tuple[str, ...] = (
    # load, now and smoothed, and its trend
    "rps",
    "in_flight",
    "rps_ma_short",
    "rps_ma_long",
    "rps_slope",
    "in_flight_ma_short",
    "in_flight_slope",
    # latency, now and smoothed, its trend and spread
    "p50_ms",
    "p95_ms",
    "p50_ma_short",
    "p95_ma_short",
    "p95_ma_long",
    "p95_slope",
    "p95_std_long",
    "p95_max_long",
    # shape of the latency distribution and how load and latency relate
    "tail_ratio",
    "load_latency_ratio",
    "ms_per_request",
    # failures
    "error_rate",
    "error_rate_ma_short",
    "error_rate_ma_long",
)
"""Feature order of every vector and every model trained on them."""

N_FEATURES = len(FEATURE_NAMES)
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}

# Columns of the ring buffer.
_TS, _RPS, _INF, _P50, _P95, _ERR = range(6)
_N_COLS = 6
_EPS_MS = 1e-3
_EPS_RPS = 1e-3
_add = np.add.reduce  # the ufunc reductions directly: .mean()/.std() cost several µs in wrappers
_max = np.maximum.reduce


def feature_index(name: str) -> int:
    """Column of `name` in a feature vector (KeyError names the unknown feature)."""
    try:
        return _INDEX[name]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}; known: {', '.join(FEATURE_NAMES)}") from None


class FeatureWindow:
    """Bounded window over one backend's telemetry, in time order."""

    __slots__ = ("_buf", "_count", "_head", "_last_ts", "backend", "capacity")

    def __init__(self, backend: str | None = None, *, capacity: int = DEFAULT_CAPACITY) -> None:
        if not isinstance(capacity, int) or capacity < LONG_TICKS:
            raise ValueError(f"capacity must be an int >= {LONG_TICKS} (the longest lookback)")
        self.backend = backend
        self.capacity = capacity
        self._buf = np.zeros((2 * capacity, _N_COLS), dtype=np.float64)
        self._head = 0  # next write position in [0, capacity)
        self._count = 0
        self._last_ts: float | None = None

    def __len__(self) -> int:
        return self._count

    @property
    def ready(self) -> bool:
        """True once the window holds a full long lookback."""
        return self._count >= LONG_TICKS

    @property
    def last_ts(self) -> float | None:
        return self._last_ts

    def update(self, point: TelemetryPoint) -> None:
        """Append one tick. Raises ValueError for another backend's point, a point not newer
        than the last one, or a non-finite / negative / out-of-range value; the window is left
        unchanged then."""
        if self.backend is None:
            self.backend = point.backend
        elif point.backend != self.backend:
            raise ValueError(
                f"point for backend {point.backend!r} given to the window of {self.backend!r}"
            )
        row = (point.ts, point.rps, point.in_flight, point.p50_ms, point.p95_ms, point.error_rate)
        for name, v in zip(("ts", "rps", "in_flight", "p50_ms", "p95_ms"), row, strict=False):
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {v!r} ({self.backend})")
        if not (0.0 <= point.error_rate <= 1.0):
            raise ValueError(f"error_rate must lie in [0, 1], got {point.error_rate!r}")
        if self._last_ts is not None:
            if point.ts <= self._last_ts:
                raise ValueError(
                    f"out-of-order or duplicate point for {self.backend!r}: ts {point.ts} is not "
                    f"after the last ts {self._last_ts}"
                )
            if point.ts - self._last_ts > MAX_GAP_SECONDS:
                self._count = 0  # stale history: start afresh
        h = self._head
        self._buf[h] = row
        self._buf[h + self.capacity] = row
        self._head = h + 1 if h + 1 < self.capacity else 0
        self._count = min(self._count + 1, self.capacity)
        self._last_ts = point.ts

    def _recent(self, n: int) -> np.ndarray:
        """The last min(n, count) rows, oldest first, as a view."""
        m = min(n, self._count)
        end = self._head + self.capacity
        return self._buf[end - m : end]

    def features(self) -> np.ndarray:
        """The feature vector (float64, len(FEATURE_NAMES)) for the latest tick."""
        if self._count == 0:
            raise ValueError(f"no telemetry in the window of {self.backend!r} yet")
        long = self._recent(LONG_TICKS)
        short = long[-SHORT_TICKS:]
        last = long[-1]
        ma_long = _add(long, axis=0) / long.shape[0]
        ma_short = _add(short, axis=0) / short.shape[0]
        slope = _slopes(long[-SLOPE_TICKS:])
        p95_long = long[:, _P95]
        dev = p95_long - ma_long[_P95]

        out = np.empty(N_FEATURES, dtype=np.float64)
        out[0] = last[_RPS]
        out[1] = last[_INF]
        out[2] = ma_short[_RPS]
        out[3] = ma_long[_RPS]
        out[4] = slope[_RPS]
        out[5] = ma_short[_INF]
        out[6] = slope[_INF]
        out[7] = last[_P50]
        out[8] = last[_P95]
        out[9] = ma_short[_P50]
        out[10] = ma_short[_P95]
        out[11] = ma_long[_P95]
        out[12] = slope[_P95]
        out[13] = math.sqrt(_add(dev * dev) / dev.shape[0])
        out[14] = _max(p95_long)
        out[15] = ma_short[_P95] / max(ma_short[_P50], _EPS_MS)
        out[16] = ma_short[_RPS] / max(ma_short[_P95], _EPS_MS)
        out[17] = 1000.0 * ma_short[_INF] / max(ma_short[_RPS], _EPS_RPS)
        out[18] = last[_ERR]
        out[19] = ma_short[_ERR]
        out[20] = ma_long[_ERR]
        return out


def _slopes(rows: np.ndarray) -> np.ndarray:
    """Least-squares slope of every column against the timestamps, per tick (0 for < 2 rows)."""
    if rows.shape[0] < 2:
        return np.zeros(_N_COLS)
    centred = rows - _add(rows, axis=0) / rows.shape[0]
    t = centred[:, _TS]
    return _add(t[:, None] * centred, axis=0) * (TICK_SECONDS / _add(t * t))


def batch_features_with_ready(
    points: Iterable[TelemetryPoint], *, capacity: int = DEFAULT_CAPACITY
) -> tuple[np.ndarray, np.ndarray]:
    """Features for every point of ONE backend, in the given (time) order, and whether the
    window was ready at that point. Runs the streaming `FeatureWindow`, so it raises the same
    errors for mixed backends or out-of-order points."""
    window = FeatureWindow(capacity=capacity)
    rows: list[np.ndarray] = []
    ready: list[bool] = []
    for p in points:
        window.update(p)
        rows.append(window.features())
        ready.append(window.ready)
    if not rows:
        return np.empty((0, N_FEATURES)), np.zeros(0, dtype=bool)
    return np.vstack(rows), np.asarray(ready, dtype=bool)


def batch_features(
    points: Sequence[TelemetryPoint] | Iterable[TelemetryPoint],
    *,
    capacity: int = DEFAULT_CAPACITY,
) -> np.ndarray:
    """Features (n, len(FEATURE_NAMES)) for every point of one backend, in time order."""
    return batch_features_with_ready(points, capacity=capacity)[0]
