"""Named detector variants: the shipped detector and its ablations.

`arcpoint nab --detector NAME` runs any of them, and `arcpoint nab --detector NAME --cv` scores it
by leave-one-category-out cross-validation (its thresholds chosen without the held-out category).
The shipped detector is `iforest`: one view and 256 points per tree, scikit-learn's and the
paper's defaults, fixed a priori. Letting the protocol choose between the four forest settings
below (views x points per tree) cost about five points of cross-validated score on average over
forest seeds 0-2 of the NAB subset (65.8, 60.2, 57.4 against 66.4, 66.9, 65.2 with `iforest`
alone): with four categories the choice follows noise, so no setting is chosen any more.
"""

from __future__ import annotations

from dataclasses import replace

from tools.anomaly.detector import DetectorConfig, IsolationForestDetector
from tools.anomaly.gaussian import GaussianConfig, GaussianDetector

VARIANTS: dict[str, str] = {
    "iforest": "Isolation Forest over feature windows, 256 points per tree (the shipped detector)",
    "iforest-1x1024": "as iforest, 1024 points per tree (the previous detector's setting)",
    "iforest-2x256": "two views, feature windows x1 and x6, p-values merged (e x geometric mean)",
    "iforest-2x1024": "as iforest-2x256, 1024 points per tree",
    "iforest-no-range": "as iforest, without the range-excess term",
    "iforest-no-exclusion": "as iforest, past anomalies kept in the training window",
    "iforest-no-gate": "as iforest, every tick's rarity reported (no alert gate)",
    "gaussian": "NAB's windowed Gaussian |z| on the value, same calibration and alert gate",
}


def variant_config(variant: str, config: DetectorConfig | None = None) -> DetectorConfig:
    """The forest configuration of a forest variant (ValueError for other names)."""
    cfg = config or DetectorConfig()
    configs = {
        "iforest": cfg,
        "iforest-1x1024": replace(cfg, max_samples=1024),
        "iforest-2x256": replace(cfg, scales=(1, 6)),
        "iforest-2x1024": replace(cfg, scales=(1, 6), max_samples=1024),
        "iforest-no-range": replace(cfg, range_weight=0.0),
        "iforest-no-exclusion": replace(cfg, exclude_anomalies=False),
        "iforest-no-gate": replace(cfg, alert_memory=0),
    }
    if variant not in configs:
        raise ValueError(f"unknown forest variant {variant!r}; known: {', '.join(configs)}")
    return configs[variant]


def make_detector(
    variant: str = "iforest", config: DetectorConfig | None = None
) -> IsolationForestDetector | GaussianDetector:
    """A fresh detector of the named variant (see VARIANTS), for one series."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown detector variant {variant!r}; known: {', '.join(VARIANTS)}")
    cfg = config or DetectorConfig()
    if variant == "gaussian":
        return GaussianDetector(
            GaussianConfig(
                warmup=cfg.warmup,
                contamination=cfg.contamination,
                tail_quantile=cfg.tail_quantile,
                alert_memory=cfg.alert_memory,
                alert_margin=cfg.alert_margin,
            )
        )
    return IsolationForestDetector(variant_config(variant, cfg))
