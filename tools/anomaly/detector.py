"""Streaming anomaly detection for one telemetry series: Isolation Forest over feature windows.

Each tick, `update(x)` scores the new value against a model fitted on earlier values only, then
learns it (prequential: no look-ahead). The model is a scikit-learn Isolation Forest over
telemetry features of the recent window (value, level, slope, spread, seasonal residual; see
`features`), refitted every `refit_every` ticks on the last `window` ticks and flattened
into arrays (`forest`) so that scoring one point costs tens of microseconds. Four things
turn its raw isolation score into something an operator can act on:

* Range excess. An Isolation Forest cannot tell "a bit outside everything seen" from "far outside":
  both isolate at the root. The distance by which a point leaves the training range of any
  feature (in units of that range) is added to its isolation score, weighted by `range_weight`.
* Calibration. The raw score becomes a tail probability p under the training scores (empirical
  inside the range, an exponential tail past its upper quantile; `calibration`), so
  `severity = 1 - p` means the same rarity on every series and `is_anomaly` is p < contamination.
* Contamination. At each refit the `contamination` share of the window that scored rarest (and
  the rows whose short-window features still read those values) is left out of the training
  data, so yesterday's anomaly does not teach the forest that the next one is normal.
* Alerting. `AlertGate` reports only a new peak of rarity (a decade above anything in the last
  `alert_memory` ticks), so an incident alerts once; its strength is the NAB anomaly score.

Trees see 1024 points each (scikit-learn's default is 256): deeper trees grade the tail more
finely, which the NAB comparison rewarded (see `arcpoint nab --detector iforest-256`).

`GaussianDetector` (a windowed Gaussian on the value, calibrated the same way) and
`CombinedDetector` (the rarest of several detectors, Bonferroni-corrected) share the interface;
they exist for the measured comparison in `arcpoint nab --detector`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from tools.anomaly.calibration import AlertGate, TailCalibrator, alert_strength, surprise_of
from tools.anomaly.features import FeatureSpec, detect_period, feature_rows
from tools.anomaly.forest import FlatIsolationForest, fit_forest


@dataclass(frozen=True, slots=True)
class AnomalyScore:
    """One tick's verdict.

    score       raw outlyingness (isolation score plus weighted range excess); higher is stranger
    severity    1 - p in [0, 1], p the chance a training point scores at least this high
    surprise    -log10 p: 3 means one in a thousand, comparable across series
    is_anomaly  p < contamination
    alert       in [0, 1]: > 0 only at a new peak of surprise (one alert per incident)
    ready       False while warming up (no model yet: every other field is 0)
    """

    score: float
    severity: float
    surprise: float
    is_anomaly: bool
    alert: float
    ready: bool = True


NOT_READY = AnomalyScore(0.0, 0.0, 0.0, False, 0.0, ready=False)


class StreamingDetector(Protocol):
    def update(self, x: float) -> AnomalyScore: ...


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Settings of `IsolationForestDetector`; one global configuration serves every series.

    Windows are in ticks. `warmup` ticks pass before the first fit (scores are `NOT_READY`
    until then). `contamination` is the share of a training window taken to be anomalous: the
    p-value below which a point `is_anomaly`, and the share left out of training when
    `exclude_anomalies`. `alert_memory` = 0 turns the alert gate off.
    """

    window: int = 2000
    refit_every: int = 200
    warmup: int = 200
    n_estimators: int = 100
    max_samples: int = 1024
    contamination: float = 0.005
    range_weight: float = 1.0
    tail_quantile: float = 0.98
    alert_memory: int = 100
    alert_margin: float = 1.0
    exclude_anomalies: bool = True
    seasonal_min_acf: float = 0.5
    features: FeatureSpec = field(default_factory=FeatureSpec)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup < 20 or self.window < self.warmup:
            raise ValueError("need warmup >= 20 and window >= warmup")
        if self.refit_every < 1 or self.n_estimators < 1 or self.max_samples < 2:
            raise ValueError("refit_every, n_estimators must be >= 1 and max_samples >= 2")
        if self.alert_memory < 0:
            raise ValueError("alert_memory must be >= 0 (0: no gate)")
        if not 0.0 < self.contamination < 0.5:
            raise ValueError("contamination must lie in (0, 0.5)")
        if self.range_weight < 0:
            raise ValueError("range_weight must be >= 0")


def _check_value(x: float) -> float:
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"telemetry value must be a finite number, got {x!r}")
    return v


class _History:
    """The last `capacity` values in one contiguous array (amortised O(1) append)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = np.empty(2 * capacity)
        self._len = 0

    def append(self, v: float) -> None:
        if self._len == self._buf.size:
            self._buf[: self.capacity] = self._buf[self._len - self.capacity : self._len]
            self._len = self.capacity
        self._buf[self._len] = v
        self._len += 1

    def tail(self, k: int) -> np.ndarray:
        return self._buf[max(0, self._len - k) : self._len]

    def __len__(self) -> int:
        return min(self._len, self.capacity)


@dataclass(slots=True)
class _Model:
    forest: FlatIsolationForest
    calibrator: TailCalibrator
    period: int
    low: np.ndarray
    span: np.ndarray


class IsolationForestDetector:
    """Isolation Forest over telemetry feature windows, scored one point at a time."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        cfg = self.config
        self._max_period = cfg.window // 2
        self._history = _History(cfg.window + cfg.features.history_needed(self._max_period))
        self._surprises = _History(cfg.window)
        self._model: _Model | None = None
        self._since_fit = 0
        self._fits = 0
        self._gate = AlertGate(cfg.alert_memory, cfg.alert_margin)
        self.n_seen = 0

    @property
    def period(self) -> int:
        """The seasonal period (ticks) found at the last refit, 0 if none."""
        return self._model.period if self._model else 0

    def update(self, x: float) -> AnomalyScore:
        """Score `x` against the model of earlier values, then learn it."""
        v = _check_value(x)
        self._history.append(v)
        self.n_seen += 1
        result = self._score_current() if self._model is not None else NOT_READY
        self._surprises.append(result.surprise)
        self._since_fit += 1
        due = self._since_fit >= self.config.refit_every
        if (self._model is None and self.n_seen >= self.config.warmup) or (self._model and due):
            self._refit()
        return result

    def _score_current(self) -> AnomalyScore:
        cfg = self.config
        model = self._model
        assert model is not None
        tail = self._history.tail(cfg.features.history_needed(model.period))
        row = feature_rows(tail, np.array([len(tail) - 1]), cfg.features, model.period)[0]
        raw = model.forest.score_one(row)
        if cfg.range_weight > 0:
            excess = np.maximum(np.maximum(model.low - row, row - (model.low + model.span)), 0.0)
            raw += cfg.range_weight * float(np.max(excess / model.span))
        p = model.calibrator.p_value(raw)
        surprise = surprise_of(p)
        return AnomalyScore(
            score=raw,
            severity=1.0 - p,
            surprise=surprise,
            is_anomaly=p < cfg.contamination,
            alert=self._gate.update(surprise),
        )

    def _typical(self, n_train: int) -> np.ndarray:
        """Mask of the training rows to keep: all but the `contamination` share most surprising.

        Past anomalies left in the training window would teach the forest that they are normal
        and hide the next one; dropping only the declared contamination share keeps a lasting
        change of regime (hundreds of points) in the data, so the model still adapts to it.
        The rows just after a dropped one go too, as far as the short-window features (level,
        slope, spread) still read the anomalous value: otherwise its echo stays in training.
        """
        surprise = self._surprises.tail(n_train)
        keep = np.ones(n_train, dtype=bool)
        k = int(self.config.contamination * n_train)
        if k > 0 and len(surprise) == n_train:
            worst = np.argpartition(surprise, -k)[-k:]
            worst = worst[surprise[worst] > 0]
            for lag in range(self.config.features.reach()):
                keep[np.minimum(worst + lag, n_train - 1)] = False
        return keep

    def _refit(self) -> None:
        cfg = self.config
        n_train = min(len(self._history), cfg.window)
        period = 0
        if "seasonal" in cfg.features.names:
            period = detect_period(
                self._history.tail(n_train),
                max_lag=min(self._max_period, n_train // 2),
                min_acf=cfg.seasonal_min_acf,
            )
        values = self._history.tail(n_train + cfg.features.history_needed(period))
        rows = np.arange(len(values) - n_train, len(values))
        if cfg.exclude_anomalies:
            rows = rows[self._typical(n_train)]
        X = feature_rows(values, rows, cfg.features, period)
        forest = fit_forest(
            X,
            n_estimators=cfg.n_estimators,
            max_samples=cfg.max_samples,
            seed=cfg.seed + self._fits,
        )
        calibrator = TailCalibrator(forest.score(X), cfg.tail_quantile)
        low = X.min(axis=0)
        high = X.max(axis=0)
        span = np.maximum(high - low, 1e-9 * (1.0 + np.abs(high)))
        self._model = _Model(forest, calibrator, period, low, span)
        self._fits += 1
        self._since_fit = 0


@dataclass(frozen=True, slots=True)
class GaussianConfig:
    """Settings of `GaussianDetector`."""

    window: int = 2000
    warmup: int = 200
    calibration_window: int = 2000
    recalibrate_every: int = 200
    contamination: float = 0.005
    tail_quantile: float = 0.98
    alert_memory: int = 100
    alert_margin: float = 0.0


class GaussianDetector:
    """|z| of the value against the mean and spread of the last `window` values, calibrated.

    The windowed-Gaussian baseline of NAB, with the same empirical calibration and alert gate as
    the forest so the two can be compared and combined on one scale.
    """

    def __init__(self, config: GaussianConfig | None = None) -> None:
        self.config = config or GaussianConfig()
        cfg = self.config
        self._values = _History(cfg.window)
        self._z = _History(cfg.calibration_window)
        self._calibrator: TailCalibrator | None = None
        self._since = 0
        self._gate = AlertGate(cfg.alert_memory, cfg.alert_margin)
        self.n_seen = 0

    def update(self, x: float) -> AnomalyScore:
        v = _check_value(x)
        cfg = self.config
        past = self._values.tail(cfg.window)
        z = 0.0
        if len(past) >= 2:
            mu = float(past.mean())
            sd = max(float(past.std()), 1e-9 * (1.0 + abs(mu)))
            z = abs(v - mu) / sd
        self._values.append(v)
        self.n_seen += 1
        result = NOT_READY
        if self._calibrator is not None:
            p = self._calibrator.p_value(z)
            s = surprise_of(p)
            result = AnomalyScore(z, 1.0 - p, s, p < cfg.contamination, self._gate.update(s))
        if self.n_seen > 30:  # the first z-scores rest on too few values to calibrate with
            self._z.append(z)
        self._since += 1
        if len(self._z) >= cfg.warmup and (
            self._calibrator is None or self._since >= cfg.recalibrate_every
        ):
            self._calibrator = TailCalibrator(
                self._z.tail(cfg.calibration_window), cfg.tail_quantile
            )
            self._since = 0
        return result


class CombinedDetector:
    """The rarest verdict of several detectors, with a Bonferroni correction (p * k)."""

    def __init__(
        self,
        detectors: Sequence[StreamingDetector],
        contamination: float = 0.005,
        alert_memory: int = 100,
        alert_margin: float = 0.0,
    ) -> None:
        if not detectors:
            raise ValueError("need at least one detector")
        self.detectors = list(detectors)
        self.contamination = contamination
        self._gate = AlertGate(alert_memory, alert_margin)

    def update(self, x: float) -> AnomalyScore:
        results = [d.update(x) for d in self.detectors]
        ready = [r for r in results if r.ready]
        if not ready:
            return NOT_READY
        best = max(ready, key=lambda r: r.surprise)
        p = min(1.0, 10.0 ** (-best.surprise) * len(self.detectors))
        s = surprise_of(p)
        return AnomalyScore(best.score, 1.0 - p, s, p < self.contamination, self._gate.update(s))


VARIANTS: dict[str, str] = {
    "iforest": "Isolation Forest on value, level, slope, spread, seasonal residual + range excess",
    "iforest-no-range": "as iforest, without the range-excess term",
    "iforest-no-seasonal": "as iforest, without the seasonal residual feature",
    "iforest-basic": "as iforest, on value, level, slope, spread only",
    "iforest-value-only": "as iforest, on the value alone",
    "iforest+zscore": "as iforest, plus the value's z-score against the last 48 values",
    "iforest+shift": "as iforest, plus the level minus the mean of the last 48 values",
    "iforest-no-exclusion": "as iforest, past anomalies kept in the training window",
    "iforest-256": "as iforest, 256 points per tree (scikit-learn's default) instead of 1024",
    "iforest-no-gate": "as iforest, every tick's rarity reported (no alert gate)",
    "gaussian": "windowed Gaussian |z| on the value, same calibration and alert gate",
    "iforest+gaussian": "rarest of iforest and gaussian (Bonferroni)",
}


def _with_features(cfg: DetectorConfig, names: tuple[str, ...]) -> DetectorConfig:
    return replace(cfg, features=replace(cfg.features, names=names))


def make_detector(
    variant: str = "iforest", config: DetectorConfig | None = None
) -> StreamingDetector:
    """A fresh detector of the named variant (see VARIANTS), for one series."""
    cfg = config or DetectorConfig()
    names = cfg.features.names
    forest_variants = {
        "iforest": cfg,
        "iforest-no-range": replace(cfg, range_weight=0.0),
        "iforest-no-seasonal": _with_features(cfg, tuple(n for n in names if n != "seasonal")),
        "iforest-basic": _with_features(cfg, ("value", "level", "slope", "spread")),
        "iforest-value-only": _with_features(cfg, ("value",)),
        "iforest+zscore": _with_features(cfg, (*names, "zscore")),
        "iforest+shift": _with_features(cfg, (*names, "shift")),
        "iforest-no-exclusion": replace(cfg, exclude_anomalies=False),
        "iforest-256": replace(cfg, max_samples=256),
        "iforest-no-gate": replace(cfg, alert_memory=0),
    }
    if variant in forest_variants:
        return IsolationForestDetector(forest_variants[variant])
    gauss = GaussianConfig(
        warmup=cfg.warmup,
        contamination=cfg.contamination,
        tail_quantile=cfg.tail_quantile,
        alert_memory=cfg.alert_memory,
        alert_margin=cfg.alert_margin,
    )
    if variant == "gaussian":
        return GaussianDetector(gauss)
    if variant == "iforest+gaussian":
        return CombinedDetector(
            [IsolationForestDetector(cfg), GaussianDetector(gauss)],
            contamination=cfg.contamination,
            alert_memory=cfg.alert_memory,
            alert_margin=cfg.alert_margin,
        )
    raise ValueError(f"unknown detector variant {variant!r}; known: {', '.join(VARIANTS)}")


def score_series(
    values: Iterable[float], detector: StreamingDetector | None = None
) -> list[AnomalyScore]:
    """Run a detector over a whole series, one point at a time (a convenience for tests/tools)."""
    det = detector or IsolationForestDetector()
    return [det.update(v) for v in values]


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
