"""The 5-minute forecast as a prior on the per-request prediction.

Every telemetry tick (10 s) the fleet's tick telemetry (`TelemetryPoint`s, the same the
forecaster was trained on: `tools.forecaster`) feeds one feature window per backend, and the
forecaster predicts each backend's p95 latency five minutes ahead. A backend forecast to degrade
(forecast p95 above its current p95) has its predicted log latencies raised by `weight` times the
log of that ratio, up to `max_shift`: its probability of meeting an SLO falls before its live
signals show the breach, so traffic starts to move first. With `require_interval` (the default)
a backend is shifted only when the forecast's whole interval lies above its current p95 (the
forecast excludes "no change"): a mean a little above now is mostly the forecaster's noise, and
shifting on it moved traffic off the survivors of a cascading failure as their load climbed.
A forecast of recovery lowers nothing:
the live signals and the requests sent there show a recovery soon enough, and optimism about a
backend that is still slow costs requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tools.fleet_features import FleetWindows


class ForecastPrior:
    """Per-backend log-latency shifts from the 5-minute forecast (see the module docstring)."""

    def __init__(
        self,
        forecaster: Any,
        backends: Sequence[str],
        weight: float = 1.0,
        max_shift: float = 1.0,
        require_interval: bool = True,
    ) -> None:
        if not (weight >= 0.0 and max_shift >= 0.0):
            raise ValueError("weight and max_shift must be >= 0")
        self.forecaster = forecaster
        self.names = tuple(backends)
        self.windows = FleetWindows(self.names)
        self.weight = weight
        self.max_shift = max_shift
        self.require_interval = require_interval
        self.shifts = [0.0] * len(self.names)
        self.forecast_ms = [math.nan] * len(self.names)
        self.ticks = 0

    def on_tick(self, telemetry: Sequence[Any]) -> None:
        """One tick's `TelemetryPoint`s (any order; unknown backends are an error)."""
        current = {}
        for p in telemetry:
            self.windows.update(p)
            current[p.backend] = p.p95_ms
        self.ticks += 1
        if not all(self.windows.ready(n) for n in self.names):
            return
        fc = self.forecaster.predict(self.windows.features())
        mean = np.asarray(fc.mean, dtype=float)
        lo = np.asarray(fc.lo, dtype=float) if self.require_interval else mean
        for i, name in enumerate(self.names):
            now = current.get(name)
            self.forecast_ms[i] = float(mean[i])
            if now is None or not (now > 0 and math.isfinite(mean[i]) and mean[i] > 0):
                self.shifts[i] = 0.0
                continue
            up = math.log(mean[i] / now)
            if up <= 0 or not lo[i] > now:
                self.shifts[i] = 0.0
                continue
            self.shifts[i] = min(self.max_shift, self.weight * up)

    def shift(self, now_s: float) -> list[float]:
        return self.shifts
