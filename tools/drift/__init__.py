"""Drift and change detection: two-sample drift tests and streaming change detectors.

`two_sample` holds the data, prediction and concept drift tests (with their severities);
`page_hinkley` the river-compatible, self-calibrating Page-Hinkley test.
"""

from tools.drift.two_sample import (
    EFFECT_BANDS,
    SEVERITY_ORDER,
    DriftReport,
    DriftResult,
    adjust_p_values,
    combine_reports,
    concept_drift,
    data_drift,
    prediction_drift,
    severity_for,
)

__all__ = [
    "EFFECT_BANDS",
    "SEVERITY_ORDER",
    "DriftReport",
    "DriftResult",
    "adjust_p_values",
    "combine_reports",
    "concept_drift",
    "data_drift",
    "prediction_drift",
    "severity_for",
]
