"""Statistics of a series in time order that the monitors share: where an upward shift began
(CUSUM), how many independent samples an autocorrelated series is worth, and block means (the
batch-means method for correlated errors)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cusum_change_point(
    ts: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    reference_mean: float,
    k: float,
) -> float | None:
    """Where an upward shift began: the time after the last zero of the one-sided CUSUM
    S_i = max(0, S_{i-1} + x_i - reference_mean - k) (Page's change-point estimate).

    None when the CUSUM ends at zero (no shift in these values)."""
    x = np.asarray(values, dtype=np.float64)
    t = np.asarray(ts, dtype=np.float64)
    if x.size == 0 or x.size != t.size:
        return None
    s = 0.0
    last_zero = -1
    for i, v in enumerate(x - reference_mean - k):
        s = max(0.0, s + float(v))
        if s == 0.0:
            last_zero = i
    if s == 0.0 or last_zero + 1 >= x.size:
        return None
    return float(t[last_zero + 1])


def effective_sample_size(
    values: Sequence[float] | np.ndarray, max_lag: int = 20
) -> tuple[float, float]:
    """(lag-1 autocorrelation, effective sample size) of a series in time order.

    n_eff = n / (1 + 2 sum rho_k), summing lags until the first non-positive autocorrelation
    (Geyer's initial positive sequence, simplified): what the t-tests' nominal n overstates.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 3:
        return 0.0, float(n)
    x = x - x.mean()
    var = float(x @ x) / n
    if var == 0.0:
        return 0.0, float(n)
    total = 0.0
    rho1 = 0.0
    for lag in range(1, min(max_lag, n - 1) + 1):
        rho = float(x[:-lag] @ x[lag:]) / (n * var)
        if lag == 1:
            rho1 = rho
        if rho <= 0.0:
            break
        total += rho
    return rho1, n / (1.0 + 2.0 * total)


def block_means(
    ts: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    start: float,
    block_s: float,
) -> np.ndarray:
    """Mean of `values` per time block of `block_s` seconds from `start`, in block order,
    for the blocks that hold any value (the batch-means method: errors of nearby ticks are
    correlated, means of blocks longer than that correlation are close to independent)."""
    t = np.asarray(ts, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.size == 0:
        return np.empty(0)
    ids = np.floor((t - start) / block_s).astype(np.int64)
    uniq, inverse = np.unique(ids, return_inverse=True)
    sums = np.bincount(inverse, weights=v, minlength=uniq.size)
    counts = np.bincount(inverse, minlength=uniq.size)
    return sums / counts
