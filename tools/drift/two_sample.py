"""Two-sample drift tests (data, prediction, concept) with severities an agent can act on.

Every test compares a *reference* window with a *current* window and returns a `DriftResult`;
a call returns a `DriftReport` whose p-values are corrected for the number of tests in it.

Tests, assumptions and minimum sizes
------------------------------------
- **Data drift**, per feature: two-sample Kolmogorov-Smirnov (``ks``; effect: the KS distance D)
  while the reference has at most ``ks_max_reference`` samples. Above that, KS p-values flag
  differences too small to matter, so the effect is measured on a scale that means something:
  the normed 1-Wasserstein distance (``wasserstein``: W1 / reference sigma, i.e. "how many
  reference sigmas the distribution moved"; p-value from KS) or the population stability index
  (``psi`` over reference deciles; p-value from a chi-squared test of homogeneity on the same
  bins). Assumes independent samples within each window (autocorrelated telemetry overstates
  significance: thin it first). Minimum: ``min_samples`` per side (100 for PSI, so deciles hold
  about 10 reference samples each).
- **Prediction drift**: KS on the prediction distribution and Welch's t-test on its mean
  (effect: Cohen's d).
- **Concept drift**, on absolute errors: Welch's t-test (unequal variances; robust to the
  skew of absolute errors from about 30 samples per side) and Mann-Whitney U (no distribution
  assumption; effect: rank-biserial correlation). One-sided by default: only an *increase* of
  the error is concept drift.

Below the minimum sample size no test runs: the result says ``insufficient_data`` with both counts.
Non-finite values (missing features) are dropped and counted in the result.

Multiple testing
----------------
p-values within a report are adjusted with Benjamini-Hochberg by default: a drift report tests
many features at once, and the operator needs the share of false alarms among the flagged
features kept below ``alpha`` (FDR) without losing the power to see several features drift
together. BH holds under independence and positive dependence, which is the usual case for
correlated telemetry features. ``correction="holm"`` controls the family-wise error rate under
any dependence: use it when a single false alarm is expensive (an automatic retrain).

Severity rule
-------------
``none`` when the adjusted p-value is not below ``alpha``. Otherwise the effect size picks the
band, with cut points (small, medium, large) per measure, chosen so that they match Cohen's
0.2 / 0.5 / 0.8 standard deviations of a normal mean shift (PSI uses the industry's 0.1 / 0.25
and 0.5): below small ``low`` (real but negligible, typical of huge samples), below medium
``medium``, below large ``high``, otherwise ``critical`` -- but critical also needs strong
evidence (adjusted p < alpha / 100), else it stays ``high``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy import stats

from tools.drift.page_hinkley import robust_sigma

Severity = Literal["none", "low", "medium", "high", "critical"]
Status = Literal["ok", "drift", "insufficient_data"]
DriftKind = Literal["data", "prediction", "concept"]
Correction = Literal["benjamini-hochberg", "holm"]
DataMethod = Literal["auto", "ks", "wasserstein", "psi"]
Alternative = Literal["greater", "less", "two-sided"]

SEVERITY_ORDER: tuple[Severity, ...] = ("none", "low", "medium", "high", "critical")

#: Cut points (small, medium, large) of each effect measure.
EFFECT_BANDS: dict[str, tuple[float, float, float]] = {
    "ks_distance": (0.1, 0.2, 0.3),  # a normal mean shift of 0.2/0.5/0.8 sigma gives D≈.08/.2/.31
    "wasserstein_sigmas": (0.2, 0.5, 0.8),  # W1 / sigma equals the shift in sigmas
    "psi": (0.1, 0.25, 0.5),
    "cohen_d": (0.2, 0.5, 0.8),
    "rank_biserial": (0.11, 0.28, 0.43),  # the same normal shifts, as 2 * AUC - 1
}

DEFAULT_MIN_SAMPLES = 30
PSI_MIN_SAMPLES = 100
_PSI_FLOOR = 1e-4  # proportion floor: an empty bin would make PSI infinite
_EFFECT_CAP = 1e6  # stands for "infinite" (a constant window moved): JSON has no inf


class DriftResult(BaseModel):
    """One test of one quantity, reference window against current window."""

    kind: DriftKind
    name: str = Field(description="feature name, 'prediction' or 'abs_error'")
    test: str = Field(description="ks | wasserstein | psi | welch_t | mann_whitney_u")
    status: Status
    severity: Severity = "none"
    statistic: float | None = None
    p_value: float | None = Field(None, description="raw p-value of the test")
    p_adjusted: float | None = Field(None, description="after the report's correction")
    effect_size: float | None = None
    effect_measure: str | None = None
    n_reference: int
    n_current: int
    n_dropped: int = Field(0, description="non-finite values removed before testing")
    min_samples: int
    reference_mean: float | None = None
    current_mean: float | None = None
    detail: str = ""


class DriftReport(BaseModel):
    """Results of one call, with p-values corrected across all of its performed tests."""

    kind: DriftKind | Literal["combined"]
    alpha: float
    correction: Correction
    n_tests: int = Field(description="tests actually performed (insufficient data excluded)")
    results: list[DriftResult]
    drifted: list[str] = Field(description="names with status 'drift'")
    insufficient: list[str] = Field(description="names that could not be tested")
    max_severity: Severity
    summary: str


# --------------------------------------------------------------------------- helpers


def adjust_p_values(p_values: Sequence[float], method: Correction) -> np.ndarray:
    """Benjamini-Hochberg or Holm adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "benjamini-hochberg":
        adj = ranked * m / np.arange(1, m + 1)
        adj = np.minimum.accumulate(adj[::-1])[::-1]
    elif method == "holm":
        adj = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        raise ValueError(f"unknown correction {method!r}")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def severity_for(effect: float, measure: str, p_adjusted: float, alpha: float) -> Severity:
    """The documented severity rule (module docstring)."""
    if not p_adjusted < alpha:
        return "none"
    small, medium, large = EFFECT_BANDS[measure]
    e = abs(effect)
    if e < small:
        return "low"
    if e < medium:
        return "medium"
    if e < large or not p_adjusted < alpha / 100:
        return "high"
    return "critical"


def _clean(values: object, what: str) -> tuple[np.ndarray, int]:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected numbers") from None
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D sequence, got shape {arr.shape}")
    keep = np.isfinite(arr)
    return arr[keep], int(arr.size - keep.sum())


def _insufficient(
    kind: DriftKind, name: str, test: str, ref: np.ndarray, cur: np.ndarray, dropped: int, need: int
) -> DriftResult:
    return DriftResult(
        kind=kind,
        name=name,
        test=test,
        status="insufficient_data",
        n_reference=ref.size,
        n_current=cur.size,
        n_dropped=dropped,
        min_samples=need,
        detail=(
            f"insufficient data: {ref.size} reference and {cur.size} current samples, "
            f"need at least {need} each"
        ),
    )


def _result(
    kind: DriftKind,
    name: str,
    test: str,
    ref: np.ndarray,
    cur: np.ndarray,
    dropped: int,
    need: int,
    statistic: float,
    p_value: float,
    effect: float,
    measure: str,
) -> DriftResult:
    return DriftResult(
        kind=kind,
        name=name,
        test=test,
        status="ok",
        statistic=float(statistic),
        p_value=float(p_value),
        effect_size=float(effect),
        effect_measure=measure,
        n_reference=ref.size,
        n_current=cur.size,
        n_dropped=dropped,
        min_samples=need,
        reference_mean=float(ref.mean()),
        current_mean=float(cur.mean()),
    )


def _scale(ref: np.ndarray, cur: np.ndarray) -> float:
    """Reference noise level for norming; falls back when the reference is constant."""
    for s in (robust_sigma(ref), float(np.std(ref)), robust_sigma(cur), float(np.std(cur))):
        if s > 0:
            return s
    return 1.0


def _finite_p(p: float) -> float:
    """A test that cannot tell (all values tied) returns NaN: no evidence, p = 1."""
    p = float(p)
    return p if np.isfinite(p) else 1.0


def _cohen_d(ref: np.ndarray, cur: np.ndarray) -> float:
    n1, n2 = ref.size, cur.size
    pooled = ((n1 - 1) * ref.var(ddof=1) + (n2 - 1) * cur.var(ddof=1)) / (n1 + n2 - 2)
    diff = float(cur.mean() - ref.mean())
    if pooled > 0:
        return diff / float(np.sqrt(pooled))
    return 0.0 if diff == 0 else float(np.sign(diff)) * _EFFECT_CAP


# ------------------------------------------------------------------------ single tests


def ks_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float, float, str]:
    res = stats.ks_2samp(cur, ref)
    return float(res.statistic), _finite_p(res.pvalue), float(res.statistic), "ks_distance"


def wasserstein_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float, float, str]:
    w = float(stats.wasserstein_distance(ref, cur))
    p = _finite_p(stats.ks_2samp(cur, ref).pvalue)
    return w, p, w / _scale(ref, cur), "wasserstein_sigmas"


def psi_test(ref: np.ndarray, cur: np.ndarray, n_bins: int = 10) -> tuple[float, float, float, str]:
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, n_bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    if r.size < 2:  # constant reference: one bin; compare "equal to it" against "not"
        same = float(ref[0])
        r = np.array([ref.size, 0])
        c = np.array([int(np.sum(cur == same)), int(np.sum(cur != same))])
    pr = np.maximum(r / r.sum(), _PSI_FLOOR)
    pc = np.maximum(c / c.sum(), _PSI_FLOOR)
    psi = float(np.sum((pc - pr) * np.log(pc / pr)))
    table = np.vstack([r, c])
    table = table[:, table.sum(axis=0) > 0]
    p = 1.0 if table.shape[1] < 2 else float(stats.chi2_contingency(table).pvalue)
    return psi, p, psi, "psi"


def welch_test(
    ref: np.ndarray, cur: np.ndarray, alternative: Alternative = "two-sided"
) -> tuple[float, float, float, str]:
    d = _cohen_d(ref, cur)
    if np.ptp(ref) == 0 and np.ptp(cur) == 0:
        # Both windows constant: t is undefined, the means decide (statistic = difference).
        diff = float(cur[0] - ref[0])
        wanted = {"greater": diff > 0, "less": diff < 0, "two-sided": diff != 0}[alternative]
        return diff, 0.0 if wanted else 1.0, d, "cohen_d"
    res = stats.ttest_ind(cur, ref, equal_var=False, alternative=alternative)
    return float(res.statistic), _finite_p(res.pvalue), d, "cohen_d"


def mann_whitney_test(
    ref: np.ndarray, cur: np.ndarray, alternative: Alternative = "two-sided"
) -> tuple[float, float, float, str]:
    res = stats.mannwhitneyu(cur, ref, alternative=alternative)
    u = float(res.statistic)
    return u, _finite_p(res.pvalue), 2.0 * u / (cur.size * ref.size) - 1.0, "rank_biserial"


# ------------------------------------------------------------------------------ reports


def _finish(
    kind: DriftKind | Literal["combined"],
    results: list[DriftResult],
    alpha: float,
    correction: Correction,
) -> DriftReport:
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    tested = [r for r in results if r.status != "insufficient_data"]
    adjusted = adjust_p_values([r.p_value or 0.0 for r in tested], correction)
    out: list[DriftResult] = []
    k = 0
    for r in results:
        if r.status == "insufficient_data":
            out.append(r)
            continue
        p_adj = float(adjusted[k])
        k += 1
        assert r.effect_size is not None and r.effect_measure is not None
        sev = severity_for(r.effect_size, r.effect_measure, p_adj, alpha)
        status: Status = "drift" if sev != "none" else "ok"
        detail = (
            f"{r.name}: {r.test} p={r.p_value:.3g} (adjusted {p_adj:.3g}), "
            f"{r.effect_measure}={r.effect_size:.3g} -> {status}"
            + (f", severity {sev}" if sev != "none" else "")
            + f" (n_ref={r.n_reference}, n_cur={r.n_current})"
        )
        out.append(
            r.model_copy(
                update={"p_adjusted": p_adj, "severity": sev, "status": status, "detail": detail}
            )
        )
    drifted = [f"{r.name}[{r.test}]" for r in out if r.status == "drift"]
    insufficient = [f"{r.name}[{r.test}]" for r in out if r.status == "insufficient_data"]
    max_sev = max((r.severity for r in out), key=SEVERITY_ORDER.index, default="none")
    name = "BH" if correction == "benjamini-hochberg" else "Holm"
    summary = (
        f"{len(drifted)} of {len(tested)} {kind} drift tests significant "
        f"({name}-adjusted alpha={alpha:g}); max severity {max_sev}"
    )
    if drifted:
        worst = sorted(
            (r for r in out if r.status == "drift"),
            key=lambda r: -SEVERITY_ORDER.index(r.severity),
        )
        summary += ": " + ", ".join(
            f"{r.name} ({r.severity}, {r.effect_measure}={r.effect_size:.3g})" for r in worst[:5]
        )
    if insufficient:
        summary += f"; {len(insufficient)} not tested (insufficient data)"
    return DriftReport(
        kind=kind,
        alpha=alpha,
        correction=correction,
        n_tests=len(tested),
        results=out,
        drifted=drifted,
        insufficient=insufficient,
        max_severity=max_sev,
        summary=summary,
    )


def _columns(data: Mapping[str, object] | np.ndarray, names: Sequence[str] | None, what: str):
    if isinstance(data, Mapping):
        return {str(k): v for k, v in data.items()}
    arr = np.asarray(data, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a mapping or a 2-D array (samples x features)")
    cols = list(names) if names is not None else [f"f{i}" for i in range(arr.shape[1])]
    if len(cols) != arr.shape[1]:
        raise ValueError(f"{what}: {arr.shape[1]} columns but {len(cols)} feature names")
    return {c: arr[:, i] for i, c in enumerate(cols)}


def data_drift(
    reference: Mapping[str, object] | np.ndarray,
    current: Mapping[str, object] | np.ndarray,
    *,
    feature_names: Sequence[str] | None = None,
    method: DataMethod = "auto",
    large_method: Literal["wasserstein", "psi"] = "wasserstein",
    ks_max_reference: int = 5000,
    alpha: float = 0.05,
    correction: Correction = "benjamini-hochberg",
    min_samples: int = DEFAULT_MIN_SAMPLES,
    n_bins: int = 10,
) -> DriftReport:
    """Per-feature drift between two windows (mappings name -> values, or 2-D arrays).

    ``method="auto"`` uses KS while the reference has at most ``ks_max_reference`` samples and
    ``large_method`` above.
    """
    ref_cols = _columns(reference, feature_names, "reference")
    cur_cols = _columns(current, feature_names, "current")
    if set(ref_cols) != set(cur_cols):
        missing = sorted(set(ref_cols) ^ set(cur_cols))
        raise ValueError(f"reference and current have different features: {missing}")
    results: list[DriftResult] = []
    for name in ref_cols:
        ref, d1 = _clean(ref_cols[name], f"reference[{name!r}]")
        cur, d2 = _clean(cur_cols[name], f"current[{name!r}]")
        chosen = method
        if chosen == "auto":
            chosen = "ks" if ref.size <= ks_max_reference else large_method
        need = max(min_samples, PSI_MIN_SAMPLES) if chosen == "psi" else min_samples
        if min(ref.size, cur.size) < need:
            results.append(_insufficient("data", name, chosen, ref, cur, d1 + d2, need))
            continue
        if chosen == "ks":
            out = ks_test(ref, cur)
        elif chosen == "wasserstein":
            out = wasserstein_test(ref, cur)
        elif chosen == "psi":
            out = psi_test(ref, cur, n_bins)
        else:
            raise ValueError(f"unknown method {method!r}")
        results.append(_result("data", name, chosen, ref, cur, d1 + d2, need, *out))
    return _finish("data", results, alpha, correction)


def prediction_drift(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    *,
    alpha: float = 0.05,
    correction: Correction = "benjamini-hochberg",
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> DriftReport:
    """Drift of a model's predictions: KS on the distribution, Welch's t on the mean."""
    ref, d1 = _clean(reference, "reference predictions")
    cur, d2 = _clean(current, "current predictions")
    results = []
    for test, fn in (("ks", ks_test), ("welch_t", welch_test)):
        if min(ref.size, cur.size) < min_samples:
            results.append(
                _insufficient("prediction", "prediction", test, ref, cur, d1 + d2, min_samples)
            )
        else:
            out = fn(ref, cur)
            results.append(
                _result("prediction", "prediction", test, ref, cur, d1 + d2, min_samples, *out)
            )
    return _finish("prediction", results, alpha, correction)


def concept_drift(
    reference_abs_errors: Sequence[float] | np.ndarray,
    current_abs_errors: Sequence[float] | np.ndarray,
    *,
    alternative: Alternative = "greater",
    alpha: float = 0.05,
    correction: Correction = "benjamini-hochberg",
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> DriftReport:
    """Has the model's absolute error changed? Welch's t and Mann-Whitney U, current vs reference.

    ``alternative="greater"`` (default) tests for an increase of the error only.
    """
    ref, d1 = _clean(reference_abs_errors, "reference errors")
    cur, d2 = _clean(current_abs_errors, "current errors")
    if (ref < 0).any() or (cur < 0).any():
        raise ValueError("absolute errors must be >= 0 (pass |actual - predicted|)")
    results = []
    for test, fn in (("welch_t", welch_test), ("mann_whitney_u", mann_whitney_test)):
        if min(ref.size, cur.size) < min_samples:
            results.append(
                _insufficient("concept", "abs_error", test, ref, cur, d1 + d2, min_samples)
            )
        else:
            out = fn(ref, cur, alternative)
            results.append(
                _result("concept", "abs_error", test, ref, cur, d1 + d2, min_samples, *out)
            )
    return _finish("concept", results, alpha, correction)


def combine_reports(
    *reports: DriftReport,
    alpha: float = 0.05,
    correction: Correction = "benjamini-hochberg",
) -> DriftReport:
    """One report over the tests of several, corrected jointly (the family is all of them)."""
    raw = [
        r.model_copy(update={"status": "ok" if r.status == "drift" else r.status})
        for rep in reports
        for r in rep.results
    ]
    return _finish("combined", raw, alpha, correction)
