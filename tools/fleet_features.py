"""Feature windows for a whole fleet in one array: every backend's features in one pass.

Why: the forecasts of every backend are refreshed on each telemetry tick, and computing
`FeatureWindow.features()` backend by backend costs about 15 µs each, nearly all of it numpy's
per-call overhead on arrays of a few dozen numbers. Here the windows of all backends live in one
(n_backends, LONG_TICKS, 6) float64 array, and one compiled loop (numba) turns it into the
(n_backends, len(FEATURE_NAMES)) matrix in a few microseconds for the whole fleet; a vectorised
numpy path that gives the same numbers is used where numba is absent. The loop is compiled on the
first `features()` call in a process (about a second of CPU, like the flat forest's walker).

Same numbers as `tools.features.FeatureWindow`, bit for bit: the same validation, the same
capacity bound on the count, the same reset after a gap longer than the long window, the same
partial-window rules, and the same floating-point operations in the same order. Where numpy
sums along an array's first axis it adds the rows one after another; where it sums a 1-D
array (the slope's denominator, the standard deviation) it uses pairwise summation with eight
accumulators, which the kernel's `pairwise_sum` reproduces and the numpy path gets by summing
exactly the valid rows. tests/test_fleet_features.py checks the equality
against `FeatureWindow` on simulated telemetry with chaos, warm-up, gaps and rejections.

Layout: each backend's rows are kept newest last, `buf[b, -1]` being its latest point; an
update shifts that backend's rows by one. Rows older than the backend's count are zero (the
array starts at zero and a reset after a gap zeroes it), which is what lets the numpy path sum
whole windows without masks. Only the last LONG_TICKS rows are kept because no feature looks
further back; `capacity` bounds the count exactly as it does for `FeatureWindow`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from tools.features import (
    _EPS_MS,
    _EPS_RPS,
    DEFAULT_CAPACITY,
    FEATURE_NAMES,
    LONG_TICKS,
    MAX_GAP_SECONDS,
    N_FEATURES,
    SHORT_TICKS,
    SLOPE_TICKS,
)
from tools.telemetry import TICK_SECONDS, TelemetryPoint

try:  # optional accelerator; the numpy path is always available and gives identical results
    import numba as _numba
except ImportError:  # pragma: no cover - exercised only where numba is absent
    _numba = None

Engine = Literal["auto", "numpy", "numba"]
HAVE_NUMBA = _numba is not None

_TS, _RPS, _INF, _P50, _P95, _ERR = range(6)
_N_COLS = 6
_FIELD_NAMES = ("ts", "rps", "in_flight", "p50_ms", "p95_ms")
_PAIRWISE_BLOCK = 128
"""numpy's pairwise summation switches to recursive halving above this many elements."""

# Every feature is one column of a per-backend "source" row:
#   [last (6) | short mean (6) | long mean (6) | slope (6) | p95 std, p95 max, 3 ratios]
_LAST, _MA_SHORT, _MA_LONG, _SLOPE, _EXTRA = 0, 6, 12, 18, 24
_N_SOURCE = 29
_COLUMN = {"rps": _RPS, "in_flight": _INF, "p50": _P50, "p95": _P95, "error_rate": _ERR}
_LAST_NAME = {
    "rps": "rps",
    "in_flight": "in_flight",
    "p50": "p50_ms",
    "p95": "p95_ms",
    "error_rate": "error_rate",
}
"""Name of the latest value of each column; its averages and slope are `<key>_ma_short` etc."""


def _source_columns() -> dict[str, int]:
    cols: dict[str, int] = {}
    for field, c in _COLUMN.items():
        cols[_LAST_NAME[field]] = _LAST + c
        cols[f"{field}_ma_short"] = _MA_SHORT + c
        cols[f"{field}_ma_long"] = _MA_LONG + c
        cols[f"{field}_slope"] = _SLOPE + c
    extras = ("p95_std_long", "p95_max_long", "tail_ratio", "load_latency_ratio", "ms_per_request")
    for k, name in enumerate(extras):
        cols[name] = _EXTRA + k
    return cols


_SOURCE = _source_columns()
_UNKNOWN = [name for name in FEATURE_NAMES if name not in _SOURCE]
_TAKE = np.array([_SOURCE.get(name, 0) for name in FEATURE_NAMES], dtype=np.int64)
"""Source column of each feature, in FEATURE_NAMES order."""


class UnknownBackendError(ValueError):
    """Telemetry for a backend the fleet was not configured with."""


class FleetWindows:
    """Bounded windows over the telemetry of a fixed set of backends, in time order.

    Per backend it behaves exactly like a `FeatureWindow`; `features()` gives the matrix whose
    row i is what `FeatureWindow.features()` gives for `backends[i]`.
    """

    __slots__ = ("_buf", "_count", "_index", "_kernel", "_last_ts", "capacity", "engine", "names")

    def __init__(
        self,
        backends: Sequence[str],
        *,
        capacity: int = DEFAULT_CAPACITY,
        engine: Engine = "auto",
    ) -> None:
        if _UNKNOWN:
            raise NotImplementedError(
                f"features {_UNKNOWN} have no fleet-wide definition in tools/fleet_features.py"
            )
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < LONG_TICKS:
            raise ValueError(f"capacity must be an int >= {LONG_TICKS} (the longest lookback)")
        names = tuple(backends)
        if not names:
            raise ValueError("a fleet needs at least one backend")
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique, got {list(names)}")
        self.names = names
        self.capacity = capacity
        self._index = {name: i for i, name in enumerate(names)}
        self._buf = np.zeros((len(names), LONG_TICKS, _N_COLS), dtype=np.float64)
        self._count = np.zeros(len(names), dtype=np.int64)
        self._last_ts: list[float | None] = [None] * len(names)
        self.engine = _resolve_engine(engine)
        self._kernel: Any = None

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Row of backend `name` in `features()` (UnknownBackendError if it is not in the fleet)."""
        try:
            return self._index[name]
        except KeyError:
            raise UnknownBackendError(
                f"telemetry for unknown backend {name!r}; fleet is {list(self.names)}"
            ) from None

    def count(self, name: str) -> int:
        """Points held for `name` (at most `capacity`)."""
        return int(self._count[self.index(name)])

    def ready(self, name: str) -> bool:
        """True once `name`'s window holds a full long lookback."""
        return self.count(name) >= LONG_TICKS

    def last_ts(self, name: str) -> float | None:
        return self._last_ts[self.index(name)]

    def update(self, point: TelemetryPoint) -> None:
        """Append one tick to its backend's window. Raises UnknownBackendError for a backend
        outside the fleet and ValueError for a point not newer than that backend's last one or
        a non-finite / negative / out-of-range value; nothing changes then."""
        i = self.index(point.backend)
        row = (point.ts, point.rps, point.in_flight, point.p50_ms, point.p95_ms, point.error_rate)
        for name, v in zip(_FIELD_NAMES, row, strict=False):
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {v!r} ({point.backend})")
        if not (0.0 <= point.error_rate <= 1.0):
            raise ValueError(f"error_rate must lie in [0, 1], got {point.error_rate!r}")
        last = self._last_ts[i]
        buf = self._buf[i]
        if last is not None:
            if point.ts <= last:
                raise ValueError(
                    f"out-of-order or duplicate point for {point.backend!r}: ts {point.ts} is not "
                    f"after the last ts {last}"
                )
            if point.ts - last > MAX_GAP_SECONDS:
                buf[:] = 0.0  # stale history: start afresh (older rows must read as zero)
                self._count[i] = 0
        buf[:-1] = buf[1:]
        buf[-1] = row
        self._count[i] = min(int(self._count[i]) + 1, self.capacity)
        self._last_ts[i] = point.ts

    def features(self) -> np.ndarray:
        """The feature matrix (float64, (n_backends, len(FEATURE_NAMES))) for each backend's
        latest tick, rows in fleet order. ValueError if some backend has no telemetry yet."""
        count = self._count
        if self.engine == "numba":
            kernel = self._kernel
            if kernel is None:
                kernel = self._kernel = _numba_kernel()
            out = np.empty((self._buf.shape[0], N_FEATURES), dtype=np.float64)
            if kernel(self._buf, count, _TAKE, out):  # it checks the counts first
                self._raise_empty()
            return out
        if not count.all():
            self._raise_empty()
        return _features_numpy(self._buf, count)[:, _TAKE]

    def _raise_empty(self) -> None:
        empty = [n for n, c in zip(self.names, self._count.tolist(), strict=True) if c == 0]
        raise ValueError(f"no telemetry in the window of {empty} yet")

    def features_of(self, name: str) -> np.ndarray:
        """The feature vector of one backend (a row of `features()`)."""
        i = self.index(name)
        if self._count[i] == 0:
            raise ValueError(f"no telemetry in the window of {name!r} yet")
        return _features_numpy(self._buf[i : i + 1], self._count[i : i + 1])[0, _TAKE]

    def window(self, name: str) -> BackendWindow:
        """A `FeatureWindow`-like view of one backend's window."""
        return BackendWindow(self, self.index(name))


class BackendWindow:
    """One backend's window inside a `FleetWindows`, with `FeatureWindow`'s interface."""

    __slots__ = ("_fleet", "_i")

    def __init__(self, fleet: FleetWindows, i: int) -> None:
        self._fleet = fleet
        self._i = i

    @property
    def backend(self) -> str:
        return self._fleet.names[self._i]

    @property
    def capacity(self) -> int:
        return self._fleet.capacity

    def __len__(self) -> int:
        return int(self._fleet._count[self._i])

    @property
    def ready(self) -> bool:
        return len(self) >= LONG_TICKS

    @property
    def last_ts(self) -> float | None:
        return self._fleet._last_ts[self._i]

    def update(self, point: TelemetryPoint) -> None:
        if point.backend != self.backend:
            raise ValueError(
                f"point for backend {point.backend!r} given to the window of {self.backend!r}"
            )
        self._fleet.update(point)

    def features(self) -> np.ndarray:
        return self._fleet.features_of(self.backend)


# ------------------------------------------------------------------------------ numpy path
_add = np.add.reduce
_max = np.maximum.reduce
_RATIO_NUM = np.array([_P95, _RPS, _INF])
_RATIO_DEN = np.array([_P50, _P95, _RPS])
_RATIO_SCALE = np.array([1.0, 1.0, 1000.0])
_RATIO_EPS = np.array([_EPS_MS, _EPS_MS, _EPS_RPS])


def _features_numpy(W: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Source rows (n, _N_SOURCE) from windows W (n, LONG_TICKS, 6), rows older than each
    count zero. Sums along a window run row after row as FeatureWindow's do; the two 1-D sums
    use numpy's pairwise summation over exactly the valid rows, as FeatureWindow's do."""
    n = W.shape[0]
    m = np.minimum(count, LONG_TICKS)
    m_short = np.minimum(m, SHORT_TICKS)
    m_slope = np.minimum(m, SLOPE_TICKS)
    src = np.empty((n, _N_SOURCE), dtype=np.float64)
    src[:, _LAST : _LAST + 6] = W[:, -1]
    ma_long = _add(W, axis=1) / m[:, None]
    src[:, _MA_LONG : _MA_LONG + 6] = ma_long
    ma_short = _add(W[:, -SHORT_TICKS:], axis=1) / m_short[:, None]
    src[:, _MA_SHORT : _MA_SHORT + 6] = ma_short

    rows = W[:, -SLOPE_TICKS:]
    valid = np.arange(SLOPE_TICKS) >= (SLOPE_TICKS - m_slope)[:, None]
    centred = (rows - (_add(rows, axis=1) / m_slope[:, None])[:, None, :]) * valid[:, :, None]
    t = centred[:, :, _TS]
    tt = t * t
    den = _add(tt, axis=1)
    p95 = W[:, :, _P95]
    dev = (p95 - ma_long[:, _P95, None]) * (np.arange(LONG_TICKS) >= (LONG_TICKS - m)[:, None])
    dd = dev * dev
    ssq = _add(dd, axis=1)
    for b in np.flatnonzero(m < LONG_TICKS).tolist():  # warm-up or after a gap: sum valid rows
        ssq[b] = _add(dd[b, LONG_TICKS - m[b] :])
        if m_slope[b] < SLOPE_TICKS:
            den[b] = _add(tt[b, SLOPE_TICKS - m_slope[b] :])
    den += m_slope < 2  # fewer than two points: the numerator is 0, and so is the slope
    src[:, _SLOPE : _SLOPE + 6] = (
        _add(t[:, :, None] * centred, axis=1) * (TICK_SECONDS / den)[:, None]
    )
    src[:, _EXTRA] = np.sqrt(ssq / m)
    src[:, _EXTRA + 1] = _max(p95, axis=1)  # p95 >= 0, so the zero rows never win
    src[:, _EXTRA + 2 :] = (ma_short[:, _RATIO_NUM] * _RATIO_SCALE) / np.maximum(
        ma_short[:, _RATIO_DEN], _RATIO_EPS
    )
    return src


# ------------------------------------------------------------------------------ numba path
def _resolve_engine(engine: str) -> str:
    if engine == "auto":
        return "numba" if HAVE_NUMBA else "numpy"
    if engine == "numba" and not HAVE_NUMBA:
        raise ValueError("engine 'numba' requested but numba is not installed")
    if engine not in ("numpy", "numba"):
        raise ValueError(f"unknown engine {engine!r}; use 'auto', 'numpy' or 'numba'")
    return engine


_NUMBA_KERNEL: Any = None


def _numba_kernel() -> Any:
    """Compile (once per process, about a second) and return the fleet feature kernel."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is not None:
        return _NUMBA_KERNEL
    if LONG_TICKS > _PAIRWISE_BLOCK:  # pragma: no cover - the windows are far shorter
        raise NotImplementedError("the numba kernel sums at most 128 rows pairwise")
    njit = _numba.njit(nogil=True, cache=False)
    R, S, L = LONG_TICKS, SHORT_TICKS, SLOPE_TICKS
    tick, eps_ms, eps_rps = TICK_SECONDS, _EPS_MS, _EPS_RPS

    @njit
    def pairwise_sum(a, n):  # pragma: no cover - compiled
        # numpy's pairwise summation of a contiguous 1-D array of n <= 128 elements.
        if n < 8:
            res = -0.0
            for i in range(n):
                res += a[i]
            return res
        r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
        r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
        i = 8
        stop = n - n % 8
        while i < stop:
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[i]
            i += 1
        return res

    @njit
    def kernel(buf, count, take, out):  # pragma: no cover - compiled
        src = np.empty(_N_SOURCE)
        mean = np.empty(_N_COLS)
        centred = np.empty((L, _N_COLS))
        scratch = np.empty(R)
        for b in range(buf.shape[0]):
            if count[b] == 0:
                return True
        for b in range(buf.shape[0]):
            w = buf[b]
            m = min(count[b], R)
            first = R - m
            ms = min(m, S)
            ml = min(m, L)
            for c in range(_N_COLS):
                src[_LAST + c] = w[R - 1, c]
                # means: the rows added one after another, then divided by their number
                s = w[first, c]
                for k in range(first + 1, R):
                    s += w[k, c]
                src[_MA_LONG + c] = s / m
                s = w[R - ms, c]
                for k in range(R - ms + 1, R):
                    s += w[k, c]
                src[_MA_SHORT + c] = s / ms
            # least-squares slopes against the timestamps, per tick (0 below two points)
            if ml < 2:
                for c in range(_N_COLS):
                    src[_SLOPE + c] = 0.0
            else:
                for c in range(_N_COLS):
                    s = w[R - ml, c]
                    for k in range(R - ml + 1, R):
                        s += w[k, c]
                    mean[c] = s / ml
                for k in range(ml):
                    for c in range(_N_COLS):
                        centred[k, c] = w[R - ml + k, c] - mean[c]
                    scratch[k] = centred[k, _TS] * centred[k, _TS]
                scale = tick / pairwise_sum(scratch, ml)
                for c in range(_N_COLS):
                    s = centred[0, _TS] * centred[0, c]
                    for k in range(1, ml):
                        s += centred[k, _TS] * centred[k, c]
                    src[_SLOPE + c] = s * scale
            # p95 spread and peak over the long window
            mu = src[_MA_LONG + _P95]
            peak = w[first, _P95]
            for k in range(m):
                v = w[first + k, _P95]
                d = v - mu
                scratch[k] = d * d
                if v > peak:
                    peak = v
            src[_EXTRA] = math.sqrt(pairwise_sum(scratch, m) / m)
            src[_EXTRA + 1] = peak
            short = _MA_SHORT
            src[_EXTRA + 2] = src[short + _P95] / max(src[short + _P50], eps_ms)
            src[_EXTRA + 3] = src[short + _RPS] / max(src[short + _P95], eps_ms)
            src[_EXTRA + 4] = 1000.0 * src[short + _INF] / max(src[short + _RPS], eps_rps)
            for f in range(take.shape[0]):
                out[b, f] = src[take[f]]
        return False

    _NUMBA_KERNEL = kernel
    return kernel
