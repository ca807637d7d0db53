"""Drift of the routing model: a backend whose latency no longer matches the per-request model.

The router decides with the per-request latency model (`tools.routers.predictive`); the 5-minute
forecaster no longer routes. That model's own residuals are the drift signal that matters: for
each completed request, log TTFT less the model's mean before any online correction, at the
state (requests in flight, prompt, prefix held) the request was routed in. Load is in the model,
so a backend that slows at the same load shifts its residuals whatever share of traffic it gets.

The unit is the tick, not the request: requests that complete in one tick share the backend's
state (its batch, its queue) and their residuals are correlated, so a detector fed one value per
request would count hundreds of dependent samples as independent. Each tick gives, per backend,
the mean residual of its completions (`agents.router.tick_residuals`); ticks with fewer than
`min_requests` completions are skipped (too noisy to count). The test is a calibrated one-sided
Page-Hinkley (`tools.drift.page_hinkley.PageHinkley.calibrated(mode="up")`, no fading) per
backend: sigma is estimated robustly on each segment's first `warmup_ticks` usable ticks after
`burn_in_s` (the fleet and the router's averages settle first), delta and the threshold are in
units of that sigma, and samples are clipped to the warm-up median +/- `clip_sigmas` sigma so a
single bad tick cannot alarm alone. Assumptions: the per-tick means are roughly independent
after a minute (Page-Hinkley's threshold is not a p-value here; the settings were chosen on
held-out scenarios and seeds for no false alarm, README), and a backend's traffic share is
stable enough during warm-up for one sigma to describe it. After an alarm the backend's
detector re-warms on the new level, so a drift that keeps growing alarms again (a repeat).
Backends are tested separately and no multiple-comparison correction applies: the settings were
chosen on the whole fleet's false alarms, four backends at a time.

Slower-than-modelled is the only direction that alarms: a faster backend costs no SLO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.monitors.base import LoopBase, TimelineEntry, clock
from context_api.store import DriftReport as StoredDriftReport
from tools.drift.page_hinkley import PageHinkley
from tools.series_stats import cusum_change_point

Signal = Literal["ttft", "e2e", "both"]
SIGNAL_TEXT = {
    "ttft": "log-TTFT residual",
    "e2e": "log-e2e residual",
    "both": "residual (mean of log TTFT's and log e2e's)",
}
RECENT_TICKS = 30
"""Without a change point, an alarm's shift is measured over this many ticks before it."""


class RoutingDriftConfig(BaseModel):
    """Settings of the routing model's drift detector.

    Chosen on development runs only, never the seeds the full suite reports: the CI drift
    scenario at seeds 203, 2031 and 2032, gradual_drift at seeds 1001-1004, and one other seed
    of every other full scenario (1101-1110, the 4 h closed loop included): 18 runs of 30 min
    to 4 h. The mean of both residuals at h = 40 sigma, k = 0.3 sigma raised no false alarm and
    detected all eight drifts (660-710 s after onset in the CI scenario, 980-1600 s in
    gradual_drift's slower ramp, 1820 s in the closed loop's); at h = 30 the Azure trace raised
    one false alarm (b0, shift 0.05), at h = 25 and below more. TTFT alone alarmed before a
    drift began (the first minutes' residuals settle upward) and e2e alone missed drifts
    (README, Evals). On calm stretches the per-tick means' lag-1 autocorrelation lies between
    -0.44 and 0.22: close to independent or anticorrelated, which keeps the test conservative.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    signal: Signal = Field(
        "both",
        description="which residual: log TTFT, log end-to-end latency, or their mean",
    )
    burn_in_s: float = Field(300.0, ge=0, description="first seconds no detector uses")
    min_requests: int = Field(3, ge=1, description="completions a tick needs to count")
    warmup_ticks: int = Field(60, ge=10, description="ticks that calibrate sigma")
    threshold_sigmas: float = Field(40.0, gt=0)
    delta_sigmas: float = Field(0.3, ge=0)
    clip_sigmas: float | None = Field(3.0, gt=0)


SEVERITY_RATIOS = ((1.05, "low"), (1.15, "medium"), (1.5, "high"))
"""How much slower than modelled makes an alarm low, medium or high (beyond: critical). A
shift in sigmas of a tick's mean would rate every alarm critical (a tick's mean is precise);
what an operator weighs is the latency the backend lost."""


def ratio_severity(ratio: float) -> str:
    for limit, name in SEVERITY_RATIOS:
        if ratio < limit:
            return name
    return "critical"


@dataclass(frozen=True)
class RoutingDriftAlarm:
    """One alarm: when, on which backend, and how far the residuals moved (log units: 0.1 is
    about 10% slower than modelled), from the warm-up's median to the mean since the change
    point (the last `RECENT_TICKS` ticks when it cannot be placed)."""

    ts: float
    backend: str
    shift: float
    sigma: float
    reference: float
    ticks: int
    change_ts: float | None = None
    """Where the rise began (Page's CUSUM estimate), when it can be placed."""

    @property
    def ratio(self) -> float:
        """exp(shift): how many times slower than at warm-up, on the model's scale."""
        return math.exp(self.shift)


@dataclass
class _Backend:
    detector: PageHinkley
    values: list[float] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)


class RoutingDriftMonitor:
    """Per backend, a calibrated upward Page-Hinkley on per-tick mean residuals (module doc)."""

    def __init__(
        self, names: Sequence[str], config: RoutingDriftConfig | None = None, start_ts: float = 0.0
    ) -> None:
        self.config = config or RoutingDriftConfig()
        self.names = tuple(names)
        self.start_ts = float(start_ts)
        self._state = {n: self._fresh() for n in self.names}
        self.alarms: list[RoutingDriftAlarm] = []

    def _fresh(self) -> _Backend:
        c = self.config
        return _Backend(
            PageHinkley.calibrated(
                mode="up",
                warmup=c.warmup_ticks,
                threshold_sigmas=c.threshold_sigmas,
                delta_sigmas=c.delta_sigmas,
                clip_sigmas=c.clip_sigmas,
            )
        )

    def _alarm(self, name: str, st: _Backend, ts: float) -> RoutingDriftAlarm:
        """Size the change: where it began (Page's CUSUM estimate on the same clipped values
        the detector saw), and the raw values' mean since then against the warm-up's median."""
        w = self.config.warmup_ticks
        ref = float(np.median(st.values[:w]))
        sigma = float(st.detector.sigma_ or 0.0)
        raw = np.asarray(st.values[w:])
        x = raw
        if self.config.clip_sigmas is not None and sigma > 0:
            c = self.config.clip_sigmas * sigma
            x = np.clip(raw, ref - c, ref + c)
        t = np.asarray(st.ts[w:])
        cp = cusum_change_point(t, x, reference_mean=ref, k=self.config.delta_sigmas * sigma)
        since = raw[t >= cp] if cp is not None else raw[-RECENT_TICKS:]
        return RoutingDriftAlarm(
            ts=ts,
            backend=name,
            shift=float(np.mean(since)) - ref if since.size else 0.0,
            sigma=sigma,
            reference=ref,
            ticks=len(st.values),
            change_ts=cp,
        )

    def value(self, residual: tuple[int, float, float] | None) -> float | None:
        """The tick's sample for one backend, or None when it does not count."""
        if residual is None:
            return None
        n, t, e = residual
        if n < self.config.min_requests:
            return None
        s = self.config.signal
        v = t if s == "ttft" else e if s == "e2e" else 0.5 * (t + e)
        return v if math.isfinite(v) else None

    def observe(
        self, ts: float, residuals: Mapping[str, tuple[int, float, float]]
    ) -> list[RoutingDriftAlarm]:
        """One tick: `residuals` per backend as `agents.router.tick_residuals` gives them
        (backends without completions may be missing). Returns this tick's alarms."""
        if ts < self.start_ts + self.config.burn_in_s:
            return []
        out = []
        for name in self.names:
            v = self.value(residuals.get(name))
            if v is None:
                continue
            st = self._state[name]
            st.values.append(v)
            st.ts.append(float(ts))
            if st.detector.update(v):
                out.append(self._alarm(name, st, float(ts)))
                # the detector re-warms on its own; its record restarts with it
                st.values, st.ts = [], []
        self.alarms.extend(out)
        return out


def replay(
    ts: Sequence[float],
    residuals: Sequence[Mapping[str, tuple[int, float, float]]],
    names: Sequence[str],
    config: RoutingDriftConfig | None = None,
    start_ts: float | None = None,
) -> list[RoutingDriftAlarm]:
    """Run the monitor over a recorded run, tick by tick (as it runs live)."""
    mon = RoutingDriftMonitor(names, config, start_ts=ts[0] if start_ts is None else start_ts)
    for t, r in zip(ts, residuals, strict=True):
        mon.observe(t, r)
    return mon.alarms


class RoutingDriftWatch(LoopBase):
    """The closed loop's side of it: each tick, the champion router's residuals through the
    loop's `RoutingDriftMonitor`; each alarm a drift report (with its backend), an event, a
    timeline entry and an alert."""

    routing_drift: RoutingDriftMonitor

    def _watch_routing_model(self) -> None:
        for a in self.routing_drift.observe(self.now, self.router.residuals):
            self._routing_drift_alarm(a)

    def _routing_drift_alarm(self, a: RoutingDriftAlarm) -> None:
        """A backend is slower than the routing model expects at its load: store the finding,
        note it and alert. Routing already adapts (the router's online correction shifts the
        backend's predictions); retraining the forecaster would not help, it does not route."""
        policy = getattr(self.router, "policy", None)
        model = getattr(policy, "model", None)
        version = getattr(model, "version_id", None) or None
        sd = a.shift / a.sigma if a.sigma > 0 else 0.0
        severity = ratio_severity(a.ratio)
        detail = {
            "severity": severity,
            "shift_log": round(a.shift, 4),
            "ratio": round(a.ratio, 4),
            "shift_sd": round(sd, 3),
            "sigma_log": round(a.sigma, 4),
            "reference_log": round(a.reference, 4),
            "ticks": a.ticks,
            "change_ts": a.change_ts,
            "signal": self.config.routing_drift.signal,
            "unit": "per-tick mean residual of completed requests",
        }
        self.store.insert_drift_reports(
            [
                StoredDriftReport(
                    ts=self.now,
                    kind="concept",
                    test="page_hinkley",
                    severity=severity,
                    model_version=version,
                    backend=a.backend,
                    feature=f"routing_residual_log_{self.config.routing_drift.signal}",
                    statistic=sd,
                    n_current=a.ticks,
                    detail=detail,
                    run_id=self.run_id,
                )
            ]
        )
        self.stats["drift_reports"] += 1
        summary = (
            f"routing model drift on {a.backend}: {a.ratio:.2f}x slower than modelled "
            f"({severity}; {sd:+.1f} sd of a tick's mean residual)"
        )
        self.timeline.append(
            TimelineEntry(
                ts=self.now,
                kind="routing_drift_detected",
                summary=summary,
                detail={"backend": a.backend, **detail},
            )
        )
        self.store.record_event(
            "routing_drift_detected",
            subject=a.backend,
            detail={"summary": summary, "model_version": version, **detail},
            ts=self.now,
            run_id=self.run_id,
        )
        self._progress(f"[{clock(self.now - self.start_ts)}] {summary}")
        self._alert(
            "drift",
            f"latency model on {a.backend}",
            severity,
            "The router's online correction already routes on the slower latency; check the "
            "backend (hardware, a new build, co-tenants) and retrain the latency model "
            "(`arcpoint router-model train`) if the shift persists.",
            **detail,
        )
