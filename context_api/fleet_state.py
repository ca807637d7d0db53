"""The fleet as the router knows it: feature windows, the active forecaster, cached forecasts.

Forecasts depend only on each backend's telemetry window, so they are recomputed when a tick of
telemetry arrives (one flattened-forest call for the whole fleet), never per request. The
active forecaster can be swapped between ticks (a promotion or a rollback) without a restart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from tools.features import FeatureWindow
from tools.forecaster import Forecaster
from tools.routing import BackendInfo, BackendView, FleetView
from tools.telemetry import TelemetryPoint


class UnknownBackendError(ValueError):
    pass


class FleetState:
    def __init__(
        self,
        backends: Sequence[BackendInfo],
        forecaster: Forecaster | None = None,
        window_capacity: int | None = None,
    ) -> None:
        self.backends = tuple(backends)
        self._names = tuple(b.name for b in self.backends)
        kwargs = {} if window_capacity is None else {"capacity": window_capacity}
        self.windows = {b.name: FeatureWindow(**kwargs) for b in self.backends}
        self.latest: dict[str, TelemetryPoint] = {}
        self.forecaster = forecaster
        self.view: FleetView | None = None
        self.alarms: dict[str, str] = {}

    def set_forecaster(self, forecaster: Forecaster | None) -> None:
        """Swap the active model; the next tick's forecasts come from it."""
        self.forecaster = forecaster

    def ingest(self, points: Iterable[TelemetryPoint]) -> None:
        for p in points:
            window = self.windows.get(p.backend)
            if window is None:
                raise UnknownBackendError(
                    f"telemetry for unknown backend {p.backend!r}; fleet is {list(self._names)}"
                )
            window.update(p)
            self.latest[p.backend] = p

    def features(self) -> np.ndarray:
        return np.vstack([self.windows[n].features() for n in self._names])

    def tick(
        self,
        points: Iterable[TelemetryPoint],
        arrivals: int,
        alarms: Mapping[str, str] | None = None,
    ) -> FleetView:
        """Take one tick of telemetry, refresh every backend's forecast, return the new view."""
        self.ingest(points)
        if alarms is not None:
            self.alarms = dict(alarms)
        return self.refresh(arrivals)

    def refresh(self, arrivals: int) -> FleetView:
        n = len(self.backends)
        mean = lo = hi = np.full(n, math.nan)
        version = None
        if self.forecaster is not None and len(self.latest) == n:
            fc = self.forecaster.predict(self.features())
            mean, lo, hi = fc.mean, fc.lo, fc.hi
            version = self.forecaster.version_id
        views = []
        for i, b in enumerate(self.backends):
            p = self.latest.get(b.name)
            views.append(
                BackendView(
                    name=b.name,
                    cost_per_request=b.cost_per_request,
                    rps=p.rps if p else 0.0,
                    p95_ms=p.p95_ms if p else math.nan,
                    error_rate=p.error_rate if p else 0.0,
                    in_flight=p.in_flight if p else 0.0,
                    forecast_ms=float(mean[i]),
                    forecast_lo_ms=float(lo[i]),
                    forecast_hi_ms=float(hi[i]),
                )
            )
        ts = max((p.ts for p in self.latest.values()), default=0.0)
        self.view = FleetView(
            ts=ts,
            backends=tuple(views),
            arrivals=int(arrivals),
            model_version=version,
            alarms=dict(self.alarms),
        )
        return self.view
