"""Named detector variants: the shipped detector, the cross-validation grid, ablations.

`arcpoint nab --detector NAME` runs any of them; `arcpoint nab --cv` runs every candidate in
`CV_CANDIDATES` and, for each held-out category, picks one on the other categories only. On the
whole shared NAB subset the protocol picks `iforest` (one view, 256 points per tree), which is
why those are `DetectorConfig`'s defaults.
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

CV_CANDIDATES: tuple[str, ...] = ("iforest", "iforest-1x1024", "iforest-2x256", "iforest-2x1024")
"""The global settings `arcpoint nab --cv` chooses between, simplest first (ties go to the
earlier): the number of views (time scales) and the points per tree. Everything else is fixed
a priori and not tuned on NAB."""


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
