"""Telemetry features over a window of past values, for the anomaly detector.

One function computes the features of any rows of a value history, so the rows a model is trained
on and the single row scored at each tick go through the same code (no train/serve skew). Every
feature of row r reads only rows <= r: no look-ahead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FEATURES = ("value", "level", "slope", "spread", "seasonal", "change", "zscore", "shift")
"""Known features.

value     the value itself
level     mean of the last `level_window` values (recent level)
slope     value minus the value `slope_lag` ticks earlier
spread    standard deviation of the last `spread_window` values
seasonal  value minus the median of the values 1, 2, ... `season_cycles` periods earlier (0 when
          no period was found); the median keeps one odd cycle from echoing a period later
change    value minus the previous value
zscore    value minus the mean of the `baseline_window` values before it, over their std
shift     level minus the mean of the `baseline_window` values (a slower level shift)
"""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """Which features, over which windows (in ticks)."""

    names: tuple[str, ...] = ("value", "level", "slope", "spread", "seasonal")
    level_window: int = 6
    slope_lag: int = 6
    spread_window: int = 12
    season_cycles: int = 3
    baseline_window: int = 48

    def __post_init__(self) -> None:
        unknown = set(self.names) - set(FEATURES)
        if unknown or not self.names:
            raise ValueError(f"unknown or no features: {sorted(unknown)}; known: {FEATURES}")
        windows = (self.level_window, self.slope_lag, self.spread_window, self.season_cycles)
        if min(windows) < 1 or self.baseline_window < 2:
            raise ValueError("feature windows must be at least 1 tick")

    def scaled(self, k: int) -> FeatureSpec:
        """The same features over windows k times as long (a coarser view of the series)."""
        if k < 1:
            raise ValueError("scale must be >= 1")
        return replace(
            self,
            level_window=self.level_window * k,
            slope_lag=self.slope_lag * k,
            spread_window=self.spread_window * k,
        )

    def reach(self) -> int:
        """How many rows (a row itself included) the short-window features of a value reach:
        a value at row r still shows in the level, slope or spread of rows r .. r + reach - 1."""
        return max(self.level_window, self.slope_lag + 1, self.spread_window)

    def history_needed(self, period: int) -> int:
        """How many values (the current one included) the features of one row read."""
        return max(
            self.level_window,
            self.slope_lag + 1,
            self.spread_window,
            self.season_cycles * period + 1,
            self.baseline_window + 1 if {"zscore", "shift"} & set(self.names) else 2,
        )


def _rolling_mean(values: np.ndarray, rows: np.ndarray, w: int) -> np.ndarray:
    out = np.empty(len(rows))
    full = rows >= w - 1
    if full.any():
        out[full] = sliding_window_view(values, w)[rows[full] - w + 1].mean(axis=1)
    for k in np.flatnonzero(~full):
        out[k] = values[: rows[k] + 1].mean()
    return out


def _rolling_std(values: np.ndarray, rows: np.ndarray, w: int) -> np.ndarray:
    out = np.empty(len(rows))
    full = rows >= w - 1
    if full.any():
        windows = sliding_window_view(values, w)[rows[full] - w + 1]
        out[full] = windows.std(axis=1)
    for k in np.flatnonzero(~full):
        out[k] = values[: rows[k] + 1].std()
    return out


def _seasonal(values: np.ndarray, rows: np.ndarray, period: int, cycles: int) -> np.ndarray:
    if period <= 0:
        return np.zeros(len(rows))
    lagged = np.full((len(rows), cycles), np.nan)
    for c in range(1, cycles + 1):
        src = rows - c * period
        ok = src >= 0
        lagged[ok, c - 1] = values[src[ok]]
    have = ~np.all(np.isnan(lagged), axis=1)
    out = np.zeros(len(rows))
    if have.any():
        out[have] = values[rows[have]] - np.nanmedian(lagged[have], axis=1)
    return out


def _zscore(values: np.ndarray, rows: np.ndarray, w: int) -> np.ndarray:
    out = np.zeros(len(rows))
    full = rows >= w
    if full.any():
        past = sliding_window_view(values, w)[rows[full] - w]
        mu = past.mean(axis=1)
        sd = np.maximum(past.std(axis=1), 1e-9 * (1.0 + np.abs(mu)))
        out[full] = (values[rows[full]] - mu) / sd
    for k in np.flatnonzero(~full & (rows >= 2)):
        past = values[: rows[k]]
        mu = past.mean()
        out[k] = (values[rows[k]] - mu) / max(past.std(), 1e-9 * (1.0 + abs(mu)))
    return out


def feature_rows(
    values: np.ndarray, rows: np.ndarray, spec: FeatureSpec, period: int = 0
) -> np.ndarray:
    """Features (one column per name in `spec.names`) of the given rows of `values`."""
    values = np.asarray(values, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.int64)
    cols = []
    for name in spec.names:
        if name == "value":
            cols.append(values[rows])
        elif name == "level":
            cols.append(_rolling_mean(values, rows, spec.level_window))
        elif name == "slope":
            cols.append(values[rows] - values[np.maximum(rows - spec.slope_lag, 0)])
        elif name == "spread":
            cols.append(_rolling_std(values, rows, spec.spread_window))
        elif name == "seasonal":
            cols.append(_seasonal(values, rows, period, spec.season_cycles))
        elif name == "zscore":
            cols.append(_zscore(values, rows, spec.baseline_window))
        elif name == "shift":
            cols.append(
                _rolling_mean(values, rows, spec.level_window)
                - _rolling_mean(values, rows, spec.baseline_window)
            )
        elif name == "change":
            cols.append(values[rows] - values[np.maximum(rows - 1, 0)])
    return np.column_stack(cols)


def detect_period(
    values: np.ndarray, *, min_lag: int = 10, max_lag: int | None = None, min_acf: float = 0.5
) -> int:
    """The lag of the strongest autocorrelation peak above `min_acf`, or 0 if there is none.

    Autocorrelation by FFT over the given (past) values; a peak must be a local maximum so a
    slowly decaying trend does not pass for a season.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if max_lag is None:
        max_lag = n // 2
    max_lag = min(max_lag, n - 2)
    if max_lag <= min_lag:
        return 0
    x = x - x.mean()
    energy = float(np.dot(x, x))
    if energy <= 0.0:
        return 0
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[: max_lag + 2] / energy
    lags = np.arange(min_lag, max_lag + 1)
    peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1]) & (acf[lags] > min_acf)]
    if len(peaks) == 0:
        return 0
    return int(peaks[np.argmax(acf[peaks])])
