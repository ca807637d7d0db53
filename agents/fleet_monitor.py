"""The deterministic watch over live telemetry: anomalies and failing backends become alerts.

One streaming Isolation Forest detector per backend scores each tick's log p95 latency (tools/
anomaly/: no look-ahead, periodic refit, calibrated severity). A new peak of rarity is stored
as an anomaly and raised as an alert; a backend whose error rate reaches `failing_error_rate`
raises an SLA-risk alert. Alerts go through the AlertService, which deduplicates and rate-limits
per (kind, subject), so a flapping signal does not flood anyone. The monitor returns the
backends with an alarm raised this tick, which the router treats as ambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from context_api.alerting import AlertService
from context_api.store import Anomaly, Store
from tools.anomaly import DetectorConfig, StreamingDetector, make_detector
from tools.telemetry import TelemetryPoint

MONITOR_DETECTOR = DetectorConfig(window=360, refit_every=30, warmup=60, n_estimators=50)
"""Sized for live fleets: an hour of ten-second ticks, refit every 5 minutes, ready after 10."""


@dataclass
class MonitorStats:
    anomalies: list[tuple[float, str, float]] = field(default_factory=list)
    """(ts, backend, severity) of every anomaly raised."""
    alerts_sent: int = 0
    alerts_suppressed: int = 0


def _severity_word(severity: float) -> str:
    if severity >= 0.999:
        return "critical"
    if severity >= 0.99:
        return "high"
    return "medium"


class FleetMonitor:
    def __init__(
        self,
        backends: Sequence[str],
        store: Store | None = None,
        alerts: AlertService | None = None,
        *,
        config: DetectorConfig = MONITOR_DETECTOR,
        failing_error_rate: float = 0.5,
        run_id: str | None = None,
    ) -> None:
        self.detectors: dict[str, StreamingDetector] = {
            b: make_detector("iforest", config) for b in backends
        }
        self.store = store
        self.alerts = alerts
        self.failing_error_rate = failing_error_rate
        self.run_id = run_id
        self.stats = MonitorStats()
        self.now = 0.0
        """Time of the tick being observed: the clock to give the AlertService."""

    def observe(self, points: Iterable[TelemetryPoint]) -> dict[str, str]:
        """Score one tick of telemetry; return {backend: reason} for alarms raised now."""
        alarms: dict[str, str] = {}
        anomalies: list[Anomaly] = []
        points = list(points)
        if points:
            self.now = max(p.ts for p in points)
        for p in points:
            det = self.detectors.get(p.backend)
            if det is None:
                raise ValueError(f"telemetry for unknown backend {p.backend!r}")
            score = det.update(math.log(max(p.p95_ms, 1e-3)))
            if score.ready and score.alert > 0:
                alarms[p.backend] = "anomaly"
                self.stats.anomalies.append((p.ts, p.backend, score.severity))
                anomalies.append(
                    Anomaly(
                        ts=p.ts,
                        backend=p.backend,
                        score=score.score,
                        severity=score.severity,
                        detector="iforest:log_p95",
                        features={
                            "p95_ms": p.p95_ms,
                            "error_rate": p.error_rate,
                            "rps": p.rps,
                            "surprise": score.surprise,
                        },
                        run_id=self.run_id,
                    )
                )
                self._alert(
                    "anomaly",
                    p.backend,
                    _severity_word(score.severity),
                    p.ts,
                    {
                        "p95_ms": round(p.p95_ms, 1),
                        "error_rate": round(p.error_rate, 4),
                        "severity": round(score.severity, 4),
                        "surprise": round(score.surprise, 2),
                    },
                    f"inspect {p.backend}: its p95 latency is rarer than its recent history",
                )
            if p.error_rate >= self.failing_error_rate:
                alarms.setdefault(p.backend, "failing")
                self._alert(
                    "sla_risk",
                    p.backend,
                    "critical",
                    p.ts,
                    {"error_rate": round(p.error_rate, 4), "p95_ms": round(p.p95_ms, 1)},
                    f"{p.backend} is failing: keep it ejected and page its owner",
                )
        if anomalies and self.store is not None:
            self.store.insert_anomalies(anomalies)
        return alarms

    def _alert(
        self,
        kind: str,
        subject: str,
        severity: str,
        ts: float,
        evidence: dict[str, float],
        action: str,
    ) -> None:
        if self.alerts is None:
            return
        emitted = self.alerts.emit(
            kind=kind,
            subject=subject,
            severity=severity,
            evidence=evidence,
            recommended_action=action,
            at=ts,
            run_id=self.run_id,
        )
        if emitted.action == "notify":
            self.stats.alerts_sent += 1
        else:
            self.stats.alerts_suppressed += 1
