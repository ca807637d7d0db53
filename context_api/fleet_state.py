"""The fleet as the router knows it: feature windows, the active forecaster, cached forecasts.

Forecasts depend only on each backend's telemetry window, so they are recomputed when a tick of
telemetry arrives (one flattened-forest call for the whole fleet), never per request. The
active forecaster can be swapped between ticks (a promotion or a rollback) without a restart.

The windows of all backends live in one `FleetWindows` array, so a refresh computes the whole
fleet's features in one pass (the same numbers `FeatureWindow` gives, backend by backend).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from tools.fleet_features import BackendWindow, FleetWindows, UnknownBackendError
from tools.forecaster import Forecaster
from tools.routing import BackendInfo, BackendView, FleetView
from tools.telemetry import TelemetryPoint

__all__ = ["FleetState", "UnknownBackendError"]

_VIEW_FIELDS = (
    "name",
    "cost_per_request",
    "rps",
    "p95_ms",
    "error_rate",
    "in_flight",
    "forecast_ms",
    "forecast_lo_ms",
    "forecast_hi_ms",
)
_FLEET_VIEW_FIELDS = ("ts", "backends", "arrivals", "model_version", "alarms")


def _positional(cls: type, names: tuple[str, ...]) -> Any:
    """`cls` itself when its fields come in the order `names` (positional construction costs a
    third less than keywords, and a refresh builds a view per backend), else a keyword shim."""
    if tuple(f.name for f in fields(cls)) == names:
        return cls

    def build(*values: object) -> Any:  # pragma: no cover - only if the fields are reordered
        return cls(**dict(zip(names, values, strict=True)))

    return build


_backend_view = _positional(BackendView, _VIEW_FIELDS)
_fleet_view = _positional(FleetView, _FLEET_VIEW_FIELDS)
_NAN3 = (math.nan, math.nan, math.nan)


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
        self._windows = FleetWindows(self._names, **kwargs)
        self.windows: Mapping[str, BackendWindow] = {
            n: self._windows.window(n) for n in self._names
        }
        """Per-backend views of the fleet's windows, with `FeatureWindow`'s interface."""
        self.latest: dict[str, TelemetryPoint] = {}
        self.forecaster = forecaster
        self.view: FleetView | None = None
        self.alarms: dict[str, str] = {}
        self._ts = 0.0
        self._static = tuple((b.name, b.cost_per_request) for b in self.backends)
        self._no_forecast = [math.nan] * len(self.backends)

    def set_forecaster(self, forecaster: Forecaster | None) -> None:
        """Swap the active model; the next tick's forecasts come from it."""
        self.forecaster = forecaster

    def ingest(self, points: Iterable[TelemetryPoint]) -> None:
        """Append points to their backends' windows, in order. A bad point raises (unknown
        backend: UnknownBackendError; out of order or invalid: ValueError) and leaves the
        points before it ingested and nothing of its own."""
        update = self._windows.update
        latest = self.latest
        for p in points:
            update(p)
            latest[p.backend] = p
            if p.ts > self._ts:
                self._ts = p.ts

    def features(self) -> np.ndarray:
        """Feature rows of every backend, in fleet order (ValueError if one has no data)."""
        return self._windows.features()

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
        """Recompute every backend's features and forecast from its window; build the view."""
        latest = self.latest
        mean = lo = hi = self._no_forecast
        version = None
        forecaster = self.forecaster
        if forecaster is not None and len(latest) == len(self._names):
            fc = forecaster.predict(self._windows.features())
            mean, lo, hi = fc.mean.tolist(), fc.lo.tolist(), fc.hi.tolist()
            version = forecaster.version_id
        views = []
        for i, (name, cost) in enumerate(self._static):
            p = latest.get(name)
            if p is None:
                views.append(_backend_view(name, cost, 0.0, math.nan, 0.0, 0.0, *_NAN3))
                continue
            rps, p95, err, inf = p.rps, p.p95_ms, p.error_rate, p.in_flight
            views.append(_backend_view(name, cost, rps, p95, err, inf, mean[i], lo[i], hi[i]))
        self.view = _fleet_view(self._ts, tuple(views), int(arrivals), version, dict(self.alarms))
        return self.view
