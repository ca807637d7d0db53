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
   evaluation (the shadow challenger, the previous champion after a promotion). The router's
   per-request latency model (what routes) is watched here too: its residuals of the tick,
   per backend, feed the routing drift detector (`agents.monitors.routing_drift`), whose
   alarms name the backend that became slower than modelled (drift report, event, alert). The
   forecaster's own detector below judges the 5-minute forecaster, which no longer routes
   (the forecast prior is off by default, `agents.router.Router`): retraining and promoting
   it is kept for when the prior is on, and changes no routing decision otherwise.
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

from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.monitors.base import (
    HORIZON_S,
    KIND,
    Mode,
    ModelErrors,
    TimelineEntry,
    clock,
    iter_kinds,
)
from agents.monitors.drift_watch import DriftWatch
from agents.monitors.experiments import ExperimentRunner
from agents.monitors.labels import OutcomeLabels
from agents.monitors.learner import Learner
from agents.monitors.promotion import PromotionGate
from agents.monitors.routing_drift import (
    RoutingDriftConfig,
    RoutingDriftMonitor,
    RoutingDriftWatch,
)
from context_api.alerting import AlertService
from context_api.fleet_state import FleetState
from context_api.model_store import load_forecaster, register_forecaster, save_forecaster
from context_api.store import Store
from tools.experiment_stats import ExperimentConfig, assign_arm
from tools.features import LONG_TICKS
from tools.forecaster import Forecaster
from tools.retrain_policy import RetrainPolicy, loop_policy
from tools.routers.base import Completion, EngineMetrics, RequestInfo, RouterView, RoutingPolicy
from tools.routing import BackendInfo, Decision
from tools.series_stats import block_means, cusum_change_point, effective_sample_size
from tools.telemetry import TICK_SECONDS, TelemetryPoint

if TYPE_CHECKING:
    from agents.monitors.experiments import _Experiment
    from agents.monitors.labels import _Pending

__all__ = [
    "FeedbackLoop",
    "LoopConfig",
    "ModelErrors",
    "TimelineEntry",
    "block_means",
    "clock",
    "cusum_change_point",
    "effective_sample_size",
    "iter_kinds",
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
    auto_approve: bool = Field(
        False,
        description="approve the loop's own proposals (recorded as approved by this setting); "
        "off: a promotion or rollback waits for an operator (`arcpoint approvals`)",
    )
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
    routing_drift: RoutingDriftConfig = Field(
        default_factory=RoutingDriftConfig,
        description="the routing model's drift detector (per backend, on its residuals)",
    )
    seed: int = 0


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


# --------------------------------------------------------------------------------- the loop
class FeedbackLoop(
    OutcomeLabels, DriftWatch, RoutingDriftWatch, Learner, ExperimentRunner, PromotionGate
):
    """Routes through a champion forecaster and closes the loop around it (module docstring).

    The monitors it holds live in `agents.monitors`: late outcomes (`labels`), the drift watch
    (`drift_watch`), the learner (error analysis, online corrector, retraining: `learner`), the
    experiments (`experiments`) and the approval gate in front of every model change
    (`promotion`); this class wires them to the router and drives them tick by tick."""

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
        policy_factory: Callable[[], RoutingPolicy],
    ) -> None:
        """`policy_factory()` builds a fresh per-request policy for each router (the
        champion's, an experiment arm's): `tools.routers.predictive.PredictiveRouter` over the
        fleet's profiles in production."""
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
        self.router = self._router("c", self.fleet)
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
        self._waiting = None
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
            "proposals": 0,
            "rejections": 0,
        }
        self.ph_alarms: list[float] = []
        self.routing_drift = RoutingDriftMonitor(
            self.names, self.config.routing_drift, start_ts=start_ts
        )
        self.analyses: list[dict[str, Any]] = []
        self.online: list[dict[str, Any]] = []
        self.model_errors: list[ModelErrors] = []
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

    # ------------------------------------------------------------------ routing
    def route(self, request: RequestInfo, view: RouterView) -> Decision:
        """Route one request: the champion's router, or in a split experiment the arm's."""
        exp = self._experiment
        if exp is not None and exp.router is not None:
            rid = str(request.request_id)
            arm = assign_arm(rid, self.config.experiment.split, exp.experiment_id)
            exp.routed[arm] += 1
            if arm == "challenger":
                return exp.router.route(request, view)
        return self.router.route(request, view)

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        """A completed request reaches every router (each keeps its own live state)."""
        self.router.on_complete(completion, view)
        exp = self._experiment
        if exp is not None and exp.router is not None:
            exp.router.on_complete(completion, view)

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        self.router.on_scrape(metrics, view)
        exp = self._experiment
        if exp is not None and exp.router is not None:
            exp.router.on_scrape(metrics, view)

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
        self._watch_routing_model()
        self._record_decisions(decisions, X, shadow)
        alarm = self._resolve_outcomes(telemetry)
        if alarm or self.now >= self._next_check:
            self._check()
            while self._next_check <= self.now:
                self._next_check += self.config.check_every_s

    # -- 1. decisions

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
        self._poll_approval()
        if self._experiment is not None:
            self._look()
        elif self._waiting is None:  # no new challenger while a change waits for its answer
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

    # -- drift

    # -- retraining

    # -- experiments

    # ------------------------------------------------------------------ operator actions

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
