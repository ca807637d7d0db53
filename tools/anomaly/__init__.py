"""Anomaly detection on telemetry series, and the NAB benchmark's scoring rules.

`detector` holds the streaming Isolation Forest detector over feature windows, built from
`features`, `forest` and `calibration`; `gaussian` NAB's windowed-Gaussian baseline; `variants`
the named variants and ablations; `nab_scoring` scores any detector's output the way the Numenta
Anomaly Benchmark does, and `cross_validation` the leave-one-category-out protocol that measures
it on series its thresholds were not chosen on.
"""

from tools.anomaly.detector import (
    NOT_READY,
    AnomalyScore,
    DetectionRun,
    DetectorConfig,
    IsolationForestDetector,
    StreamingDetector,
    alert_strength,
    score_series,
)
from tools.anomaly.gaussian import GaussianConfig, GaussianDetector
from tools.anomaly.variants import VARIANTS, make_detector, variant_config

__all__ = [
    "NOT_READY",
    "VARIANTS",
    "AnomalyScore",
    "DetectionRun",
    "DetectorConfig",
    "GaussianConfig",
    "GaussianDetector",
    "IsolationForestDetector",
    "StreamingDetector",
    "alert_strength",
    "make_detector",
    "score_series",
    "variant_config",
]
