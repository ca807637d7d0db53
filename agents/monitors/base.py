"""What the loop's monitors share: the loop's state (declared on `LoopBase`, set by
`FeedbackLoop`), its timeline and alerts, a model's errors in service, and the serving model's
fresh start after a change."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from tools.drift.page_hinkley import PageHinkley
from tools.features import FEATURE_NAMES
from tools.forecaster import Forecaster
from tools.online_learner import LearnerParams, ResidualCorrector
from tools.telemetry import HORIZON_TICKS, TICK_SECONDS

if TYPE_CHECKING:
    from agents.feedback_loop import LoopConfig
    from agents.router import Router
    from context_api.alerting import AlertService
    from context_api.fleet_state import FleetState
    from context_api.store import Store
    from tools.routers.base import RoutingPolicy
    from tools.routing import BackendInfo

KIND = "forecaster"
HORIZON_S = HORIZON_TICKS * TICK_SECONDS
Mode = Literal["shadow", "split"]


class TimelineEntry(BaseModel):
    """One thing that happened, in simulated (or service) time."""

    ts: float
    kind: str
    summary: str
    detail: dict[str, Any] = Field(default_factory=dict)


@dataclass
class ModelErrors:
    """A model's absolute errors in service, in arrival order, with their target times."""

    version: str
    since_ts: float
    ts: list[float] = field(default_factory=list)
    abs_err: list[float] = field(default_factory=list)

    def window(self, since: float, until: float) -> np.ndarray:
        t = np.asarray(self.ts)
        e = np.asarray(self.abs_err)
        return e[(t >= since) & (t < until)]

    def reference(self, n: int) -> np.ndarray:
        return np.asarray(self.abs_err[:n])


def rounded(x: float | None, nd: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return rounded(v, 4)
    if isinstance(v, np.floating | np.integer):
        return jsonable(v.item())
    return v


def clock(seconds: float) -> str:
    """h:mm:ss for a duration (negative with a sign), as timelines print it."""
    sign = "-" if seconds < 0 else ""
    s = round(abs(seconds))
    return f"{sign}{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def iter_kinds(entries: Iterable[TimelineEntry], kind: str) -> list[TimelineEntry]:
    return [e for e in entries if e.kind == kind]


class LoopBase:
    """State every monitor reads or writes (set by `FeedbackLoop.__init__`)."""

    store: Store
    backends: tuple[BackendInfo, ...]
    config: LoopConfig
    run_id: str | None
    alerts: AlertService | None
    artifact_dir: str | Path | None
    now: float
    start_ts: float
    timeline: list[TimelineEntry]
    models: dict[str, Forecaster]
    fleet: FleetState
    router: Router
    stats: dict[str, int]
    model_errors: list[ModelErrors]
    _progress: Callable[[str], None]
    _experiment: Any
    _policy_factory: Callable[[], RoutingPolicy]

    def _router(self, tag: str, fleet: FleetState) -> Router:
        """A router for `fleet` (the champion's, or an experiment arm's) around a fresh policy."""
        from agents.router import Router

        return Router(
            self._policy_factory(),
            fleet,
            id_prefix=f"{self.run_id or 'loop'}:{tag}:",
        )

    @property
    def champion(self) -> Forecaster:
        assert self.fleet.forecaster is not None
        return self.fleet.forecaster

    def _note(self, kind: str, summary: str, *, store_event: bool = True, **detail: Any) -> None:
        entry = TimelineEntry(ts=self.now, kind=kind, summary=summary, detail=detail)
        self.timeline.append(entry)
        if store_event:
            self.store.record_event(
                kind,
                subject=KIND,
                detail={"summary": summary, **detail},
                ts=self.now,
                run_id=self.run_id,
            )
        self._progress(f"[{clock(self.now - self.start_ts)}] {summary}")

    def _alert(
        self, kind: str, subject: str, severity: str, action: str, /, **evidence: Any
    ) -> None:
        if self.alerts is None:
            return
        self._progress(f"alert: {severity} {kind} on {subject}")
        self.alerts.emit(
            kind=kind,
            subject=subject,
            severity=severity,
            evidence=evidence,
            recommended_action=action,
            at=self.now,
            run_id=self.run_id,
        )
        self.stats["alerts"] += 1

    def _start_model(self, model: Forecaster, at: float) -> None:
        """A model starts serving: fresh error history, detector and online corrector."""
        self._errors = ModelErrors(model.version_id, at)
        self.model_errors.append(self._errors)
        c = self.config
        self._ph = PageHinkley.calibrated(
            mode="up",
            warmup=c.ph_warmup,
            min_instances=c.ph_warmup,
            threshold_sigmas=c.ph_threshold_sigmas,
            delta_sigmas=c.ph_delta_sigmas,
            clip_sigmas=c.ph_clip_sigmas,
        )
        self._ph_ready_noted = False
        self._drift: dict[str, Any] | None = None
        self._new_alarm = False
        self._ph_severity = "none"
        self._corrector = ResidualCorrector(
            feature_names=FEATURE_NAMES,
            min_samples=c.online_min_samples,
            max_correction_ms=c.online_max_correction_ms,
            params=LearnerParams(
                loss=c.online_loss,
                epsilon=c.online_epsilon,
                eta0=c.online_eta0,
                random_state=c.seed,
            ),
        )
        self._online_buffer: list[tuple[np.ndarray, float, float]] = []
        self._online_scores: list[tuple[float, float, float]] = []
