"""Regression and interval metrics for latency forecasts, in the units of the data (ms).

Kept apart from the forecaster so that baselines, the forest and any later model are scored by
the same few lines, and so a report's figures can be recomputed from saved predictions.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

MAPE_FLOOR_MS = 1.0
"""MAPE divides by max(|y|, 1 ms): an idle backend reporting 0 ms must not make it infinite."""


class RegressionMetrics(BaseModel):
    """Point-forecast accuracy on one set of rows."""

    model_config = ConfigDict(frozen=True)

    n: int
    mae_ms: float
    rmse_ms: float
    r2: float
    mape_pct: float


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size == 0:
        raise ValueError("no rows to score")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite")
    return y, p


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> RegressionMetrics:
    """MAE, RMSE, R² and MAPE (%). R² follows scikit-learn's convention for a constant target:
    1.0 for a perfect fit, else 0.0, so the figure is always finite (and JSON-safe)."""
    y, p = _pair(y_true, y_pred)
    err = p - y
    ss_res = float(np.sum(err * err))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0 if ss_res == 0 else 0.0
    return RegressionMetrics(
        n=int(y.size),
        mae_ms=float(np.mean(np.abs(err))),
        rmse_ms=math.sqrt(ss_res / y.size),
        r2=r2,
        mape_pct=float(100.0 * np.mean(np.abs(err) / np.maximum(np.abs(y), MAPE_FLOOR_MS))),
    )


def interval_coverage(y_true: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of rows with lo <= y <= hi."""
    y, low = _pair(y_true, lo)
    _, high = _pair(y_true, hi)
    if np.any(low > high):
        raise ValueError("an interval has lo > hi")
    return float(np.mean((low <= y) & (y <= high)))


def improvement(model_mae: float, baseline_mae: float) -> float:
    """Relative MAE reduction against a baseline (0.25 = 25% lower); 0 when the baseline is 0."""
    if baseline_mae <= 0:
        return 0.0
    return 1.0 - model_mae / baseline_mae
