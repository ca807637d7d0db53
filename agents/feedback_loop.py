"""The closed loop: late outcomes -> error analysis -> drift -> retrain -> experiment -> promotion.

`FeedbackLoop` sits beside the router of one fleet and is driven tick by tick by its caller (a
simulator replay, or a service's clock): `route(request)` for each request, then
`on_tick(ts, decisions, telemetry, arrivals)` once the tick's telemetry is in. Everything it
decides is written to the store (decisions, outcomes, drift reports, model versions,
experiments with every look, events) and raised through the AlertService, and it keeps its own
timeline. It is deterministic: no wall clock, every random draw seeded.

What an outcome is. A decision carries the forecast of its backend's p95 latency one horizon
(5 minutes) ahead, so the label that judges it is that backend's *measured p95 at decision time
+ horizon*. It becomes known only when that tick's telemetry arrives: every outcome arrives
five minutes late (label lag) and is joined to its decision in the store through
`record_outcomes`. One request's own latency would be the wrong label: it is a single draw from
the distribution whose 95th percentile was forecast.

Sampling (stated, because it changes what the statistics mean). Requests to one backend in one
tick share one forecast and one label, so recording all of them would repeat the same error
hundreds of times and let a test count them as independent. The loop records `samples_per_tick`
requests per tick, drawn by a seeded generator independently of the experiment's arm
assignment (so the arms' share among the samples is unbiased and the SRM check on them is
valid). Errors of consecutive ticks are still correlated (lag-1 autocorrelation about 0.3-0.5
per backend, gone after about a minute), so an experiment's unit is not the request but a
60 s block (`experiment_block_s`): each arm's mean absolute error per block, the batch-means
method. The minimum and planned samples per arm count blocks; each look also reports the
requests behind them, the lag-1 autocorrelation of the block series and the effective sample
size it implies, so an operator can see whether the independence the tests assume holds.

Detection runs on a model's errors after a burn-in (`burn_in_s`: the fleet and the router
settle first); its reference is the model's first `reference_samples` errors after that.

The steps, in the order they run each tick:

1. *Decisions*: the sampled decisions are stored with the routing model's forecast; during an
   experiment both arms' forecasts are stored as experiment predictions.
2. *Telemetry*: stored, fed to the router (forecasts refresh once), and to every model under
   evaluation (the shadow challenger, the previous champion after a promotion).
3. *Outcomes*: decisions whose target tick has arrived get their label; the store joins them;
   the joined rows are read back and their absolute errors feed a calibrated one-sided
   Page-Hinkley detector (`PageHinkley.calibrated(mode="up")`) and the online residual
   corrector (`ResidualCorrector`, learning in micro-batches of `online_batch` outcomes;
   scored prequentially: its correction is computed at decision time, before the outcome).
4. *Checks*, every `check_every_s` and at once on a Page-Hinkley alarm: error analysis of the
   last window (`analyze_errors`), concept drift (Welch t and Mann-Whitney U on absolute
   errors, the model's first errors in service against the last `current_window_s`), drift
   reports and alerts, the retraining rule (`decide_retrain`), retraining the forest on the
   window it names, a new model version (parent, training window, hold-out metrics, artifact),
   and the experiment: champion against challenger in shadow mode (both predict, the champion
   routes) or split mode (`assign_arm` on the request id picks which model's forecasts route a
   request), judged at every check with the alpha-spending rule of `tools.experiment_stats`.
5. *Verdict*: a winning challenger is activated in the store and swapped into the router's
   `FleetState` (no restart); then the previous champion keeps forecasting in shadow (a
   *post-promotion watch*, a second shadow experiment) and is restored by a rollback if it
   turns out better. A losing or tied challenger is withdrawn. Every change is a model
   activation, an event and an alert.

The loop also follows the store: when the active version changes underneath it (`arcpoint
models rollback` from another process), the next check loads that version's artifact and swaps
it into the router. An operator (or an agent) can also submit a model trained elsewhere as a
challenger (`challenge`) or promote one directly (`promote`, which still starts the watch).

Why the watch matters: in shadow mode the challenger is scored only on the traffic the
champion routed. Once it routes, its forecasts move traffic (for example back onto a backend
the champion had drained), into states it never saw; the watch scores it there, against the
previous champion, and rolls it back when it loses. Split mode measures each model on the
traffic it routes itself, at the price of power (independent arms, half the samples each).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.router import Router
from context_api.alerting import AlertService
from context_api.fleet_state import FleetState
from context_api.model_store import load_forecaster, register_forecaster, save_forecaster
from context_api.store import DriftReport as StoredDriftReport
from context_api.store import ExperimentResult, Store, decision_row
from tools.drift import EFFECT_BANDS, SEVERITY_ORDER, concept_drift
from tools.drift.page_hinkley import PageHinkley, robust_sigma
from tools.error_analysis import analyze_errors
from tools.experiment_stats import (
    ExperimentConfig,
    ExperimentVerdict,
    assign_arm,
    evaluate_shadow,
    evaluate_split,
    srm_check,
)
from tools.features import FEATURE_NAMES, LONG_TICKS, feature_index
from tools.forecaster import Forecaster, train
from tools.online_learner import LearnerParams, ResidualCorrector
from tools.policy import PredictivePolicy
from tools.retrain_policy import (
    RetrainDecision,
    RetrainInputs,
    RetrainPolicy,
    decide_retrain,
    loop_policy,
)
from tools.routing import BackendInfo, Decision, RouteRequest
from tools.series_stats import block_means, cusum_change_point, effective_sample_size
from tools.telemetry import HORIZON_TICKS, TICK_SECONDS, TelemetryPoint

KIND = "forecaster"
HORIZON_S = HORIZON_TICKS * TICK_SECONDS
Mode = Literal["shadow", "split"]
_RPS = feature_index("rps")

__all__ = [
    "FeedbackLoop",
    "LoopConfig",
    "TimelineEntry",
    "block_means",
    "cusum_change_point",
    "effective_sample_size",
    "load_forecaster",
    "register_forecaster",
    "save_forecaster",
    "sync_active_forecaster",
]


# --------------------------------------------------------------------------------- configuration
def _default_experiment() -> ExperimentConfig:
    # Units are 60 s blocks (see LoopConfig.experiment_block_s): at least 20 per arm before any
    # test, 90 (an hour and a half) at the planned horizon.
    return ExperimentConfig(
        alpha=0.05, min_samples_per_arm=20, planned_samples_per_arm=90, n_bootstrap=2000
    )


class LoopConfig(BaseModel):
    """How the loop samples, detects, retrains and experiments (defaults: 10 s ticks).

    The detector's defaults were chosen on simulated runs of the loop's scenario (seeds 0-4,
    4 h each, with and without drift): no alarm on 5 x 4 h without drift, and detection
    22-80 min after the drift began (the label lag included). Absolute errors of a 5-minute
    p95 forecast are bursty (a traffic burst spoils several minutes of forecasts at once), so
    the threshold is high (60 sigma) and samples are clipped at 2 sigma above the warm-up
    median: only a sustained rise of the error raises an alarm.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    samples_per_tick: int = Field(3, ge=1, description="requests per tick whose outcome is kept")
    check_every_s: float = Field(300.0, gt=0)
    burn_in_s: float = Field(
        900.0, ge=0, description="a model's first errors in service that no detector uses"
    )
    ph_warmup: int = Field(300, ge=30, description="errors that calibrate Page-Hinkley's sigma")
    ph_threshold_sigmas: float = Field(60.0, gt=0)
    ph_delta_sigmas: float = Field(0.3, ge=0)
    ph_clip_sigmas: float = Field(2.0, gt=0)
    reference_samples: int = Field(
        300, ge=30, description="errors after the burn-in: the concept-drift reference"
    )
    current_window_s: float = Field(1800.0, gt=0, description="concept drift's current window")
    min_concept_samples: int = Field(30, ge=10)
    drift_alpha: float = Field(0.05, gt=0, lt=0.5)
    analysis_every_s: float = Field(1800.0, gt=0, description="error analysis window")
    retrain: RetrainPolicy = Field(default_factory=loop_policy)
    experiment: ExperimentConfig = Field(default_factory=_default_experiment)
    mode: Mode = "shadow"
    experiment_block_s: float | None = Field(
        60.0,
        gt=0,
        description="the experiment's unit: mean error per block of this many seconds "
        "(batch means); None compares single requests",
    )
    watch_after_promotion: bool = True
    n_estimators: int = Field(60, ge=1)
    max_depth: int | None = 12
    train_holdout_fraction: float = Field(0.25, gt=0, lt=1)
    train_calibration_fraction: float = Field(0.3, gt=0, lt=1)
    online_batch: int = Field(24, ge=1, description="outcomes per online-learner update")
    online_min_samples: int = Field(100, ge=0)
    online_loss: Literal["squared_error", "huber"] = Field(
        "huber", description="huber: a few huge p95 residuals must not steer the corrector"
    )
    online_epsilon: float = Field(0.5, gt=0, description="huber's knee, in standardised units")
    online_eta0: float = Field(0.01, gt=0)
    online_max_correction_ms: float = Field(200.0, ge=0)
    telemetry_flush_ticks: int = Field(30, ge=1)
    seed: int = 0


class TimelineEntry(BaseModel):
    """One thing that happened, in simulated (or service) time."""

    ts: float
    kind: str
    summary: str
    detail: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------------- artifacts


def sync_active_forecaster(
    store: Store,
    fleet: FleetState,
    *,
    loader: Callable[[str], Forecaster] = load_forecaster,
    cache: dict[str, Forecaster] | None = None,
) -> str | None:
    """Make the fleet forecast with the store's active forecaster, without a restart.

    Returns the version swapped in, or None when the fleet already uses it (or none is
    active). A version without an artifact cannot be loaded: ValueError names it.
    """
    active = store.active_model_version(KIND)
    current = fleet.forecaster.version_id if fleet.forecaster is not None else None
    if active is None or active.version_id == current:
        return None
    model = (cache or {}).get(active.version_id)
    if model is None:
        if not active.artifact_path:
            raise ValueError(f"model version {active.version_id} has no artifact to load")
        model = loader(active.artifact_path)
        if model.version_id != active.version_id:
            raise ValueError(
                f"artifact {active.artifact_path} holds {model.version_id}, not {active.version_id}"
            )
        if cache is not None:
            cache[model.version_id] = model
    fleet.set_forecaster(model)
    return model.version_id


# --------------------------------------------------------------------------------- statistics


def _severity_max(*levels: str) -> str:
    return max(levels, key=SEVERITY_ORDER.index)


def _shift_severity(shift_sd: float) -> str:
    """Cohen's bands for a mean shift in reference standard deviations (as `tools.drift`)."""
    small, medium, large = EFFECT_BANDS["cohen_d"]
    if shift_sd < small:
        return "low"
    if shift_sd < medium:
        return "medium"
    if shift_sd < large:
        return "high"
    return "critical"


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


# --------------------------------------------------------------------------------- the loop
@dataclass(slots=True)
class _Pending:
    decision_id: str
    backend_index: int
    decision_ts: float
    target_ts: float
    features: np.ndarray
    corrected_ms: float | None


@dataclass
class _ModelErrors:
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


@dataclass
class _Experiment:
    experiment_id: str
    mode: Mode
    champion: Forecaster
    challenger: Forecaster
    started_at: float
    purpose: Literal["challenge", "watch"]
    spent: float = 0.0
    looks: int = 0
    routed: dict[str, int] = field(default_factory=lambda: {"champion": 0, "challenger": 0})
    router: Router | None = None
    verdict: ExperimentVerdict | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    last_look_ts: float = -math.inf

    @property
    def label(self) -> str:
        """Short name for timelines: 'exp2' of '<run id>:exp2'."""
        return self.experiment_id.rsplit(":", 1)[-1]


class FeedbackLoop:
    """Routes through a champion forecaster and closes the loop around it (module docstring)."""

    def __init__(
        self,
        store: Store,
        backends: Sequence[BackendInfo],
        champion: Forecaster,
        *,
        config: LoopConfig | None = None,
        run_id: str | None = None,
        alerts: AlertService | None = None,
        artifact_dir: str | Path | None = None,
        start_ts: float,
        progress: Callable[[str], None] | None = None,
        policy_factory: Callable[[tuple[BackendInfo, ...], str], PredictivePolicy] | None = None,
    ) -> None:
        """`policy_factory(backends, id_prefix)` builds each router's policy (the champion's,
        an experiment arm's); by default `PredictivePolicy` with its default configuration."""
        self.store = store
        self._policy_factory = policy_factory
        self.backends = tuple(backends)
        self.names = [b.name for b in self.backends]
        self.config = config or LoopConfig()
        self.run_id = run_id
        self.alerts = alerts
        self.artifact_dir = artifact_dir
        self._progress = progress or (lambda _m: None)
        self.now = float(start_ts)
        self.start_ts = float(start_ts)
        self.timeline: list[TimelineEntry] = []
        self.models: dict[str, Forecaster] = {champion.version_id: champion}

        register_forecaster(
            store, champion, artifact_dir=artifact_dir, at=start_ts, note="initial champion"
        )
        store.activate_model_version(
            champion.version_id, reason="feedback loop started", at=start_ts
        )
        self.fleet = FleetState(self.backends, champion)
        self.router = Router(self._policy("c"), self.fleet)
        self._rng = np.random.default_rng([self.config.seed, 4242])
        self._ticks = 0
        self._recent_points: deque[list[TelemetryPoint]] = deque(maxlen=LONG_TICKS)
        self._telemetry_buffer: list[TelemetryPoint] = []
        self._pending: deque[_Pending] = deque()
        self._X: np.ndarray | None = None
        self._shadow_pred: dict[str, np.ndarray] = {}
        self._rps_by_decision: dict[str, tuple[float, float]] = {}
        self._next_check = start_ts + self.config.check_every_s
        self._next_analysis = start_ts + self.config.analysis_every_s
        self._last_training_end = champion.trained_to_ts
        self._outcomes_since_training = 0
        self._experiment: _Experiment | None = None
        self._n_experiments = 0
        self._last_retrain_key: tuple | None = None
        self.stats: dict[str, int] = {
            "decisions_sampled": 0,
            "outcomes_recorded": 0,
            "outcomes_accepted": 0,
            "outcomes_missing_label": 0,
            "outcomes_expired": 0,
            "drift_reports": 0,
            "alerts": 0,
            "retrains": 0,
            "experiments": 0,
            "promotions": 0,
            "rollbacks": 0,
        }
        self.ph_alarms: list[float] = []
        self.analyses: list[dict[str, Any]] = []
        self.online: list[dict[str, Any]] = []
        self.model_errors: list[_ModelErrors] = []
        self._start_model(champion, start_ts)
        self._note(
            "champion_active",
            f"champion {champion.version_id} active"
            + (
                f" (hold-out MAE {champion.report.forest.mae_ms:.1f} ms)"
                if champion.report is not None
                else ""
            ),
            version=champion.version_id,
            trained_from_ts=champion.trained_from_ts,
            trained_to_ts=champion.trained_to_ts,
        )

    # ------------------------------------------------------------------ plumbing
    def _policy(self, tag: str) -> PredictivePolicy:
        prefix = f"{self.run_id or 'loop'}:{tag}:"
        if self._policy_factory is not None:
            return self._policy_factory(self.backends, prefix)
        return PredictivePolicy(self.backends, id_prefix=prefix)

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
        self._progress(f"[{_clock(self.now - self.start_ts)}] {summary}")

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
        self._errors = _ModelErrors(model.version_id, at)
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

    # ------------------------------------------------------------------ routing
    def route(self, request: RouteRequest) -> Decision:
        """Route one request: the champion's router, or in a split experiment the arm's."""
        exp = self._experiment
        if exp is not None and exp.router is not None:
            arm = assign_arm(request.request_id, self.config.experiment.split, exp.experiment_id)
            exp.routed[arm] += 1
            if arm == "challenger":
                return exp.router.route(request)
        return self.router.route(request)

    # ------------------------------------------------------------------ the tick
    def on_tick(
        self,
        ts: float,
        decisions: Sequence[Decision],
        telemetry: Sequence[TelemetryPoint],
        arrivals: int,
    ) -> None:
        """One tick: the decisions routed during it, then the telemetry that ended it.

        Bad telemetry (unknown backend, out of order, NaN or negative values) raises the
        FleetState's ValueError before anything of this tick is stored."""
        self.now = float(ts)
        self._ticks += 1
        X, shadow = self._X, self._shadow_pred  # what this tick's decisions were made with
        self._ingest(telemetry, arrivals)
        self._record_decisions(decisions, X, shadow)
        alarm = self._resolve_outcomes(telemetry)
        if alarm or self.now >= self._next_check:
            self._check()
            while self._next_check <= self.now:
                self._next_check += self.config.check_every_s

    # -- 1. decisions
    def _record_decisions(
        self,
        decisions: Sequence[Decision],
        X: np.ndarray | None,
        shadow: dict[str, np.ndarray],
    ) -> None:
        if X is None or not decisions or self._ticks <= LONG_TICKS:
            return  # no forecast from full feature windows yet
        k = min(self.config.samples_per_tick, len(decisions))
        picks = np.sort(self._rng.choice(len(decisions), size=k, replace=False))
        index = {n: i for i, n in enumerate(self.names)}
        rows, preds = [], []
        exp = self._experiment
        for p in picks:
            d = decisions[int(p)]
            chosen = d.chosen
            if chosen is None or not math.isfinite(chosen.forecast_ms):
                continue
            i = index[d.backend]
            x = X[i]
            rows.append(decision_row(d, run_id=self.run_id))
            corrected = None
            if self._corrector.active and d.model_version == self.champion.version_id:
                corrected = float(self._corrector.predict_many(x[None, :], [chosen.forecast_ms])[0])
            self._pending.append(_Pending(d.decision_id, i, d.ts, d.ts + HORIZON_S, x, corrected))
            self._rps_by_decision[d.decision_id] = (d.ts, float(x[_RPS]))
            if exp is not None:
                preds.extend(self._experiment_rows(exp, d, i, chosen.forecast_ms, shadow))
        if rows:
            self.stats["decisions_sampled"] += self.store.insert_decisions(rows)
        if preds:
            self.store.record_experiment_predictions(preds)

    def _experiment_rows(
        self,
        exp: _Experiment,
        d: Decision,
        i: int,
        routed_ms: float,
        shadow_pred: dict[str, np.ndarray],
    ) -> list[tuple[Any, ...]]:
        eid = exp.experiment_id
        if exp.mode == "split":
            arm = "challenger" if d.model_version == exp.challenger.version_id else "champion"
            return [(eid, d.decision_id, arm, d.model_version, routed_ms, 1)]
        shadow = shadow_pred.get(exp.challenger.version_id)
        if shadow is None or not math.isfinite(float(shadow[i])):
            return []
        return [
            (eid, d.decision_id, "champion", exp.champion.version_id, routed_ms, 1),
            (eid, d.decision_id, "challenger", exp.challenger.version_id, float(shadow[i]), 0),
        ]

    # -- 2. telemetry
    def _ingest(self, telemetry: Sequence[TelemetryPoint], arrivals: int) -> None:
        points = list(telemetry)
        self.router.on_telemetry(points, arrivals=arrivals)  # validates: raises on bad points
        exp = self._experiment
        if exp is not None and exp.router is not None:
            exp.router.on_telemetry(points, arrivals=arrivals)
        self._recent_points.append(points)
        self._telemetry_buffer.extend(points)
        if self._ticks % self.config.telemetry_flush_ticks == 0:
            self.flush()
        try:
            self._X = self.fleet.features()
        except ValueError:
            self._X = None
            return
        self._shadow_pred = {}
        if exp is not None and exp.mode == "shadow":
            self._shadow_pred[exp.challenger.version_id] = exp.challenger.predict(self._X).mean

    def flush(self) -> None:
        """Write buffered telemetry to the store."""
        if self._telemetry_buffer:
            self.store.insert_telemetry(
                self._telemetry_buffer,
                source="feedback_loop",
                run_id=self.run_id,
                simulated=self.run_id is not None,  # a loop under a run replays a simulated fleet
            )
            self._telemetry_buffer = []

    # -- 3. outcomes
    def _resolve_outcomes(self, telemetry: Sequence[TelemetryPoint]) -> bool:
        p95 = {p.backend: p.p95_ms for p in telemetry}
        half = TICK_SECONDS / 2.0
        due: list[_Pending] = []
        while self._pending and self._pending[0].target_ts <= self.now + half:
            item = self._pending.popleft()
            if abs(item.target_ts - self.now) < half and self.names[item.backend_index] in p95:
                due.append(item)
            else:
                self.stats["outcomes_missing_label"] += 1  # left pending: it expires, counted
        if not due:
            return False
        batch = [(u.decision_id, p95[self.names[u.backend_index]], self.now) for u in due]
        result = self.store.record_outcomes(batch)
        self.stats["outcomes_recorded"] += result.total
        self.stats["outcomes_accepted"] += result.accepted
        lo = min(u.decision_ts for u in due)
        hi = max(u.decision_ts for u in due)
        wanted = {u.decision_id: u for u in due}
        rows = [
            r
            for r in self.store.resolved_decisions(since=lo, until=hi + 1e-6, run_id=self.run_id)
            if r["decision_id"] in wanted
        ]
        alarm = False
        active = self.champion.version_id
        for r in rows:
            if r["predicted_latency_ms"] is None or r["model_version"] != active:
                continue
            u = wanted[r["decision_id"]]
            actual = float(r["actual_latency_ms"])
            predicted = float(r["predicted_latency_ms"])
            err = abs(actual - predicted)
            self._outcomes_since_training += 1
            self._online(u, predicted, actual)
            if u.target_ts < self._errors.since_ts + self.config.burn_in_s:
                continue  # the model's first minutes in service: not part of any reference
            self._errors.ts.append(u.target_ts)
            self._errors.abs_err.append(err)
            if self._ph.update(err):
                alarm = self._new_alarm = True
                self.ph_alarms.append(self.now)
        if not self._ph_ready_noted and self._ph.sigma_ is not None:
            self._ph_ready_noted = True
            self._note(
                "detector_ready",
                f"Page-Hinkley calibrated on {self.config.ph_warmup} errors of "
                f"{active} (sigma {self._ph.sigma_:.1f} ms, threshold "
                f"{self._ph.threshold_:.0f} ms)",
                store_event=False,
                sigma_ms=_r(self._ph.sigma_),
                threshold_ms=_r(self._ph.threshold_),
            )
        return alarm

    def _online(self, u: _Pending, predicted: float, actual: float) -> None:
        """Prequential score, then micro-batch learning of the forest's residual."""
        if u.corrected_ms is not None:
            self._online_scores.append(
                (u.target_ts, abs(actual - predicted), abs(actual - u.corrected_ms))
            )
        self._online_buffer.append((u.features, actual, predicted))
        if len(self._online_buffer) >= self.config.online_batch:
            X = np.vstack([b[0] for b in self._online_buffer])
            y = [b[1] for b in self._online_buffer]
            base = [b[2] for b in self._online_buffer]
            self._corrector.learn_many(X, y, base)
            self._online_buffer = []

    # ------------------------------------------------------------------ 4. checks
    def _check(self) -> None:
        self._sync_from_store()
        # a label that should have come one horizon and two ticks ago will not: expire, counted
        self.stats["outcomes_expired"] += self.store.expire_pending(
            self.now, max_age_s=HORIZON_S + 2 * TICK_SECONDS
        )
        if self.now >= self._next_analysis:
            self._analyse()
            self._next_analysis += self.config.analysis_every_s
        self._drift_check()
        if self._experiment is not None:
            self._look()
        else:
            self._maybe_retrain()

    def _sync_from_store(self) -> None:
        """Follow an activation made elsewhere (e.g. `arcpoint models rollback`)."""
        before = self.champion.version_id
        try:
            swapped = sync_active_forecaster(self.store, self.fleet, cache=self.models)
        except (ValueError, OSError) as exc:
            self._note("model_sync_failed", f"could not load the active version: {exc}")
            return
        if swapped is None:
            return
        self.models[swapped] = self.champion
        if self._experiment is not None:
            self._end_experiment("aborted", "the active model changed outside the loop", None)
        self._start_model(self.champion, self.now)
        self._note(
            "model_synced",
            f"active version changed in the store: router now forecasts with {swapped} "
            f"(was {before}), no restart",
            version=swapped,
            previous=before,
        )

    def _analyse(self) -> None:
        since = self.now - self.config.analysis_every_s
        rows = [
            r
            for r in self.store.resolved_decisions(since=since - HORIZON_S, run_id=self.run_id)
            if r["predicted_latency_ms"] is not None and r["observed_at"] >= since
        ]
        if len(rows) < 10:
            return
        report = analyze_errors(
            [r["predicted_latency_ms"] for r in rows],
            [r["actual_latency_ms"] for r in rows],
            model_version=[r["model_version"] or "none" for r in rows],
            backend=[r["backend"] for r in rows],
            ts=[r["ts"] for r in rows],
            load=[self._rps_by_decision.get(r["decision_id"], (0.0, 0.0))[1] for r in rows],
            window_seconds=self.config.analysis_every_s,
        )
        self._rps_by_decision = {  # only the next window's decisions can still be analysed
            k: v for k, v in self._rps_by_decision.items() if v[0] >= self.now - HORIZON_S
        }
        overall = [m for m in report.metrics if m.backend is None and m.window_start is None]
        biased = [t for t in report.bias.tests if t.biased]
        entry = {
            "ts": self.now,
            "window_start_ts": since,
            "n": report.n_rows,
            "models": {
                m.model_version: {
                    "n": m.n,
                    "mae_ms": _r(m.mae_ms),
                    "rmse_ms": _r(m.rmse_ms),
                    "r2": _r(m.r2, 3),
                    "mape_pct": _r(m.mape_pct),
                    "bias_ms": _r(m.mean_error_ms),
                }
                for m in overall
            },
            "biased_segments": [
                f"{t.model_version} {t.segment}={t.value} {t.direction} ({t.mean_error_ms:+.0f} ms)"
                for t in biased
            ],
        }
        self.analyses.append(entry)
        per_backend = [
            {
                "model_version": m.model_version,
                "backend": m.backend,
                "n": m.n,
                "mae_ms": _r(m.mae_ms),
                "rmse_ms": _r(m.rmse_ms),
                "r2": _r(m.r2, 3),
                "mape_pct": _r(m.mape_pct),
            }
            for m in report.metrics
            if m.backend is not None
        ]
        distributions = [
            {
                "model_version": d.model_version,
                "n": d.n,
                "percentiles_ms": d.percentiles_ms,
                "skew": _r(d.skew, 3) if d.skew is not None else None,
                "excess_kurtosis": _r(d.excess_kurtosis, 3)
                if d.excess_kurtosis is not None
                else None,
                "normality": d.normality.model_dump(),
            }
            for d in report.distributions
        ]
        self.store.record_event(
            "error_analysis",
            subject=KIND,
            detail={
                **entry,
                "per_backend": per_backend,
                "distributions": distributions,
                "skipped": len(report.skipped_metrics) + len(report.bias.skipped),
                "summary": report.summary,
            },
            ts=self.now,
            run_id=self.run_id,
        )
        if self._online_scores:
            sc = np.asarray(self._online_scores)
            recent = sc[sc[:, 0] >= since]
            if recent.size:
                item = {
                    "ts": self.now,
                    "n": int(recent.shape[0]),
                    "forest_mae_ms": _r(float(recent[:, 1].mean())),
                    "corrected_mae_ms": _r(float(recent[:, 2].mean())),
                    "model_version": self.champion.version_id,
                }
                self.online.append(item)
                self.store.record_event(
                    "online_learner", subject=KIND, detail=item, ts=self.now, run_id=self.run_id
                )

    # -- drift
    def _drift_check(self) -> None:
        """Concept drift test at every check; a Page-Hinkley alarm or a concept test of at least
        high severity opens a drift episode (stored, announced, alerted) that lasts until the
        model changes. The severity the retraining rule sees is the worse of the latest
        concept test and the last alarm's shift."""
        errs = self._errors
        c = self.config
        alarm, self._new_alarm = self._new_alarm, False
        if len(errs.abs_err) < c.reference_samples + c.min_concept_samples:
            return
        ref = errs.reference(c.reference_samples)
        ref_end = errs.ts[c.reference_samples - 1]
        cur = errs.window(max(self.now - c.current_window_s, ref_end + 1e-9), math.inf)
        report = concept_drift(ref, cur, alpha=c.drift_alpha, min_samples=c.min_concept_samples)
        ph = self._ph_finding(ref) if alarm else None
        if ph is not None:
            self._ph_severity = ph["severity"]
        severity = _severity_max(report.max_severity, self._ph_severity)
        if self._drift is None:
            if ph is None and SEVERITY_ORDER.index(severity) < SEVERITY_ORDER.index("high"):
                return
            self._drift = {
                "detected_at": self.now,
                "change_point": ph["change_point_ts"] if ph else None,
                "by": "page_hinkley" if ph else "concept_test",
                "severity": severity,
            }
            self._store_drift(report, ph)
            self._announce_drift(report, ph, severity)
            return
        if ph is not None and self._drift["change_point"] is None:
            self._drift["change_point"] = ph["change_point_ts"]
        if ph is not None or SEVERITY_ORDER.index(severity) > SEVERITY_ORDER.index(
            self._drift["severity"]
        ):
            self._store_drift(report, ph)
        self._drift["severity"] = severity

    def _ph_finding(self, ref: np.ndarray) -> dict[str, Any]:
        """What an alarm found: where the rise began (CUSUM on the same clipped values the
        detector saw), and how large it is (MAE since then against the reference, in the
        reference's standard deviations, banded as Cohen's d)."""
        errs = self._errors
        sigma = float(self._ph.sigma_ or robust_sigma(ref))
        cap = float(np.median(ref)) + self.config.ph_clip_sigmas * sigma
        ts = np.asarray(errs.ts)
        raw = np.asarray(errs.abs_err)
        start = self.config.reference_samples
        cp = cusum_change_point(
            ts[start:],
            np.minimum(raw[start:], cap),
            reference_mean=float(np.minimum(ref, cap).mean()),
            k=self.config.ph_delta_sigmas * sigma,
        )
        after = raw[ts >= cp] if cp is not None else raw[-50:]
        ref_sd = float(np.std(ref, ddof=1)) or sigma
        shift = (float(after.mean()) - float(ref.mean())) / ref_sd
        return {
            "test": "page_hinkley",
            "severity": _shift_severity(max(shift, 0.0)),
            "change_point_ts": cp,
            "shift_sd": shift,
            "sigma_ms": sigma,
            "threshold_ms": self._ph.threshold_,
            "reference_mae_ms": float(ref.mean()),
            "mae_since_change_ms": float(after.mean()),
            "n_since_change": int(after.size),
        }

    def _store_drift(self, report: Any, ph: dict[str, Any] | None) -> None:
        rows = [
            StoredDriftReport(
                ts=self.now,
                kind="concept",
                test=r.test,
                severity=r.severity,
                model_version=self.champion.version_id,
                feature="abs_error",
                statistic=r.statistic,
                p_value=r.p_adjusted,
                n_reference=r.n_reference,
                n_current=r.n_current,
                detail={
                    "p_raw": r.p_value,
                    "effect_size": r.effect_size,
                    "effect_measure": r.effect_measure,
                    "reference_mae_ms": r.reference_mean,
                    "current_mae_ms": r.current_mean,
                    "status": r.status,
                },
                run_id=self.run_id,
            )
            for r in report.results
        ]
        if ph is not None:
            rows.append(
                StoredDriftReport(
                    ts=self.now,
                    kind="concept",
                    test="page_hinkley",
                    severity=ph["severity"],
                    model_version=self.champion.version_id,
                    feature="abs_error",
                    statistic=ph["shift_sd"],
                    n_reference=self.config.reference_samples,
                    n_current=ph["n_since_change"],
                    detail={k: v for k, v in ph.items() if k not in ("test", "severity")},
                    run_id=self.run_id,
                )
            )
        self.store.insert_drift_reports(rows)
        self.stats["drift_reports"] += len(rows)

    def _announce_drift(self, report: Any, ph: dict[str, Any] | None, severity: str) -> None:
        tests = {r.test: r for r in report.results if r.status != "insufficient_data"}
        welch, mw = tests.get("welch_t"), tests.get("mann_whitney_u")
        parts = []
        if ph is not None:
            cp = ph["change_point_ts"]
            parts.append(
                "Page-Hinkley alarm on |error|"
                + (f", change point ~{_clock(cp - self.start_ts)}" if cp is not None else "")
                + f", shift {ph['shift_sd']:+.2f} sd"
            )
        if welch is not None and mw is not None:
            parts.append(
                f"concept drift {report.max_severity} (MAE {welch.reference_mean:.0f} -> "
                f"{welch.current_mean:.0f} ms; Welch p={welch.p_adjusted:.2g}, "
                f"Mann-Whitney p={mw.p_adjusted:.2g})"
            )
        summary = f"drift detected ({severity}): " + "; ".join(parts)
        detail = {
            "severity": severity,
            "change_point_ts": ph["change_point_ts"] if ph else None,
            "page_hinkley": {k: _jsonable(v) for k, v in ph.items()} if ph else None,
            "concept": {
                r.test: {
                    "p_adjusted": _r(r.p_adjusted, 6),
                    "severity": r.severity,
                    "reference_mae_ms": _r(r.reference_mean),
                    "current_mae_ms": _r(r.current_mean),
                    "n_reference": r.n_reference,
                    "n_current": r.n_current,
                }
                for r in report.results
            },
        }
        self._note("drift_detected", summary, **detail)
        self._alert(
            "drift",
            f"{KIND} {self.champion.version_id}",
            severity if severity != "none" else "low",
            "Check the retraining decision; a challenger will be trained on data from after "
            "the change point and must win an experiment before it routes.",
            **{k: v for k, v in detail.items() if v is not None},
        )

    # -- retraining
    def _retrain_inputs(self) -> RetrainInputs:
        c = self.config
        drift = self._drift or {}
        recent = self._errors.window(self.now - c.current_window_s, math.inf)
        report = self.champion.report
        cp = drift.get("change_point")
        return RetrainInputs(
            now_ts=self.now,
            drift_severity=drift.get("severity", "none"),
            drift_started_at=cp if cp is not None and cp <= self.now else None,
            recent_mae_ms=float(recent.mean()) if recent.size else None,
            recent_mae_samples=int(recent.size),
            holdout_mae_ms=report.forest.mae_ms if report is not None else None,
            new_samples_since_training=self._outcomes_since_training,
            seconds_since_training=max(0.0, self.now - self._last_training_end),
        )

    def _maybe_retrain(self) -> None:
        inputs = self._retrain_inputs()
        decision = decide_retrain(inputs, self.config.retrain)
        key = (decision.retrain, tuple(decision.triggers), tuple(decision.blockers))
        if decision.triggers and key != self._last_retrain_key:
            self._note(
                "retrain_decision",
                decision.summary,
                retrain=decision.retrain,
                triggers=list(decision.triggers),
                blockers=list(decision.blockers),
                mae_ratio=_r(decision.mae_ratio, 3),
                window=decision.window.model_dump() if decision.window else None,
            )
        self._last_retrain_key = key
        if decision.retrain and decision.window is not None:
            self._retrain(decision)

    def _retrain(self, decision: RetrainDecision) -> None:
        c = self.config
        window = decision.window
        assert window is not None
        self.flush()
        points = self.store.list_telemetry(
            since=window.start_ts, until=window.end_ts + 1e-6, run_id=self.run_id
        )
        parent = self.champion.version_id
        try:
            model, report = train(
                points,
                n_estimators=c.n_estimators,
                max_depth=c.max_depth,
                seed=c.seed + self.stats["retrains"] + 1,
                holdout_fraction=c.train_holdout_fraction,
                calibration_fraction=c.train_calibration_fraction,
                parent_version=parent,
                n_jobs=1,
            )
        except ValueError as exc:
            self._last_training_end = self.now  # back off for a cooldown instead of retrying
            self._note("retrain_failed", f"retraining failed: {exc}", window=window.model_dump())
            return
        self.stats["retrains"] += 1
        self._last_training_end = self.now
        self._outcomes_since_training = 0
        self.models[model.version_id] = model
        register_forecaster(
            self.store,
            model,
            artifact_dir=self.artifact_dir,
            at=self.now,
            parent_id=parent,
            note=f"retrained by the feedback loop: {', '.join(decision.triggers)}",
        )
        self._note(
            "challenger_trained",
            f"challenger {model.version_id} trained on {len(points)} points "
            f"({_clock(window.start_ts - self.start_ts)}-{_clock(window.end_ts - self.start_ts)}"
            f"{', from the change point' if window.starts_at_drift else ''}); hold-out MAE "
            f"{report.forest.mae_ms:.1f} ms vs persistence {report.persistence.mae_ms:.1f} ms",
            version=model.version_id,
            parent=parent,
            trained_from_ts=model.trained_from_ts,
            trained_to_ts=model.trained_to_ts,
            window=window.model_dump(),
            holdout={
                "n": report.n_holdout,
                "mae_ms": _r(report.forest.mae_ms),
                "rmse_ms": _r(report.forest.rmse_ms),
                "r2": _r(report.forest.r2, 3),
                "mape_pct": _r(report.forest.mape_pct),
                "persistence_mae_ms": _r(report.persistence.mae_ms),
                "interval_coverage": _r(report.interval.holdout_coverage, 3),
            },
            fit_seconds=_r(report.fit_seconds, 3),
        )
        self._start_experiment(model, purpose="challenge", mode=c.mode)

    # -- experiments
    def _start_experiment(
        self, challenger: Forecaster, *, purpose: Literal["challenge", "watch"], mode: Mode
    ) -> None:
        self._n_experiments += 1
        self.stats["experiments"] += 1
        eid = f"{self.run_id or 'loop'}:exp{self._n_experiments}"
        cfg = self.config.experiment
        champion = self.champion
        name = "champion vs challenger" if purpose == "challenge" else "post-promotion watch"
        self.store.create_experiment(
            eid,
            champion.version_id,
            challenger.version_id,
            mode,
            name=name,
            started_at=self.now,
            run_id=self.run_id,
            params={
                **cfg.model_dump(),
                "purpose": purpose,
                "unit": "sampled request; outcome = its backend's measured p95 one horizon later",
                "samples_per_tick": self.config.samples_per_tick,
            },
        )
        exp = _Experiment(eid, mode, champion, challenger, self.now, purpose)
        if mode == "split":
            fleet = FleetState(self.backends, challenger)
            router = Router(self._policy(f"x{self._n_experiments}"), fleet)
            for points in self._recent_points:  # warm the arm's feature windows
                fleet.ingest(points)
            router.policy.on_tick(fleet.refresh(0))
            exp.router = router
        self._experiment = exp
        what = (
            "both predict, the champion routes"
            if mode == "shadow"
            else f"request-id hash sends {cfg.split:.0%} of requests to the challenger"
        )
        self._note(
            "experiment_started",
            f"{exp.label} started ({name}, {mode} mode: {what}): {champion.version_id} vs "
            f"{challenger.version_id}",
            experiment_id=eid,
            mode=mode,
            purpose=purpose,
            champion=champion.version_id,
            challenger=challenger.version_id,
        )

    def _arm_errors(self, exp: _Experiment) -> dict[str, np.ndarray]:
        """Each arm's absolute errors per sampled request (time order) and, when the
        experiment's unit is a time block, per block (the mean error of the block's requests).

        Shadow mode keeps only requests both models predicted, so the arrays pair up."""
        rows = self.store.experiment_errors(exp.experiment_id)
        if exp.mode == "split":
            arms = {
                arm: (
                    np.array([r["decision_ts"] for r in rows if r["arm"] == arm]),
                    np.array([r["abs_error"] for r in rows if r["arm"] == arm]),
                )
                for arm in ("champion", "challenger")
            }
        else:
            pairs: dict[str, dict[str, float]] = {}
            when: dict[str, float] = {}
            for r in rows:
                pairs.setdefault(r["decision_id"], {})[r["arm"]] = r["abs_error"]
                when[r["decision_id"]] = r["decision_ts"]
            both = [(when[d], p) for d, p in pairs.items() if len(p) == 2]
            t = np.array([w for w, _ in both])
            arms = {
                arm: (t, np.array([p[arm] for _, p in both])) for arm in ("champion", "challenger")
            }
        out = {f"{arm}_requests": e for arm, (_, e) in arms.items()}
        block = self.config.experiment_block_s
        for arm, (t, e) in arms.items():
            out[arm] = e if block is None else block_means(t, e, exp.started_at, block)
        return out

    def _look(self) -> None:
        exp = self._experiment
        assert exp is not None
        cfg = self.config.experiment
        errs = self._arm_errors(exp)
        a, b = errs["champion"], errs["challenger"]
        ra, rb = errs["champion_requests"], errs["challenger_requests"]
        logged = routed = None
        if exp.mode == "split":
            verdict = evaluate_split(a, b, cfg, previous_information_fraction=exp.spent)
            routed = srm_check(exp.routed["champion"], exp.routed["challenger"], cfg.split)
            logged = srm_check(ra.size, rb.size, cfg.split, cfg.srm_alpha)
            rho_a, neff_a = effective_sample_size(a)
            rho_b, neff_b = effective_sample_size(b)
            rho1, n_eff = max(rho_a, rho_b), min(neff_a, neff_b)
        else:
            verdict = evaluate_shadow(a, b, cfg, previous_information_fraction=exp.spent)
            rho1, n_eff = effective_sample_size(b - a)
        exp.looks += 1
        exp.last_look_ts = self.now
        exp.spent = verdict.spent_through_fraction
        exp.verdict = verdict
        unit = (
            "request"
            if self.config.experiment_block_s is None
            else f"{self.config.experiment_block_s:g} s block"
        )
        detail = {
            "look": exp.looks,
            "state": verdict.state,
            "summary": verdict.summary,
            "unit": unit,
            "requests": {"champion": int(ra.size), "challenger": int(rb.size)},
            "request_mae_ms": {
                "champion": _r(float(ra.mean())) if ra.size else None,
                "challenger": _r(float(rb.mean())) if rb.size else None,
            },
            "alpha_spent_at_look": verdict.alpha_spent_at_look,
            "alpha_spent_total": verdict.alpha_spent_total,
            "information_fraction": verdict.information_fraction,
            "effect_size": verdict.effect_size,
            "test": verdict.test,
            "lag1_autocorrelation": _r(rho1, 3),
            "effective_samples": _r(n_eff, 1),
            "routed_requests": dict(exp.routed) if exp.mode == "split" else None,
            "routed_srm": routed.model_dump() if routed is not None else None,
            "logged_srm": logged.model_dump() if logged is not None else None,
        }
        exp.detail = detail
        self.store.record_experiment_result(
            ExperimentResult(
                experiment_id=exp.experiment_id,
                ts=self.now,
                n_champion=verdict.n_champion,
                n_challenger=verdict.n_challenger,
                verdict=verdict.state,
                champion_mae=verdict.mae_champion_ms,
                challenger_mae=verdict.mae_challenger_ms,
                p_value=verdict.p_value,
                ci_lo=verdict.ci_low_ms,
                ci_hi=verdict.ci_high_ms,
                srm_p_value=(routed.p_value if routed is not None else None),
                detail=detail,
            )
        )
        for what, check in (("routed traffic", routed), ("sampled requests", logged)):
            if check is not None and check.detected:
                self._end_experiment(
                    "aborted", f"sample ratio mismatch in the {what}: {check.summary}", None
                )
                return
        if verdict.recommendation == "continue":
            return
        self._conclude(exp, verdict)

    def _conclude(self, exp: _Experiment, v: ExperimentVerdict) -> None:
        ci = (
            f"{v.ci_level:.0%} CI [{v.ci_low_ms:+.1f}, {v.ci_high_ms:+.1f}] ms"
            if v.ci_low_ms is not None and v.ci_high_ms is not None
            else "no CI"
        )
        names = (
            ("challenger", "champion")
            if exp.purpose == "challenge"
            else ("previous model", "promoted model")
        )
        figures = (
            f"MAE {names[0]} {v.mae_challenger_ms:.1f} vs {names[1]} {v.mae_champion_ms:.1f} ms,"
            f" {ci}, p={v.p_value:.2g} (allowed {v.alpha_spent_at_look:.2g} at look "
            f"{exp.looks}), n={v.n_champion}/{v.n_challenger}"
            if v.p_value is not None
            and v.mae_challenger_ms is not None
            and v.mae_champion_ms is not None
            else v.summary
        )
        winner = {
            "challenger_wins": exp.challenger.version_id,
            "champion_wins": exp.champion.version_id,
        }.get(v.state)
        status: Literal["concluded", "aborted"] = (
            "aborted" if v.state == "srm_failed" else "concluded"
        )
        said = v.state
        if exp.purpose == "watch":
            said = {
                "challenger_wins": "previous model better",
                "champion_wins": "promoted model better",
            }.get(v.state, v.state)
        self._end_experiment(status, f"{said}: {figures}", winner)
        if exp.purpose == "challenge":
            if v.state == "challenger_wins":
                self._promote(exp, v)
            else:
                self._note(
                    "challenger_withdrawn",
                    f"challenger {exp.challenger.version_id} withdrawn ({v.state}); "
                    f"{exp.champion.version_id} stays active",
                    version=exp.challenger.version_id,
                    state=v.state,
                )
        elif v.state == "challenger_wins":  # the watch: the previous champion is better
            self._rollback(exp, v)
        else:
            self._note(
                "promotion_confirmed",
                f"post-promotion watch: {exp.champion.version_id} holds ({said}); "
                f"{exp.challenger.version_id} stays retired",
                state=v.state,
            )

    def _end_experiment(
        self,
        status: Literal["concluded", "aborted"],
        verdict: str,
        winner: str | None,
        *,
        alert: bool = True,
    ) -> None:
        exp = self._experiment
        assert exp is not None
        self.store.conclude_experiment(
            exp.experiment_id, verdict=verdict, winner_id=winner, status=status, ended_at=self.now
        )
        self._experiment = None
        v = exp.verdict
        detail = {
            "experiment_id": exp.experiment_id,
            "purpose": exp.purpose,
            "mode": exp.mode,
            "status": status,
            "winner": winner,
            "looks": exp.looks,
            "verdict": v.model_dump(mode="json") if v is not None else None,
            "look_detail": exp.detail,
            "started_at": exp.started_at,
            "champion": exp.champion.version_id,
            "challenger": exp.challenger.version_id,
        }
        self._note(
            "experiment_verdict",
            f"{exp.label} {status}: {verdict}",
            store_event=False,
            **detail,
        )
        if not alert:
            return
        self._alert(
            "experiment_verdict",
            exp.experiment_id,
            "info" if status == "concluded" else "medium",
            "Promote the winner; keep the champion when there is no winner."
            if exp.purpose == "challenge"
            else "Nothing to do unless the watch recommends a rollback.",
            status=status,
            winner=winner,
            verdict=verdict,
            looks=exp.looks,
        )

    def _promote(self, exp: _Experiment, v: ExperimentVerdict) -> None:
        self.promote(exp.challenger, reason=f"won {exp.label}: challenger_wins, p={v.p_value:.2g}")

    # ------------------------------------------------------------------ operator actions
    def challenge(self, challenger: Forecaster, *, mode: Mode | None = None) -> str:
        """Start a champion-vs-challenger experiment with a model trained elsewhere (the loop
        starts its own after a retrain). Registers the model if the store does not know it.
        Returns the experiment id; ValueError while another experiment runs."""
        if self._experiment is not None:
            raise ValueError(f"experiment {self._experiment.experiment_id} is still running")
        if challenger.version_id == self.champion.version_id:
            raise ValueError("the challenger is the champion")
        self.models[challenger.version_id] = challenger
        register_forecaster(
            self.store,
            challenger,
            artifact_dir=self.artifact_dir,
            at=self.now,
            parent_id=challenger.parent_version
            if challenger.parent_version and self.store.get_model_version(challenger.parent_version)
            else None,
            note="challenger submitted to the feedback loop",
        )
        self._start_experiment(challenger, purpose="challenge", mode=mode or self.config.mode)
        assert self._experiment is not None
        return self._experiment.experiment_id

    def promote(self, model: Forecaster, *, reason: str) -> None:
        """Make `model` the active version and the router's forecaster (no restart), and,
        unless disabled, watch it against the previous champion in shadow."""
        if self._experiment is not None:
            self._end_experiment("aborted", f"superseded by a promotion: {reason}", None)
        old = self.champion
        if old.version_id == model.version_id:
            return
        self.models[model.version_id] = model
        register_forecaster(
            self.store, model, artifact_dir=self.artifact_dir, at=self.now, note="promoted"
        )
        self.store.activate_model_version(model.version_id, reason=reason, at=self.now)
        self.fleet.set_forecaster(model)
        self.stats["promotions"] += 1
        self._last_training_end = self.now
        self._start_model(model, self.now)
        self._note(
            "promotion",
            f"promoted {model.version_id} (previous {old.version_id}); the router forecasts with "
            "it from the next tick, no restart",
            version=model.version_id,
            previous=old.version_id,
            reason=reason,
        )
        self._alert(
            "model_change",
            KIND,
            "info",
            f"None: {reason}. Roll back with `arcpoint models rollback --to {old.version_id}` "
            "if needed.",
            version=model.version_id,
            previous=old.version_id,
        )
        if self.config.watch_after_promotion:
            self._start_experiment(old, purpose="watch", mode="shadow")

    def _rollback(self, exp: _Experiment, v: ExperimentVerdict) -> None:
        bad = exp.champion
        good = exp.challenger
        reason = f"post-promotion watch {exp.label}: previous model better"
        self.store.rollback_model(KIND, to_version=good.version_id, reason=reason, at=self.now)
        self.fleet.set_forecaster(good)
        self.stats["rollbacks"] += 1
        self._start_model(good, self.now)
        self._note(
            "rollback",
            f"rolled back from {bad.version_id} to {good.version_id}: {reason}",
            version=good.version_id,
            previous=bad.version_id,
        )
        self._alert(
            "model_change",
            KIND,
            "high",
            "Investigate why the retrained model lost to its parent after promotion.",
            version=good.version_id,
            previous=bad.version_id,
        )

    # ------------------------------------------------------------------ the end
    def finish(self) -> None:
        """Flush telemetry, take a last look at a running experiment, expire labels that should
        have arrived (one horizon and a tick late) and record a summary event."""
        self.flush()
        exp = self._experiment
        if exp is not None and exp.last_look_ts < self.now:
            self._look()
        if self._experiment is not None:
            v = self._experiment.verdict
            state = v.state if v is not None else "collecting"
            self._end_experiment(
                "aborted", f"run ended before a verdict ({state})", None, alert=False
            )
        expired = self.store.expire_pending(self.now, max_age_s=HORIZON_S + 2 * TICK_SECONDS)
        self.stats["outcomes_expired"] += expired
        self.stats["outcomes_pending_at_end"] = len(self._pending)  # labels not due yet
        self._note(
            "loop_finished",
            f"loop finished: {self.stats['outcomes_accepted']} outcomes joined, "
            f"{self.stats['retrains']} retrain(s), {self.stats['promotions']} promotion(s), "
            f"{self.stats['rollbacks']} rollback(s)",
            stats=dict(self.stats),
            active=self.champion.version_id,
        )


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return _r(v, 4)
    if isinstance(v, np.floating | np.integer):
        return _jsonable(v.item())
    return v


def _clock(seconds: float) -> str:
    """h:mm:ss for a duration (negative with a sign)."""
    sign = "-" if seconds < 0 else ""
    s = round(abs(seconds))
    return f"{sign}{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def clock(seconds: float) -> str:
    """Public form of the h:mm:ss formatter used in timelines."""
    return _clock(seconds)


def iter_kinds(entries: Iterable[TimelineEntry], kind: str) -> list[TimelineEntry]:
    return [e for e in entries if e.kind == kind]
