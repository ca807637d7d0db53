"""Replay a user's request trace through every routing policy on the default fleet.

This is what a user runs on their own production trace to choose a router: the trace's requests
(arrival times, prompt and output tokens, optional prefix hashes) replayed through the
predictive router and the eight baselines on the request-level simulation, optionally under one
chaos event, over several seeds. A seed rotates the trace's start to a seeded point (the end
wraps to the beginning) and draws the requests' tiers, so seeds see different stretches of the
same traffic; every policy of one seed sees exactly the same requests (common random numbers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.escalation import Escalator
from agents.fleet_monitor import FleetMonitor
from agents.offline import OfflineModel
from evals.demo import prime
from evals.replay import POLICIES, RUN_KEYS, RunResult, run_policy
from evals.workers import run_tasks
from tools.forecaster import Forecaster, train
from tools.sim.chaos import CHAOS_KINDS, DEFAULT_DURATION_S, ChaosEvent
from tools.sim.history import simulate_history
from tools.sim.metrics import mean_interval
from tools.sim.run import SimConfig
from tools.sim.scenario import Scenario, TraceTraffic, build
from tools.sim.spec import DEFAULT_FLEET
from tools.sim.workload import Workload

START_TS = 1_700_000_000.0
_FLEET_WIDE = ("traffic_surge", "kv_pressure")


@dataclass(frozen=True)
class ReplayConfig:
    load: float | None = None
    chaos: str | None = None
    seeds: int = 3
    duration_s: float | None = None
    policies: tuple[str, ...] = POLICIES
    history_hours: float = 3.0
    n_estimators: int = 50
    jobs: int = 2


def chaos_event(kind: str, duration_s: float) -> ChaosEvent:
    """One event of `kind` a third of the way in, on the primary (b0) unless fleet-wide, for
    its default length (at most a third of the run)."""
    if kind not in CHAOS_KINDS:
        raise ValueError(f"unknown chaos kind {kind!r}; known: {', '.join(CHAOS_KINDS)}")
    return ChaosEvent(
        kind=kind,  # type: ignore[arg-type]
        start_s=duration_s / 3.0,
        duration_s=min(DEFAULT_DURATION_S[kind], duration_s / 3.0),
        backend=None if kind in _FLEET_WIDE else "b0",
    )


def trace_scenario(trace: Workload, config: ReplayConfig) -> Scenario:
    duration = config.duration_s or (
        trace.duration_s * (trace.offered_load(DEFAULT_FLEET) / config.load)
        if config.load
        else trace.duration_s
    )
    chaos = (chaos_event(config.chaos, duration),) if config.chaos else ()
    return Scenario(
        name=trace.name,
        seed=0,
        duration_s=duration,
        traffic=TraceTraffic(source=trace.name, load=config.load),
        chaos=chaos,
    )


_JOB: dict[str, Any] = {}


def _run_one(task: tuple[str, int]) -> RunResult:
    """One (policy, seed). The predictive router runs as in `arcpoint demo`: with the fleet
    monitor (primed on the training history) and the router agent's escalation (offline)."""
    policy, seed = task
    built = build(_JOB["scenario"], seed, _JOB["trace"])
    monitor = escalator = None
    if policy == "predictive":
        monitor = FleetMonitor([s.name for s in built.fleet])
        prime(monitor, _JOB["history"])
        escalator = Escalator(OfflineModel(), keep_records=False)
    try:
        result = run_policy(
            built,
            policy,
            forecaster=_JOB["forecaster"],
            sim_config=SimConfig(start_ts=START_TS),
            monitor=monitor,
            escalator=escalator,
            id_prefix=f"replay:{seed}:",
        )
    finally:
        if escalator is not None:
            escalator.close()
    result.ticks = []
    return result


@dataclass
class ReplayResult:
    scenario: Scenario
    runs: list[RunResult]
    forecaster: Forecaster | None
    seconds: dict[str, float]

    def by_policy(self) -> dict[str, list[RunResult]]:
        out: dict[str, list[RunResult]] = {}
        for r in sorted(self.runs, key=lambda r: r.seed):
            out.setdefault(r.policy, []).append(r)
        return out

    def to_json(self) -> dict[str, Any]:
        """`{"policies": {POLICY: {figure: mean over seeds, ..., "seeds": [...]}}}`."""
        out: dict[str, Any] = {}
        for policy, runs in self.by_policy().items():
            cell: dict[str, Any] = {}
            for k in RUN_KEYS:
                iv = mean_interval(r.metrics.get(k) for r in runs)
                cell[k] = None if iv is None else float(f"{iv.mean:.6g}")
            cell["seeds"] = [r.seed for r in runs]
            out[policy] = cell
        return {"policies": out}


def replay_trace(
    trace: Workload,
    config: ReplayConfig,
    progress: Callable[[str], None] = lambda _m: None,
) -> ReplayResult:
    bad = [p for p in config.policies if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown policies {bad}; known: {', '.join(POLICIES)}")
    if config.seeds < 1:
        raise ValueError("seeds must be at least 1")
    scenario = trace_scenario(trace, config)
    seconds: dict[str, float] = {}
    forecaster = None
    history: list = []
    if "predictive" in config.policies:
        t0 = time.perf_counter()
        progress(
            f"training the forecaster ({config.n_estimators} trees) on {config.history_hours:g} h "
            "of simulated history of the default fleet"
        )
        history = simulate_history(
            config.history_hours * 3600.0,
            seed=1000,
            start_ts=START_TS - config.history_hours * 3600.0,
        )
        forecaster, _ = train(history, n_estimators=config.n_estimators, seed=0, n_jobs=config.jobs)
        seconds["train"] = time.perf_counter() - t0
    _JOB.update(scenario=scenario, trace=trace, forecaster=forecaster, history=history)
    tasks: Sequence[tuple[str, int]] = sorted(
        ((p, k) for p in config.policies for k in range(config.seeds)),
        key=lambda t: (t[0] != "predictive", t[1]),
    )
    t0 = time.perf_counter()
    runs = []
    jobs = max(1, min(config.jobs, len(tasks), os.cpu_count() or 1))
    for i, (_, result) in enumerate(run_tasks(_run_one, tasks, jobs), 1):
        runs.append(result)
        progress(
            f"[{i}/{len(tasks)}] {result.policy} (seed {result.seed}): "
            f"{result.sla_violation_pct:.1f}% over SLO ({time.perf_counter() - t0:.0f} s)"
        )
    seconds["replay"] = time.perf_counter() - t0
    return ReplayResult(scenario, runs, forecaster, seconds)
