"""The full error analysis of joined predictions and outcomes, as one report with a summary an
operator or an agent can read: accuracy at three levels, the error distribution per model
version, and bias per segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tools.error_analysis.accuracy import SegmentMetrics, segment_metrics
from tools.error_analysis.bias import BiasReport, segment_bias
from tools.error_analysis.distribution import ErrorDistribution, error_distribution
from tools.error_analysis.rows import Frozen, LabelInput, SkippedGroup, encode_labels, float_array

ERROR_DEFINITION = "error = predicted - actual (ms); positive = over-prediction"


class ErrorAnalysisReport(Frozen):
    """Everything `analyze_errors` found, with a plain-language summary for an operator or agent."""

    error_definition: str = ERROR_DEFINITION
    n_rows: int
    window_seconds: float
    metrics: list[SegmentMetrics]
    skipped_metrics: list[SkippedGroup]
    distributions: list[ErrorDistribution]
    bias: BiasReport
    summary: str


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
    p = float_array("predicted", predicted, None)
    n = p.size
    if n == 0:
        raise ValueError("no rows to analyse")
    y = float_array("actual", actual, n)
    t = float_array("ts", ts, n)
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
