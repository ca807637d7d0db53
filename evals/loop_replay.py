"""Replay a scenario through the closed loop, scored exactly as `evals.replay.run_policy` scores
a policy, with the fleet monitor and the router agent attached.

The request-level simulation, the figures and the random streams are `run_policy`'s, so a loop
run and a plain predictive run of one scenario are directly comparable; the difference is who
routes: `FeedbackLoop.route` (the champion's router, or an experiment arm's), and what happens
after each tick: `FeedbackLoop.on_tick` records sampled decisions and late outcomes, detects
drift, retrains, runs experiments and promotes. The monitor's alarms reach the loop's router the
same way they reach the replay's (as the fleet state's alarms before the tick's refresh); the
escalator is attached to the loop's router.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.feedback_loop import FeedbackLoop, LoopConfig
from evals.replay import DecisionSink, RunResult, run_policy
from tools.routers.base import Completion, EngineMetrics, PolicyBase, RequestInfo, RouterView
from tools.routers.predictive import PredictiveRouter
from tools.routing import Decision
from tools.sim.run import SimConfig, SimTick, profiles
from tools.sim.scenario import Built
from tools.sim.spec import backend_infos


class LoopAdapter(PolicyBase):
    """The closed loop as a `RoutingPolicy`: requests through `loop.route`, ticks through
    `loop.on_tick` (with the tick's decisions and telemetry)."""

    name = "predictive"

    def __init__(self, loop: FeedbackLoop, names: list[str], monitor: Any = None) -> None:
        self.loop = loop
        self.monitor = monitor
        self._index = {n: i for i, n in enumerate(names)}
        self._tick: list[Decision] = []
        self.decisions: dict[int, Decision] = {}
        self.keep_decisions = False

    @property
    def router(self) -> Any:
        return self.loop.router

    @property
    def forecasts(self) -> dict[str, float]:
        view = self.loop.fleet.view
        return {b.name: b.forecast_ms for b in view.backends} if view is not None else {}

    @property
    def residuals(self) -> dict[str, tuple[int, float, float]]:
        """The champion router's routing-model residuals of the last tick."""
        return self.loop.router.residuals

    @property
    def scrape_interval_s(self) -> float | None:
        return self.loop.router.scrape_interval_s

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        d = self.loop.route(request, view)
        self._tick.append(d)
        if self.keep_decisions:
            self.decisions[request.request_id] = d
        return self._index[d.backend]

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        self.loop.on_complete(completion, view)

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        self.loop.on_scrape(metrics, view)

    def on_tick(self, tick: SimTick) -> None:  # type: ignore[override]
        alarms = self.monitor.observe(tick.telemetry) if self.monitor is not None else None
        if alarms is not None:
            self.loop.fleet.alarms = dict(alarms)  # the tick's refresh (in on_tick) carries them
        decisions, self._tick = self._tick, []
        self.loop.on_tick(tick.ts, decisions, tick.telemetry, arrivals=tick.arrivals)


def make_loop(
    built: Built,
    forecaster: Any,
    store: Any,
    *,
    start_ts: float,
    loop_config: LoopConfig | dict[str, Any],
    run_id: str | None = None,
    alerts: Any = None,
    artifact_dir: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> FeedbackLoop:
    config = (
        loop_config
        if isinstance(loop_config, LoopConfig)
        else LoopConfig.model_validate({"seed": built.seed, **loop_config})
    )
    return FeedbackLoop(
        store,
        backend_infos(built.fleet, built.token_stats()),
        forecaster,
        config=config,
        run_id=run_id,
        alerts=alerts,
        artifact_dir=artifact_dir,
        start_ts=start_ts,
        progress=progress,
        policy_factory=lambda: PredictiveRouter(profiles(built.fleet), seed=built.seed),
    )


def run_with_loop(
    built: Built,
    forecaster: Any,
    store: Any,
    *,
    start_ts: float,
    loop_config: dict[str, Any],
    run_id: str | None = None,
    alerts: Any = None,
    artifact_dir: Path | None = None,
    sink: DecisionSink | None = None,
    on_tick: Callable[[SimTick], None] | None = None,
    monitor: Any = None,
    escalator: Any = None,
) -> tuple[RunResult, FeedbackLoop]:
    loop = make_loop(
        built,
        forecaster,
        store,
        start_ts=start_ts,
        loop_config=loop_config,
        run_id=run_id,
        alerts=alerts,
        artifact_dir=artifact_dir,
    )
    if escalator is not None:
        loop.router.escalate = escalator
        escalator.fleet = loop.fleet
    adapter = LoopAdapter(loop, [s.name for s in built.fleet], monitor)
    adapter.keep_decisions = sink is not None
    result = run_policy(
        built,
        "predictive",
        policy=adapter,
        sim_config=SimConfig(start_ts=start_ts),
        sink=sink,
        on_tick=on_tick,
        escalator=escalator,
    )
    loop.finish()
    return result, loop


def loop_summary(loop: FeedbackLoop, start_ts: float) -> dict[str, Any]:
    """What the loop did, for the report: its stats, first events and the timeline."""

    def first(kind: str) -> float | None:
        for e in loop.timeline:
            if e.kind == kind:
                return e.ts
        return None

    return {
        "stats": dict(loop.stats),
        "active_model": loop.champion.version_id,
        "drift_detected_ts": [e.ts for e in loop.timeline if e.kind == "drift_detected"],
        "routing_drift_alarms": [(a.ts, a.backend) for a in loop.routing_drift.alarms],
        "page_hinkley_alarms_ts": list(loop.ph_alarms),
        "first": {
            k: (None if (t := first(k)) is None else round(t - start_ts, 1))
            for k in (
                "detector_ready",
                "routing_drift_detected",
                "drift_detected",
                "challenger_trained",
                "experiment_started",
                "experiment_verdict",
                "promotion",
                "rollback",
            )
        },
        "timeline": [
            {"t_s": round(e.ts - start_ts, 1), "kind": e.kind, "summary": e.summary}
            for e in loop.timeline
        ],
    }
