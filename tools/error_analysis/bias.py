"""Question 3, is a model systematically wrong somewhere: a one-sample t-test of the error
against 0 in each segment (backend, load band, hour of day), with Benjamini-Hochberg correction
across every segment tested together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import stats

from tools.error_analysis.rows import (
    Frozen,
    LabelInput,
    Labels,
    SkippedGroup,
    encode_labels,
    float_array,
)

SegmentKind = Literal["backend", "load_band", "hour"]


class BiasTest(Frozen):
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


class BiasReport(Frozen):
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


BIAS_ASSUMPTIONS = [
    "errors within a segment are independent (autocorrelated errors make p-values too small)",
    "the mean error is approximately normal by the central limit theorem, which is why each "
    "segment needs at least min_samples rows",
    "Benjamini-Hochberg controls the false discovery rate across all segments tested together "
    "under independence or positive dependence of the tests",
]


def _hours(hour: Sequence[int] | np.ndarray | None, ts: np.ndarray) -> np.ndarray:
    if hour is None:
        return ((np.floor(ts / 3600.0)) % 24).astype(np.int64)  # UTC hour of the timestamp
    h = float_array("hour", hour, ts.size)
    if np.any((h < 0) | (h > 23) | (h != np.floor(h))):
        raise ValueError("hour must hold whole numbers in 0..23")
    return h.astype(np.int64)


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
    p = float_array("predicted", predicted, None)
    n = p.size
    y = float_array("actual", actual, n)
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
        ld = float_array("load", load, n)
        edges = load_band_edges(ld, load_bands)
        band = np.searchsorted(edges, ld, side="right").astype(np.int64)
        dims.append(("load_band", Labels(band, _band_labels(edges))))
    if hour is not None or ts is not None:
        t = float_array("ts", ts, n) if ts is not None else np.zeros(n)
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
