"""NAB's windowed-Gaussian baseline, calibrated like the forest so the two compare on one scale."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tools.anomaly.calibration import AlertGate, TailCalibrator, surprise_of
from tools.anomaly.detector import NOT_READY, AnomalyScore, DetectionRun, _check_values


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
    alert_margin: float = 1.0


class GaussianDetector:
    """|z| of the value against the mean and spread of the last `window` values, calibrated.

    The windowed-Gaussian baseline of NAB, with the same empirical calibration and alert gate as
    the forest.
    """

    def __init__(self, config: GaussianConfig | None = None) -> None:
        self.config = config or GaussianConfig()
        cfg = self.config
        self._values: list[float] = []
        self._z: list[float] = []
        self._calibrator: TailCalibrator | None = None
        self._since = 0
        self._gate = AlertGate(cfg.alert_memory, cfg.alert_margin)
        self.n_seen = 0

    def update(self, x: float) -> AnomalyScore:
        v = float(_check_values(np.array([x], dtype=np.float64))[0])
        cfg = self.config
        past = np.asarray(self._values[-cfg.window :])
        z = 0.0
        if len(past) >= 2:
            mu = float(past.mean())
            sd = max(float(past.std()), 1e-9 * (1.0 + abs(mu)))
            z = abs(v - mu) / sd
        self._values.append(v)
        if len(self._values) > 2 * cfg.window:
            del self._values[: -cfg.window]
        self.n_seen += 1
        result = NOT_READY
        if self._calibrator is not None:
            p = self._calibrator.p_value(z)
            s = surprise_of(p)
            result = AnomalyScore(z, 1.0 - p, s, p < cfg.contamination, self._gate.update(s))
        if self.n_seen > 30:  # the first z-scores rest on too few values to calibrate with
            self._z.append(z)
            if len(self._z) > 2 * cfg.calibration_window:
                del self._z[: -cfg.calibration_window]
        self._since += 1
        if len(self._z) >= cfg.warmup and (
            self._calibrator is None or self._since >= cfg.recalibrate_every
        ):
            self._calibrator = TailCalibrator(
                np.asarray(self._z[-cfg.calibration_window :]), cfg.tail_quantile
            )
            self._since = 0
        return result

    def detect(self, values: Iterable[float] | np.ndarray) -> DetectionRun:
        """`update` over each value in turn, collected into arrays."""
        results = [self.update(v) for v in _check_values(np.asarray(values, dtype=np.float64))]
        return DetectionRun(
            score=np.array([r.score for r in results]),
            surprise=np.array([r.surprise for r in results]),
            alert=np.array([r.alert for r in results]),
            ready=np.array([r.ready for r in results], dtype=bool),
        )
