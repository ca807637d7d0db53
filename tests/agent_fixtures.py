"""A small, realistic database for the agent tests, built once per test process.

It runs a short simulated scenario through the real `Router` with a small forecaster (10 trees on
three hours of history), so every table the context API reads holds the kind of rows `arcpoint demo`
writes: telemetry, decisions with their candidates and forecasts, late outcomes (none for failed
requests), chaos events, a model version, plus a few drift reports, anomalies, alerts and a
shadow experiment on top. Tests copy the file, so each may write to its own copy. The built
file is kept in the temp directory under a hash of the code that shapes it, so it is built once
per code version.

Timeline (seconds after START_TS): 0-1800 one scenario; b0 has a latency spike x3 from 900 to
1200 (the quality drop), b3 fails from 1500 on (ejected at the end: "now" is the last tick).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from context_api.store import Anomaly, DriftReport, Store, decision_row
from evals.replay import make_policy, run_policy
from tools.forecaster import Forecaster, train
from tools.routing import Decision
from tools.sim.chaos import ChaosEvent
from tools.sim.history import simulate_history
from tools.sim.run import SimConfig, SimTick
from tools.sim.scenario import Built, Scenario, build
from tools.sim.workload import TIERS

START_TS = 1_700_000_000.0
DURATION_S = 1800.0
SPIKE_START_S = 900.0
SPIKE_END_S = 1200.0
FAILURE_START_S = 1500.0
CHALLENGER = "rf-challenger-fixture"


@dataclass(frozen=True)
class FixtureInfo:
    path: Path
    model_version: str
    now: float
    decision_ids: tuple[str, ...]
    """A few stored decision ids (the first of each tick's batch, sampled)."""
    ambiguous_ids: tuple[str, ...]


def scenario() -> Scenario:
    return Scenario(
        name="fixture",
        seed=7,
        duration_s=DURATION_S,
        chaos=(
            ChaosEvent(
                kind="latency_spike",
                start_s=SPIKE_START_S,
                duration_s=SPIKE_END_S - SPIKE_START_S,
                backend="b0",
                magnitude=3.0,
            ),
            ChaosEvent(kind="backend_failure", start_s=FAILURE_START_S, backend="b3"),
        ),
    )


@functools.lru_cache(maxsize=1)
def small_forecaster() -> Forecaster:
    history = simulate_history(3 * 3600.0, seed=3, start_ts=START_TS - 3 * 3600.0 - 600.0)
    forecaster, _ = train(history, n_estimators=10, max_depth=8, seed=0, n_jobs=1)
    return forecaster


def _populate(store: Store) -> FixtureInfo:
    forecaster = small_forecaster()
    version = forecaster.version_id
    store.register_model_version(
        version,
        "forecaster",
        created_at=START_TS - 600.0,
        trained_from_ts=forecaster.trained_from_ts,
        trained_to_ts=forecaster.trained_to_ts,
        metrics={"forest": {"mae_ms": 40.0}, "interval": {"holdout_coverage": 0.88}},
        note="fixture",
    )
    store.activate_model_version(version, reason="fixture", at=START_TS - 600.0)
    run = store.start_run("fixture", started_at=START_TS)

    scen = scenario()
    built = build(scen)
    for ev in scen.chaos:
        store.record_event(
            "chaos",
            subject=ev.backend,
            detail={
                "chaos": ev.kind,
                "scenario": scen.name,
                "start_ts": START_TS + ev.start_s,
                "end_ts": START_TS + ev.end_s,
                "magnitude": ev.magnitude,
            },
            ts=START_TS + ev.start_s,
            run_id=run.run_id,
        )
    sampled: list[str] = []
    ambiguous: list[str] = []
    with store.transaction():
        _replay(store, built, forecaster, run.run_id, sampled, ambiguous)
    return _extras(store, version, run.run_id, sampled, ambiguous)


def _replay(
    store: Store,
    built: Built,
    forecaster: Forecaster,
    run_id: str,
    sampled: list[str],
    ambiguous: list[str],
) -> None:
    """The predictive router over the scenario, request by request; each tick stores the
    decisions whose outcomes arrived during it (with those outcomes) and the tick's telemetry."""
    router = make_policy(
        "predictive",
        built,
        forecaster=forecaster,
        id_prefix="fx-",
        keep_decisions=True,
        start_ts=START_TS,
    )

    def sink(decisions: list[Decision], lat: np.ndarray, ok: np.ndarray, _bad: np.ndarray) -> None:
        store.insert_decisions([decision_row(d, run_id=run_id) for d in decisions])
        store.record_outcomes(
            # a failed request reports no latency
            (d.decision_id, float(x), d.ts + float(x) / 1000.0)
            for d, x, good in zip(decisions, lat, ok, strict=True)
            if good
        )
        sampled.append(decisions[0].decision_id)
        ambiguous.extend(d.decision_id for d in decisions[:50] if d.ambiguous)

    def tick(t: SimTick) -> None:
        store.insert_telemetry(t.telemetry, source="fixture", run_id=run_id, simulated=True)

    run_policy(
        built,
        "predictive",
        policy=router,
        sim_config=SimConfig(start_ts=START_TS),
        sink=sink,
        on_tick=tick,
    )


def _extras(
    store: Store, version: str, run_id: str, sampled: list[str], ambiguous: list[str]
) -> FixtureInfo:
    spike = START_TS + SPIKE_START_S
    store.insert_drift_reports(
        [
            DriftReport(
                ts=spike + 240.0,
                kind="concept",
                test="welch_t",
                severity="high",
                model_version=version,
                backend="b0",
                feature="abs_error",
                statistic=6.1,
                p_value=1e-6,
                n_reference=360,
                n_current=30,
                detail={"reference_mae_ms": 35.0, "current_mae_ms": 180.0},
            )
        ]
    )
    store.insert_anomalies(
        Anomaly(
            ts=spike + 10.0 * k,
            backend="b0",
            score=0.8,
            severity=min(1.0, 0.7 + 0.02 * k),
            detector="isolation_forest",
            features={"p95_ms": 600.0 + k},
        )
        for k in range(1, 8)
    )
    store.insert_alert(
        "anomaly",
        "b0",
        "high",
        evidence={"anomalies": 7, "max_severity": 0.84},
        recommended_action="shift traffic away from b0 and inspect it",
        created_at=spike + 30.0,
    )
    store.insert_alert(
        "drift",
        "b0",
        "high",
        evidence={"test": "welch_t", "p_value": 1e-6},
        recommended_action="retrain the forecaster on data after the change",
        created_at=spike + 240.0,
    )
    # A shadow experiment: the challenger predicts 10% closer to the truth on every decision.
    store.register_model_version(
        CHALLENGER, "forecaster", parent_id=version, created_at=START_TS + 300.0
    )
    exp_start = START_TS + 600.0
    store.create_experiment(
        "exp-fixture",
        version,
        CHALLENGER,
        "shadow",
        name="fixture shadow test",
        started_at=exp_start,
        params={"min_samples_per_arm": 100, "planned_samples_per_arm": 2000},
    )
    resolved = store.resolved_decisions(since=exp_start, until=exp_start + 600.0)
    preds = []
    for r in resolved[:3000]:
        p, a = r["predicted_latency_ms"], r["actual_latency_ms"]
        if p is None:
            continue
        preds.append(("exp-fixture", r["decision_id"], "champion", version, p, 1))
        preds.append(
            ("exp-fixture", r["decision_id"], "challenger", CHALLENGER, p + 0.9 * (a - p) * 0.5, 0)
        )
    store.record_experiment_predictions(preds)
    store.finish_run(run_id, finished_at=START_TS + DURATION_S)
    now = max(p.ts for p in store.list_telemetry(since=START_TS + DURATION_S - 20.0))
    return FixtureInfo(
        path=Path(store.path),
        model_version=version,
        now=now,
        decision_ids=tuple(sampled[:: max(1, len(sampled) // 20)]),
        ambiguous_ids=tuple(ambiguous[:20]),
    )


_SOURCES = ("tests/agent_fixtures.py", "tools", "context_api", "agents/router.py")


def _source_key() -> str:
    """A hash of the code that shapes the fixture: a change rebuilds it."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for entry in _SOURCES:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _template() -> FixtureInfo:
    """Built once per code version and kept in the temp directory, so test files and xdist
    workers share it (the build takes seconds: a forest fit and a half-hour replay)."""
    folder = Path(tempfile.gettempdir()) / f"arcpoint-agent-fixture-{_source_key()}"
    folder.mkdir(exist_ok=True)
    db, meta = folder / "template.db", folder / "info.json"
    if db.is_file() and meta.is_file():
        raw = json.loads(meta.read_text())
        return FixtureInfo(
            db,
            raw["model_version"],
            raw["now"],
            tuple(raw["decision_ids"]),
            tuple(raw["ambiguous_ids"]),
        )
    partial = folder / f"building-{os.getpid()}.db"
    store = Store(partial)
    try:
        info = _populate(store)
    finally:
        store.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    os.replace(partial, db)  # atomic: a concurrent reader sees the old state or the whole file
    meta_tmp = folder / f"info-{os.getpid()}.json"
    meta_tmp.write_text(
        json.dumps(
            {
                "model_version": info.model_version,
                "now": info.now,
                "decision_ids": list(info.decision_ids),
                "ambiguous_ids": list(info.ambiguous_ids),
            }
        )
    )
    os.replace(meta_tmp, meta)
    return FixtureInfo(db, info.model_version, info.now, info.decision_ids, info.ambiguous_ids)


def agent_db(folder: Path, name: str = "arcpoint.db") -> FixtureInfo:
    """A fresh copy of the fixture database in `folder`."""
    info = _template()
    target = Path(folder) / name
    shutil.copyfile(info.path, target)
    return FixtureInfo(target, info.model_version, info.now, info.decision_ids, info.ambiguous_ids)


def tiers() -> tuple[str, ...]:
    return tuple(t.name for t in TIERS)


# --- Claude at the HTTP layer, for agent tests ---------------------------------------------------


class ScriptedAPI:
    """An httpx2 MockTransport handler that plays back Messages API responses in order and
    keeps the request bodies (as the SDK sent them)."""

    def __init__(self, *steps: Any) -> None:
        self.steps = list(steps)
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        self.bodies.append(json.loads(request.content))
        if not self.steps:
            raise AssertionError("the model made more HTTP requests than the test scripted")
        step = self.steps.pop(0)
        return step(request) if callable(step) else step


def claude_message(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> Any:
    import httpx2

    body = {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 900,
            "output_tokens": 60,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 700,
        },
    }
    return httpx2.Response(200, json=body)


def claude_tool_use(call_id: str, name: str, tool_input: dict[str, Any]) -> Any:
    return claude_message(
        [{"type": "tool_use", "id": call_id, "name": name, "input": tool_input}], "tool_use"
    )


def claude_error(status: int, error_type: str) -> Any:
    import httpx2

    body = {"type": "error", "error": {"type": error_type, "message": error_type}}
    return httpx2.Response(status, json=body)


def claude_model(api: ScriptedAPI, **config: Any) -> Any:
    """A real ClaudeModel whose HTTP goes to `api` (no network, no retries unless asked)."""
    import httpx2

    from agents.llm import Budget
    from agents.llm.claude import ClaudeConfig, ClaudeModel

    budget = config.pop("budget", None) or Budget(calls_per_minute=None, tokens_per_hour=None)
    config.setdefault("max_retries", 0)
    return ClaudeModel(
        ClaudeConfig(**config),
        api_key="sk-ant-test-not-a-real-key",
        http_client=httpx2.Client(transport=httpx2.MockTransport(api)),
        budget=budget,
    )


# --- hand-made escalation cases ------------------------------------------------------------------


def candidate(
    name: str, forecast: float, lo: float, hi: float, cost: float, share: float = 0.25, **kw: Any
) -> Any:
    from tools.routing import Candidate

    return Candidate(name, forecast, lo, hi, cost, share, kw.get("ejected", False))


def ambiguous_decision(
    decision_id: str = "d-1",
    *,
    backend: str = "b0",
    ts: float = START_TS,
    tier: str = "standard",
    sla_ms: float = 300.0,
    reason: str = "interval_straddles_sla",
    candidates: tuple[Any, ...] | None = None,
) -> Decision:
    """A policy decision the router would escalate: b0 is a coin flip, b2 is clearly within the
    SLA but dear, b1 is clearly over, b3 is ejected (and cheapest)."""
    cands = candidates or (
        candidate("b0", 300.0, 200.0, 400.0, 0.0010, 0.6),
        candidate("b1", 650.0, 550.0, 750.0, 0.0004, 0.1),
        candidate("b2", 120.0, 90.0, 150.0, 0.0020, 0.3),
        candidate("b3", 90.0, 80.0, 100.0, 0.0001, 0.0, ejected=True),
    )
    return Decision(
        decision_id=decision_id,
        request_id=f"req-{decision_id}",
        ts=ts,
        backend=backend,
        policy="predictive",
        reason="cheapest_within_sla",
        sla_ms=sla_ms,
        tier=tier,
        ambiguous=True,
        ambiguous_reason=reason,
        candidates=cands,
        model_version="rf-test",
    )
