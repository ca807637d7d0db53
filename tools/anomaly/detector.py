"""Streaming anomaly detection for one telemetry series: Isolation Forests over feature windows.

Each tick, `update(x)` scores the new value against models fitted on earlier values only, then
learns it (prequential: no look-ahead); `detect(values)` does the same for a whole array, block by
block, and gives identical results (a one-row block is how `update` works). Each *view* is an
Isolation Forest over telemetry features of the recent window (value, level, slope, spread,
seasonal residual; see `features`) at one time scale: the windows of view k are k times the base
windows, so `scales=(1, 6)` would look at the last few ticks and at the last half hour at once
(the shipped detector has one view).
Views are refitted every `refit_every` ticks on the last `window` ticks. What turns isolation
scores into something an operator can act on:

* Range excess. An Isolation Forest cannot tell "a bit outside everything seen" from "far outside":
  both isolate at the root. The distance by which a point leaves the training range of any
  feature (in units of that range) is added to its isolation score, weighted by `range_weight`.
* Calibration. Each view's raw score becomes a tail probability p under its training scores
  (empirical inside the range, an exponential tail past its upper quantile; `calibration`).
* Merging views. The views' p-values are merged as e times their geometric mean, a p-value that
  stays valid whatever the dependence between the views (Vovk and Wang, 2020), so `severity`
  = 1 - p means the same rarity on every series and `is_anomaly` is p < contamination.
* Contamination. At each refit the `contamination` share of the window that scored rarest (and
  the rows whose features still read those values) is left out of the training data, so
  yesterday's anomaly does not teach the forest that the next one is normal.
* Alerting. `AlertGate` reports only a new peak of rarity (a decade above anything in the last
  `alert_memory` ticks), so an incident alerts once; its strength is the NAB anomaly score.

Every setting is fixed a priori (library defaults; a window of about a week of 5-minute ticks;
trees see 256 points each, scikit-learn's and the paper's default): choosing the number of views
and the points per tree by leave-one-category-out cross-validation on the NAB subset measured
worse out of sample than not choosing (see `variants`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tools.anomaly.calibration import AlertGate, TailCalibrator, alert_strength
from tools.anomaly.features import FeatureSpec, detect_period, feature_rows
from tools.anomaly.forest import IsolationForest, fit_forest

_LOG10_E = math.log10(math.e)


@dataclass(frozen=True, slots=True)
class AnomalyScore:
    """One tick's verdict.

    score       raw outlyingness (mean over views of isolation score plus weighted range
                excess); higher is stranger
    severity    1 - p in [0, 1], p the merged tail probability of this tick's scores
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
class DetectionRun:
    """`detect`'s result, one entry per value (zeros where not ready)."""

    score: np.ndarray
    surprise: np.ndarray
    alert: np.ndarray
    ready: np.ndarray


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Settings of `IsolationForestDetector`; one global configuration serves every series.

    Windows are in ticks. `warmup` ticks pass before the first fit (scores are `NOT_READY`
    until then). `contamination` is the share of a training window taken to be anomalous: the
    p-value below which a point `is_anomaly`, and the share left out of training when
    `exclude_anomalies`. `scales` lists the views (feature windows times each factor).
    `alert_memory` = 0 turns the alert gate off.
    """

    window: int = 2000
    refit_every: int = 200
    warmup: int = 200
    n_estimators: int = 100
    max_samples: int = 256
    contamination: float = 0.005
    range_weight: float = 1.0
    tail_quantile: float = 0.98
    alert_memory: int = 100
    alert_margin: float = 1.0
    exclude_anomalies: bool = True
    seasonal_min_acf: float = 0.5
    features: FeatureSpec = field(default_factory=FeatureSpec)
    scales: tuple[int, ...] = (1,)
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
        if not self.scales or min(self.scales) < 1 or len(set(self.scales)) != len(self.scales):
            raise ValueError("scales must be distinct integers >= 1")

    def view_specs(self) -> tuple[FeatureSpec, ...]:
        return tuple(self.features.scaled(k) for k in self.scales)


def _check_values(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError("telemetry values must be a 1-d sequence")
    if not np.all(np.isfinite(v)):
        bad = int(np.flatnonzero(~np.isfinite(v))[0])
        raise ValueError(f"telemetry value must be a finite number, got {v[bad]!r} at {bad}")
    return v


class _History:
    """The last `capacity` values in one contiguous array (amortised O(1) append)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = np.empty(2 * capacity)
        self._len = 0

    def extend(self, values: np.ndarray) -> None:
        k = len(values)
        if k > self.capacity:
            raise ValueError("block larger than the history")
        if self._len + k > self._buf.size:
            keep = self.capacity - k
            self._buf[:keep] = self._buf[self._len - keep : self._len]
            self._len = keep
        self._buf[self._len : self._len + k] = values
        self._len += k

    def tail(self, k: int) -> np.ndarray:
        return self._buf[max(0, self._len - k) : self._len]

    def __len__(self) -> int:
        return min(self._len, self.capacity)


@dataclass(slots=True)
class _View:
    spec: FeatureSpec
    forest: IsolationForest
    calibrator: TailCalibrator
    low: np.ndarray
    span: np.ndarray


class IsolationForestDetector:
    """Isolation Forests over telemetry feature windows at several scales, scored as a stream."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        cfg = self.config
        self._specs = cfg.view_specs()
        self._max_period = cfg.window // 2
        need = max(s.history_needed(self._max_period) for s in self._specs)
        self._history = _History(cfg.window + need + cfg.refit_every)
        self._surprises = _History(cfg.window + cfg.refit_every)
        self._views: list[_View] = []
        self._period = 0
        self._since_fit = 0
        self._fits = 0
        self._gate = AlertGate(cfg.alert_memory, cfg.alert_margin)
        self.n_seen = 0

    @property
    def period(self) -> int:
        """The seasonal period (ticks) found at the last refit, 0 if none."""
        return self._period

    def update(self, x: float) -> AnomalyScore:
        """Score `x` against the models of earlier values, then learn it."""
        run = self.detect(np.array([x], dtype=np.float64))
        if not run.ready[0]:
            return NOT_READY
        s = float(run.surprise[0])
        p = 10.0 ** (-s)
        return AnomalyScore(
            score=float(run.score[0]),
            severity=1.0 - p,
            surprise=s,
            is_anomaly=p < self.config.contamination,
            alert=float(run.alert[0]),
        )

    def detect(self, values: Iterable[float] | np.ndarray) -> DetectionRun:
        """Feed a batch of values in order; the same results as `update` on each in turn."""
        v = _check_values(np.asarray(values, dtype=np.float64))
        n = v.size
        score = np.zeros(n)
        surprise = np.zeros(n)
        alert = np.zeros(n)
        ready = np.zeros(n, dtype=bool)
        cfg = self.config
        pos = 0
        while pos < n:
            step = cfg.refit_every - self._since_fit if self._views else cfg.warmup - self.n_seen
            step = max(1, min(step, n - pos))
            block = v[pos : pos + step]
            self._history.extend(block)
            self.n_seen += step
            if self._views:
                raw, sur = self._score_tail(step)
                score[pos : pos + step] = raw
                surprise[pos : pos + step] = sur
                ready[pos : pos + step] = True
                for i in range(step):
                    alert[pos + i] = self._gate.update(float(sur[i]))
            else:
                sur = np.zeros(step)
            self._surprises.extend(sur)
            self._since_fit += step
            if (not self._views and self.n_seen >= cfg.warmup) or (
                self._views and self._since_fit >= cfg.refit_every
            ):
                self._refit()
            pos += step
        return DetectionRun(score, surprise, alert, ready)

    def _score_tail(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores and merged surprises of the last k values of the history."""
        cfg = self.config
        raws = []
        log_p = np.zeros(k)
        for view in self._views:
            tail = self._history.tail(k + view.spec.history_needed(self._period) - 1)
            rows = np.arange(len(tail) - k, len(tail))
            X = feature_rows(tail, rows, view.spec, self._period)
            raw = view.forest.score(X)
            if cfg.range_weight > 0:
                excess = np.maximum(np.maximum(view.low - X, X - (view.low + view.span)), 0.0)
                raw = raw + cfg.range_weight * np.max(excess / view.span, axis=1)
            raws.append(raw)
            log_p += np.log10(np.maximum(view.calibrator.p_values(raw), 1e-300))
        m = len(self._views)
        merged = log_p / m  # log10 of the geometric mean
        if m > 1:
            merged = np.minimum(merged + _LOG10_E, 0.0)  # e * geometric mean, at most 1
        return np.mean(raws, axis=0), -merged

    def _typical(self, n_train: int, reach: int) -> np.ndarray:
        """Mask of the training rows to keep: all but the `contamination` share most surprising.

        Past anomalies left in the training window would teach the forest that they are normal
        and hide the next one; dropping only the declared contamination share keeps a lasting
        change of regime (hundreds of points) in the data, so the model still adapts to it.
        The rows just after a dropped one go too, as far as the view's features (level, slope,
        spread) still read the anomalous value: otherwise its echo stays in training.
        """
        surprise = self._surprises.tail(n_train)
        keep = np.ones(n_train, dtype=bool)
        k = int(self.config.contamination * n_train)
        if k > 0 and len(surprise) == n_train:
            worst = np.argpartition(surprise, -k)[-k:]
            worst = worst[surprise[worst] > 0]
            for lag in range(reach):
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
        views = []
        for i, spec in enumerate(self._specs):
            values = self._history.tail(n_train + spec.history_needed(period))
            rows = np.arange(len(values) - n_train, len(values))
            if cfg.exclude_anomalies:
                rows = rows[self._typical(n_train, spec.reach())]
            X = feature_rows(values, rows, spec, period)
            forest = fit_forest(
                X,
                n_estimators=cfg.n_estimators,
                max_samples=cfg.max_samples,
                seed=cfg.seed + 7919 * self._fits + i,
            )
            calibrator = TailCalibrator(forest.score(X), cfg.tail_quantile)
            low = X.min(axis=0)
            high = X.max(axis=0)
            span = np.maximum(high - low, 1e-9 * (1.0 + np.abs(high)))
            views.append(_View(spec, forest, calibrator, low, span))
        self._views = views
        self._period = period
        self._fits += 1
        self._since_fit = 0


def score_series(
    values: Iterable[float], detector: StreamingDetector | None = None
) -> list[AnomalyScore]:
    """Run a detector over a whole series, one point at a time (a convenience for tests/tools)."""
    det = detector or IsolationForestDetector()
    return [det.update(v) for v in values]


__all__ = [
    "NOT_READY",
    "AnomalyScore",
    "DetectionRun",
    "DetectorConfig",
    "IsolationForestDetector",
    "StreamingDetector",
    "alert_strength",
    "score_series",
]
