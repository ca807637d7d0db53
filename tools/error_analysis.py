"""Performance and error analysis of latency forecasts against the outcomes that arrived later.

Three questions, answered from arrays (one row per prediction joined to its outcome):

1. *How accurate is each model?* MAE, RMSE, R² and MAPE per model version, per backend and per
   time window (`segment_metrics`), grouped in numpy (``np.unique`` codes + ``np.bincount``), so a
   day of outcomes is scored in milliseconds.
2. *What do the errors look like?* Percentiles, skew, excess kurtosis and a normality test chosen
   for the sample size (`error_distribution`).
3. *Is a model systematically wrong somewhere?* A one-sample t-test of the error against 0 in each
   segment (backend, load band, hour of day), with Benjamini-Hochberg correction across every
   segment tested together (`segment_bias`).

Conventions:

* ``error = predicted - actual`` (ms). Positive means the model over-predicts (too pessimistic),
  negative means it under-predicts (too optimistic, the dangerous side for an SLA).
* MAPE excludes rows whose ``|actual|`` is below ``mape_floor_ms`` (default 1 ms) and reports how
  many it excluded: a 0 ms actual would make the ratio infinite, and clamping the denominator
  instead would let a handful of near-idle rows dominate the mean. MAPE is ``None`` when every row
  is excluded.
* R² follows scikit-learn for a constant actual: 1.0 for a perfect fit, else 0.0.
* Minimum sample sizes are enforced, never silently: a group below its floor is listed under
  ``skipped`` with its count and the reason, and is neither scored nor tested.

Pure: no I/O, deterministic.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

ERROR_DEFINITION = "error = predicted - actual (ms); positive = over-prediction"
DEFAULT_PERCENTILES: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0)

SHAPIRO_MIN_N = 3
SHAPIRO_MAX_N = 5000
"""scipy's Shapiro-Wilk p-value is accurate only up to n = 5000 (it warns beyond)."""
DAGOSTINO_MIN_N = 20
"""D'Agostino-Pearson K² includes the kurtosis test, whose normal approximation needs n >= 20."""

Level = Literal["model_version", "backend", "window"]
SegmentKind = Literal["backend", "load_band", "hour"]


# --------------------------------------------------------------------------------------------
# Result models
# --------------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class SegmentMetrics(_Frozen):
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


class SkippedGroup(_Frozen):
    """A group that was not scored or tested because it had too few rows."""

    what: str = Field(description="which analysis skipped it")
    key: dict[str, str | float | int | None]
    n: int
    min_required: int
    reason: str


class NormalityTest(_Frozen):
    test: Literal["shapiro_wilk", "dagostino_pearson", "none"]
    statistic: float | None = None
    p_value: float | None = None
    alpha: float
    normal: bool | None = Field(None, description="None when no test was run")
    why: str = Field(description="why this test (or none) was used at this sample size")


class ErrorDistribution(_Frozen):
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


class BiasTest(_Frozen):
    """One-sample t-test of the errors in one segment against 0."""

    model_version: str
    segment: SegmentKind
    value: str = Field(description="backend name, load band label or hour '00'..'23'")
    n: int
    mean_error_ms: float
    std_error_ms: float
    ci_low_ms: float = Field(description="t confidence interval of the mean error, level 1 - fdr")
    ci_high_ms: float
    t_statistic: float
    p_value: float
    p_adjusted: float = Field(description="Benjamini-Hochberg adjusted p-value across all tests")
    biased: bool = Field(description="p_adjusted < fdr and |mean error| >= min_bias_ms")
    direction: Literal["over_predicts", "under_predicts", "none"]


class BiasReport(_Frozen):
    method: str
    assumptions: list[str]
    fdr: float
    min_samples: int
    min_bias_ms: float
    load_band_edges: list[float] | None
    n_tested: int
    tests: list[BiasTest]
    skipped: list[SkippedGroup]
    summary: str


class ErrorAnalysisReport(_Frozen):
    """Everything `analyze_errors` found, with a plain-language summary for an operator or agent."""

    error_definition: str = ERROR_DEFINITION
    n_rows: int
    window_seconds: float
    metrics: list[SegmentMetrics]
    skipped_metrics: list[SkippedGroup]
    distributions: list[ErrorDistribution]
    bias: BiasReport
    summary: str


# --------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------


def _float_array(name: str, values: Sequence[float] | np.ndarray, n: int | None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} rows, expected {n}")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"{name} has {idx.size} NaN or infinite value(s), first at row {int(idx[0])}"
        )
    return arr


@dataclass(frozen=True, slots=True)
class Labels:
    """A label column encoded once: ``names[codes[i]]`` is row i's label (names sorted).

    Grouping works on the integer codes, which is what keeps a million rows fast.
    """

    codes: np.ndarray
    names: list


LabelInput = str | Sequence[str] | np.ndarray | Labels


def encode_labels(name: str, values: LabelInput, n: int) -> Labels:
    """Encode a string label per row (or one string for every row); reject empty or non-strings."""
    if isinstance(values, Labels):
        if values.codes.shape != (n,):
            raise ValueError(f"{name} has {values.codes.size} rows, expected {n}")
        return values
    if isinstance(values, str):
        if not values:
            raise ValueError(f"{name} is an empty label")
        return Labels(np.zeros(n, dtype=np.int64), [values])
    if not isinstance(values, np.ndarray):
        values = list(values)
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"{name}[{bad}] must be a string, got {values[bad]!r}")
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size != n:
        raise ValueError(f"{name} must be a string or {n} labels, got shape {arr.shape}")
    if arr.dtype.kind == "O":
        bad = next((i for i, v in enumerate(arr) if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"{name}[{bad}] must be a string, got {arr[bad]!r}")
        arr = arr.astype(str) if arr.size else arr.astype("U1")
    elif arr.dtype.kind != "U":
        raise ValueError(f"{name} must hold strings, got dtype {arr.dtype}")
    names, codes = np.unique(arr, return_inverse=True)
    if names.size and names[0] == "":  # sorted: an empty label would come first
        raise ValueError(f"{name}[{int(np.flatnonzero(codes == 0)[0])}] is an empty label")
    return Labels(codes.astype(np.int64).ravel(), [str(x) for x in names])


def _window_labels(ts: np.ndarray, window_seconds: float) -> Labels:
    starts, codes = np.unique(np.floor(ts / window_seconds), return_inverse=True)
    return Labels(codes.astype(np.int64).ravel(), [float(x) * window_seconds for x in starts])


def _hours(hour: Sequence[int] | np.ndarray | None, ts: np.ndarray) -> np.ndarray:
    if hour is None:
        return ((np.floor(ts / 3600.0)) % 24).astype(np.int64)  # UTC hour of the timestamp
    h = _float_array("hour", hour, ts.size)
    if np.any((h < 0) | (h > 23) | (h != np.floor(h))):
        raise ValueError("hour must hold whole numbers in 0..23")
    return h.astype(np.int64)


# --------------------------------------------------------------------------------------------
# 1. Accuracy per group
# --------------------------------------------------------------------------------------------


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
    p = _float_array("predicted", predicted, None)
    n = p.size
    y = _float_array("actual", actual, n)
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
            keys.append(_window_labels(_float_array("ts", ts, n), window_seconds))
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


# --------------------------------------------------------------------------------------------
# 2. Error distribution
# --------------------------------------------------------------------------------------------


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
    e = _float_array("errors", errors, None)
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
    e = _float_array("errors", errors, None)
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


# --------------------------------------------------------------------------------------------
# 3. Systematic bias per segment
# --------------------------------------------------------------------------------------------

BIAS_ASSUMPTIONS = [
    "errors within a segment are independent (autocorrelated errors make p-values too small)",
    "the mean error is approximately normal by the central limit theorem, which is why each "
    "segment needs at least min_samples rows",
    "Benjamini-Hochberg controls the false discovery rate across all segments tested together "
    "under independence or positive dependence of the tests",
]


def load_band_edges(load: np.ndarray, bands: int | Sequence[float]) -> np.ndarray:
    """Inner edges of the load bands: quantiles of ``load`` for an int, else the given edges."""
    if isinstance(bands, int):
        if bands < 1:
            raise ValueError("load bands must be >= 1")
        edges = np.quantile(load, np.linspace(0, 1, bands + 1)[1:-1]) if load.size else []
        return np.unique(np.asarray(edges, dtype=np.float64))
    edges = np.asarray(list(bands), dtype=np.float64)
    if edges.size and (not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0)):
        raise ValueError("load band edges must be finite and strictly increasing")
    return edges


def _band_labels(edges: np.ndarray) -> list[str]:
    bounds = [-math.inf, *edges.tolist(), math.inf]
    return [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(bounds)]


def _ttests(
    n: np.ndarray, mean: np.ndarray, std: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised one-sample t-tests against 0: t, two-sided p, CI low, CI high.

    A group whose errors are all identical (std 0) has a certain sign: p = 0 unless the mean is 0.
    """
    se = std / np.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / np.where(se > 0, se, 1.0), 0.0)
    t = np.where((se == 0) & (mean != 0), np.copysign(np.inf, mean), t)
    p = np.where(se > 0, 2.0 * stats.t.sf(np.abs(t), n - 1), np.where(mean == 0, 1.0, 0.0))
    half = stats.t.ppf(0.5 + level / 2.0, n - 1) * se
    return t, p, mean - half, mean + half


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (scipy's `false_discovery_control`, method "bh")."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    return np.asarray(stats.false_discovery_control(p, method="bh"))


def segment_bias(
    predicted: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    *,
    model_version: LabelInput,
    backend: LabelInput | None = None,
    load: Sequence[float] | np.ndarray | None = None,
    hour: Sequence[int] | np.ndarray | None = None,
    ts: Sequence[float] | np.ndarray | None = None,
    load_bands: int | Sequence[float] = 3,
    min_samples: int = 30,
    fdr: float = 0.05,
    min_bias_ms: float = 0.0,
) -> BiasReport:
    """Is each model systematically off in some segment? One family of tests, BH-corrected.

    Segments are one dimension at a time (not their cross product, which would thin the data),
    so they are marginal: a large bias on one backend also shows, diluted, in every hour and load
    band that backend serves. Read the largest effects first (the summary does).
    Segments:
    each backend, each load band (``load_bands`` quantile bands of ``load``, or explicit inner
    edges), and each hour of day (``hour``, or the UTC hour of ``ts``). Each is tested within each
    model version, since mixing versions would blur their biases. A dimension whose input is not
    given is not tested. Segments with fewer than ``min_samples`` rows are skipped and listed.

    A segment is flagged ``biased`` when its BH-adjusted p-value is below ``fdr`` and the mean
    error is at least ``min_bias_ms`` in size (0 by default; set it so that a huge sample does not
    flag a bias too small to matter).
    """
    p = _float_array("predicted", predicted, None)
    n = p.size
    y = _float_array("actual", actual, n)
    if min_samples < 2:
        raise ValueError("min_samples must be >= 2 for a t-test")
    if not 0 < fdr < 1:
        raise ValueError("fdr must be in (0, 1)")
    if min_bias_ms < 0:
        raise ValueError("min_bias_ms must be >= 0")
    versions = encode_labels("model_version", model_version, n)
    err = p - y

    dims: list[tuple[SegmentKind, Labels]] = []
    if backend is not None:
        dims.append(("backend", encode_labels("backend", backend, n)))
    edges: np.ndarray | None = None
    if load is not None:
        ld = _float_array("load", load, n)
        edges = load_band_edges(ld, load_bands)
        band = np.searchsorted(edges, ld, side="right").astype(np.int64)
        dims.append(("load_band", Labels(band, _band_labels(edges))))
    if hour is not None or ts is not None:
        t = _float_array("ts", ts, n) if ts is not None else np.zeros(n)
        dims.append(("hour", Labels(_hours(hour, t), [f"{h:02d}" for h in range(24)])))

    raw: list[dict] = []
    skipped: list[SkippedGroup] = []
    for kind, lab in dims:
        k = len(lab.names)
        combined = versions.codes * k + lab.codes  # version-major: results sorted by version
        present, code = np.unique(combined, return_inverse=True)
        code = code.ravel()
        g = present.size
        cnt = np.bincount(code, minlength=g).astype(np.float64)
        mean = np.bincount(code, weights=err, minlength=g) / cnt
        ss = np.bincount(code, weights=(err - mean[code]) ** 2, minlength=g)  # two-pass
        std = np.sqrt(ss / np.maximum(cnt - 1.0, 1.0))
        ok = cnt >= min_samples
        t_stat, pv, lo, hi = _ttests(cnt, mean, std, 1.0 - fdr)
        for i, c in enumerate(present.tolist()):
            v, value = versions.names[c // k], lab.names[c % k]
            if not ok[i]:
                skipped.append(
                    SkippedGroup(
                        what="bias",
                        key={"model_version": v, kind: value},
                        n=int(cnt[i]),
                        min_required=min_samples,
                        reason=f"{int(cnt[i])} rows < minimum {min_samples}",
                    )
                )
                continue
            raw.append(
                dict(
                    model_version=v,
                    segment=kind,
                    value=value,
                    n=int(cnt[i]),
                    mean_error_ms=float(mean[i]),
                    std_error_ms=float(std[i]),
                    ci_low_ms=float(lo[i]),
                    ci_high_ms=float(hi[i]),
                    t_statistic=float(t_stat[i]),
                    p_value=float(pv[i]),
                )
            )
    raw.sort(key=lambda r: r["model_version"])  # stable: per version, backend, load, hour
    adjusted = benjamini_hochberg([r["p_value"] for r in raw])
    tests: list[BiasTest] = []
    for r, pa in zip(raw, adjusted, strict=True):
        biased = bool(pa < fdr and abs(r["mean_error_ms"]) >= min_bias_ms)
        direction = "none"
        if biased:
            direction = "over_predicts" if r["mean_error_ms"] > 0 else "under_predicts"
        tests.append(BiasTest(**r, p_adjusted=float(pa), biased=biased, direction=direction))

    flagged = [t for t in tests if t.biased]
    if not dims:
        summary = "No segment labels given (backend, load or hour/ts): no bias test run."
    elif not tests:
        summary = (
            f"No segment reached {min_samples} rows: no bias test run ({len(skipped)} skipped)."
        )
    elif not flagged:
        summary = (
            f"No systematic bias: {len(tests)} segments tested, none significant after "
            f"Benjamini-Hochberg at FDR {fdr:g}"
            + (f" ({len(skipped)} skipped below {min_samples} rows)." if skipped else ".")
        )
    else:
        worst = sorted(flagged, key=lambda t: -abs(t.mean_error_ms))[:3]
        parts = [
            f"model {t.model_version} {t.direction.replace('_', '-')} by "
            f"{abs(t.mean_error_ms):.1f} ms on {t.segment.replace('_', ' ')} {t.value} "
            f"(n={t.n}, adj. p={t.p_adjusted:.2g})"
            for t in worst
        ]
        summary = (
            f"{len(flagged)} of {len(tests)} segments show systematic bias (BH, FDR {fdr:g}); "
            "largest: " + "; ".join(parts) + "."
        )
    return BiasReport(
        method="one-sample t-test of error against 0 per segment, Benjamini-Hochberg across all",
        assumptions=BIAS_ASSUMPTIONS,
        fdr=fdr,
        min_samples=min_samples,
        min_bias_ms=min_bias_ms,
        load_band_edges=None if edges is None else [float(x) for x in edges],
        n_tested=len(tests),
        tests=tests,
        skipped=skipped,
        summary=summary,
    )


# --------------------------------------------------------------------------------------------
# All together
# --------------------------------------------------------------------------------------------


def analyze_errors(
    predicted: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    *,
    model_version: LabelInput,
    backend: LabelInput,
    ts: Sequence[float] | np.ndarray,
    load: Sequence[float] | np.ndarray | None = None,
    hour: Sequence[int] | np.ndarray | None = None,
    window_seconds: float = 3600.0,
    min_metric_samples: int = 10,
    min_test_samples: int = 30,
    load_bands: int | Sequence[float] = 3,
    fdr: float = 0.05,
    min_bias_ms: float = 0.0,
    normality_alpha: float = 0.05,
    mape_floor_ms: float = 1.0,
) -> ErrorAnalysisReport:
    """The full error analysis of joined predictions and outcomes.

    Metrics at three levels: per model version, per version and backend, per version and time
    window. The error distribution per model version. Bias per segment (backend, load band, hour;
    hour is the UTC hour of ``ts`` unless ``hour`` is given), BH-corrected across all segments.
    """
    p = _float_array("predicted", predicted, None)
    n = p.size
    if n == 0:
        raise ValueError("no rows to analyse")
    y = _float_array("actual", actual, n)
    t = _float_array("ts", ts, n)
    versions = encode_labels("model_version", model_version, n)
    backends = encode_labels("backend", backend, n)
    common = dict(
        model_version=versions,
        backend=backends,
        ts=t,
        window_seconds=window_seconds,
        min_samples=min_metric_samples,
        mape_floor_ms=mape_floor_ms,
    )
    metrics: list[SegmentMetrics] = []
    skipped: list[SkippedGroup] = []
    for by in (("model_version",), ("model_version", "backend"), ("model_version", "window")):
        m, s = segment_metrics(p, y, by=by, **common)
        metrics += m
        skipped += s
    err = p - y
    dists = [
        error_distribution(err[versions.codes == i], model_version=v, alpha=normality_alpha)
        for i, v in enumerate(versions.names)
    ]
    bias = segment_bias(
        p,
        y,
        model_version=versions,
        backend=backends,
        load=load,
        hour=hour,
        ts=t,
        load_bands=load_bands,
        min_samples=min_test_samples,
        fdr=fdr,
        min_bias_ms=min_bias_ms,
    )
    overall = [m for m in metrics if m.backend is None and m.window_start is None]
    lines = [
        f"model {m.model_version}: MAE {m.mae_ms:.1f} ms, RMSE {m.rmse_ms:.1f} ms, "
        f"R² {m.r2:.2f}"
        + (f", MAPE {m.mape_pct:.1f}%" if m.mape_pct is not None else "")
        + f" (n={m.n})"
        for m in overall
    ]
    too_small = [s.key["model_version"] for s in skipped if set(s.key) == {"model_version"}]
    if too_small:
        lines.append(f"too few rows to score model(s) {', '.join(map(str, too_small))}")
    summary = f"{n} outcomes analysed. " + "; ".join(lines) + ". " + bias.summary
    return ErrorAnalysisReport(
        n_rows=n,
        window_seconds=window_seconds,
        metrics=metrics,
        skipped_metrics=skipped,
        distributions=dists,
        bias=bias,
        summary=summary,
    )
