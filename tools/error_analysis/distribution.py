"""Question 2, what do the errors look like: percentiles, skew, excess kurtosis and a normality
test chosen for the sample size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import stats

from tools.error_analysis.rows import Frozen, float_array

DEFAULT_PERCENTILES: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0)

SHAPIRO_MIN_N = 3
SHAPIRO_MAX_N = 5000
"""scipy's Shapiro-Wilk p-value is accurate only up to n = 5000 (it warns beyond)."""
DAGOSTINO_MIN_N = 20
"""D'Agostino-Pearson K² includes the kurtosis test, whose normal approximation needs n >= 20."""


class NormalityTest(Frozen):
    test: Literal["shapiro_wilk", "dagostino_pearson", "none"]
    statistic: float | None = None
    p_value: float | None = None
    alpha: float
    normal: bool | None = Field(None, description="None when no test was run")
    why: str = Field(description="why this test (or none) was used at this sample size")


class ErrorDistribution(Frozen):
    """Shape of the errors of one model version (or of all rows when ``model_version`` is None)."""

    model_version: str | None
    n: int
    mean_ms: float
    std_ms: float
    percentiles_ms: dict[str, float] = Field(description="'p50' -> value")
    skew: float | None = Field(None, description="sample skewness (bias-corrected); None if n < 3")
    excess_kurtosis: float | None = Field(None, description="Fisher, 0 for normal; None if n < 4")
    normality: NormalityTest
    summary: str


def normality_test(errors: Sequence[float] | np.ndarray, alpha: float = 0.05) -> NormalityTest:
    """A normality test suited to the sample size.

    * n < 3: no test (nothing can be said).
    * 3 <= n <= 5000: Shapiro-Wilk, the most powerful omnibus test for small and moderate samples;
      scipy's p-value approximation (Royston) is valid up to n = 5000.
    * n > 5000: D'Agostino-Pearson K², which combines the skewness and kurtosis tests; it is
      asymptotic and accurate for large n (it needs n >= 20), and its statistic points at *how*
      the errors depart from normal.
    * Constant errors: no test (the statistics are undefined).

    At a few thousand rows any test rejects trivial departures; read ``skew`` and
    ``excess_kurtosis`` for the size of the departure.
    """
    e = float_array("errors", errors, None)
    n = e.size
    if n < SHAPIRO_MIN_N:
        return NormalityTest(
            test="none",
            alpha=alpha,
            why=f"n = {n} is below the floor of {SHAPIRO_MIN_N} for any normality test",
        )
    if np.ptp(e) == 0:
        return NormalityTest(test="none", alpha=alpha, why="errors are constant: undefined")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        if n <= SHAPIRO_MAX_N:
            res = stats.shapiro(e)
            test, why = (
                "shapiro_wilk",
                f"Shapiro-Wilk: most powerful for {SHAPIRO_MIN_N} <= n <= {SHAPIRO_MAX_N}",
            )
        else:
            res = stats.normaltest(e)
            test, why = (
                "dagostino_pearson",
                f"D'Agostino-Pearson K²: n = {n} > {SHAPIRO_MAX_N}, beyond Shapiro-Wilk's "
                "accurate range; K² is asymptotic and suits large samples",
            )
    stat, pv = float(res.statistic), float(res.pvalue)
    if not math.isfinite(pv):
        return NormalityTest(test="none", alpha=alpha, why="test statistic undefined")
    return NormalityTest(
        test=test, statistic=stat, p_value=pv, alpha=alpha, normal=pv >= alpha, why=why
    )


def error_distribution(
    errors: Sequence[float] | np.ndarray,
    *,
    model_version: str | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    alpha: float = 0.05,
) -> ErrorDistribution:
    """Percentiles, skew, excess kurtosis and a size-appropriate normality test of the errors."""
    e = float_array("errors", errors, None)
    n = e.size
    if n == 0:
        raise ValueError("no errors to describe")
    pct = np.percentile(e, list(percentiles))
    p5, p95 = np.percentile(e, [5.0, 95.0])
    constant = np.ptp(e) == 0
    skew = None if n < 3 or constant else float(stats.skew(e, bias=False))
    kurt = None if n < 4 or constant else float(stats.kurtosis(e, fisher=True, bias=False))
    norm = normality_test(e, alpha)
    mean = float(e.mean())
    std = float(e.std(ddof=1)) if n > 1 else 0.0
    shape = []
    if skew is not None and abs(skew) >= 0.5:
        shape.append(f"{'right' if skew > 0 else 'left'}-skewed ({skew:+.2f})")
    if kurt is not None and kurt >= 1.0:
        shape.append(f"heavy-tailed (excess kurtosis {kurt:.1f})")
    if norm.normal is None:
        ntext = f"no normality test ({norm.why})"
    elif norm.normal:
        ntext = f"consistent with normal ({norm.test}, p = {norm.p_value:.3g})"
    else:
        ntext = f"not normal ({norm.test}, p = {norm.p_value:.3g})"
    who = f"model {model_version}" if model_version else "all models"
    summary = (
        f"Errors of {who} over {n} rows: mean {mean:+.1f} ms, std {std:.1f} ms, "
        f"90% of errors in [{p5:+.1f}, {p95:+.1f}] ms; "
        + (", ".join(shape) + "; " if shape else "")
        + ntext
        + "."
    )
    return ErrorDistribution(
        model_version=model_version,
        n=n,
        mean_ms=mean,
        std_ms=std,
        percentiles_ms={f"p{q:g}": float(v) for q, v in zip(percentiles, pct, strict=True)},
        skew=skew,
        excess_kurtosis=kurt,
        normality=norm,
        summary=summary,
    )
