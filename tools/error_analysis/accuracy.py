"""Question 1, how accurate is each model: MAE, RMSE, R², MAPE and mean error per model version,
per backend and per time window, grouped in numpy (`np.unique` codes and `np.bincount`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from tools.error_analysis.rows import (
    Frozen,
    LabelInput,
    Labels,
    SkippedGroup,
    encode_labels,
    float_array,
)

Level = Literal["model_version", "backend", "window"]


class SegmentMetrics(Frozen):
    """Accuracy on one group of rows. A key that is ``None`` means "all" for that key."""

    model_version: str | None
    backend: str | None = None
    window_start: float | None = Field(None, description="unix seconds, start of the window")
    window_end: float | None = None
    n: int
    mae_ms: float
    rmse_ms: float
    r2: float
    mape_pct: float | None = Field(None, description="None when every actual is below the floor")
    mape_excluded: int = Field(0, description="rows left out of MAPE (|actual| < floor)")
    mean_error_ms: float = Field(description="mean of predicted - actual: the bias")


def _window_labels(ts: np.ndarray, window_seconds: float) -> Labels:
    starts, codes = np.unique(np.floor(ts / window_seconds), return_inverse=True)
    return Labels(codes.astype(np.int64).ravel(), [float(x) * window_seconds for x in starts])


def _group_codes(keys: list[Labels]) -> tuple[np.ndarray, list[tuple]]:
    """Combine encoded keys into one group code per row; return codes and each group's names."""
    combined = np.zeros(keys[0].codes.size, dtype=np.int64)
    for k in keys:
        combined = combined * len(k.names) + k.codes
    present, code = np.unique(combined, return_inverse=True)
    groups: list[tuple] = []
    for c in present.tolist():
        parts = []
        for k in reversed(keys):
            parts.append(k.names[c % len(k.names)])
            c //= len(k.names)
        groups.append(tuple(reversed(parts)))
    return code.astype(np.int64).ravel(), groups


def _r2(ss_res: float, ss_tot: float) -> float:
    """R²; a constant actual gets scikit-learn's convention (1 if perfect, else 0)."""
    if ss_tot > 0:
        return 1.0 - ss_res / ss_tot
    return 1.0 if ss_res == 0 else 0.0


def segment_metrics(
    predicted: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    *,
    model_version: LabelInput,
    backend: LabelInput | None = None,
    ts: Sequence[float] | np.ndarray | None = None,
    by: Sequence[Level] = ("model_version",),
    window_seconds: float = 3600.0,
    min_samples: int = 10,
    mape_floor_ms: float = 1.0,
) -> tuple[list[SegmentMetrics], list[SkippedGroup]]:
    """MAE, RMSE, R², MAPE and mean error for each group of the keys in ``by``.

    ``by`` is any combination of "model_version", "backend" and "window" (windows are aligned to
    multiples of ``window_seconds`` in unix time, so windows line up across calls). Groups with
    fewer than ``min_samples`` rows are returned in the second list, not scored: an R² from five
    rows is noise an agent would read as fact.
    """
    p = float_array("predicted", predicted, None)
    n = p.size
    y = float_array("actual", actual, n)
    if n == 0:
        return [], []
    if min_samples < 1:
        raise ValueError("min_samples must be >= 1")
    if mape_floor_ms <= 0:
        raise ValueError("mape_floor_ms must be > 0")
    unknown = set(by) - {"model_version", "backend", "window"}
    if unknown:
        raise ValueError(f"unknown group key(s) {sorted(unknown)}")
    keys: list[Labels] = []
    for level in by:
        if level == "model_version":
            keys.append(encode_labels("model_version", model_version, n))
        elif level == "backend":
            if backend is None:
                raise ValueError("grouping by backend needs the backend labels")
            keys.append(encode_labels("backend", backend, n))
        else:
            if ts is None:
                raise ValueError("grouping by window needs ts")
            if not window_seconds > 0:
                raise ValueError("window_seconds must be > 0")
            keys.append(_window_labels(float_array("ts", ts, n), window_seconds))
    if not keys:
        raise ValueError("group by at least one key")
    code, groups = _group_codes(keys)
    g = len(groups)

    err = p - y
    count = np.bincount(code, minlength=g).astype(np.float64)
    sum_abs = np.bincount(code, weights=np.abs(err), minlength=g)
    sum_sq = np.bincount(code, weights=err * err, minlength=g)
    sum_err = np.bincount(code, weights=err, minlength=g)
    y_mean = np.bincount(code, weights=y, minlength=g) / count
    ss_tot = np.bincount(code, weights=(y - y_mean[code]) ** 2, minlength=g)  # two-pass: stable
    mape_ok = np.abs(y) >= mape_floor_ms
    mape_n = np.bincount(code, weights=mape_ok.astype(np.float64), minlength=g)
    ratio = np.where(mape_ok, np.abs(err) / np.where(mape_ok, np.abs(y), 1.0), 0.0)
    mape_sum = np.bincount(code, weights=ratio, minlength=g)

    scored: list[SegmentMetrics] = []
    skipped: list[SkippedGroup] = []
    for i, key in enumerate(groups):
        named = dict(zip(by, key, strict=True))
        version = named.get("model_version")
        bk = named.get("backend")
        w = named.get("window")
        nk = int(count[i])
        if nk < min_samples:
            skipped.append(
                SkippedGroup(
                    what="metrics",
                    key={k: (float(v) if k == "window" else v) for k, v in named.items()},
                    n=nk,
                    min_required=min_samples,
                    reason=f"{nk} rows < minimum {min_samples}",
                )
            )
            continue
        r2 = _r2(float(sum_sq[i]), float(ss_tot[i]))
        scored.append(
            SegmentMetrics(
                model_version=version,
                backend=bk,
                window_start=None if w is None else float(w),
                window_end=None if w is None else float(w) + window_seconds,
                n=nk,
                mae_ms=float(sum_abs[i] / nk),
                rmse_ms=math.sqrt(sum_sq[i] / nk),
                r2=float(r2),
                mape_pct=None if mape_n[i] == 0 else float(100.0 * mape_sum[i] / mape_n[i]),
                mape_excluded=int(nk - mape_n[i]),
                mean_error_ms=float(sum_err[i] / nk),
            )
        )
    return scored, skipped
