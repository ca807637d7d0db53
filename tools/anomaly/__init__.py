"""Anomaly detection on telemetry series, and the NAB benchmark's scoring rules.

`detector` holds the streaming detectors (the Isolation Forest over feature windows and its
comparison variants), built from `features`, `forest` and `calibration`; `nab_scoring` scores
any detector's output the way the Numenta Anomaly Benchmark does.
"""

from tools.anomaly.detector import (
    NOT_READY,
    VARIANTS,
    AnomalyScore,
    CombinedDetector,
    DetectorConfig,
    GaussianConfig,
    GaussianDetector,
    IsolationForestDetector,
    StreamingDetector,
    alert_strength,
    make_detector,
    score_series,
)

__all__ = [
    "NOT_READY",
    "VARIANTS",
    "AnomalyScore",
    "CombinedDetector",
    "DetectorConfig",
    "GaussianConfig",
    "GaussianDetector",
    "IsolationForestDetector",
    "StreamingDetector",
    "alert_strength",
    "make_detector",
    "score_series",
]
