"""The feedback loop: late outcomes, drift detection, retraining, experiments, promotion, rollback.

Most tests drive the loop over short calm scenarios with models whose quality is known (a model
whose forecasts are made ~2.7x too high by shifting its leaves), so each verdict path is tested
on purpose rather than on whatever a simulated drift happens to produce. One end-to-end run on
a compact drift scenario checks the whole chain through the store.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import numpy as np
import pytest

from agents.feedback_loop import (
    FeedbackLoop,
    LoopConfig,
    block_means,
    cusum_change_point,
    effective_sample_size,
    load_forecaster,
    sync_active_forecaster,
)
from agents.router import Router
from context_api.alerting import AlertService
from context_api.fleet_state import FleetState
from context_api.store import Store
from evals.loop_run import START_TS, LoopRunConfig, backends_of, replay, run_loop
from tests.router_fakes import FakeView
from tools.experiment_stats import ExperimentConfig, assign_arm
from tools.forecaster import Forecaster, train
from tools.retrain_policy import RetrainPolicy
from tools.routers.base import PolicyBase, RequestInfo
from tools.routers.predictive import PredictiveRouter
from tools.sim.history import simulate_history
from tools.sim.run import SimConfig, SimTick, profiles, simulate
from tools.sim.scenario import Scenario, SyntheticTraffic, build
from tools.telemetry import HORIZON_TICKS, TICK_SECONDS

HORIZON_S = HORIZON_TICKS * TICK_SECONDS


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def good() -> Forecaster:
    history = simulate_history(3 * 3600.0, seed=7, start_ts=START_TS - 3 * 3600.0)
    model, _ = train(history, n_estimators=15, seed=0, n_jobs=1)
    return model


def shifted(model: Forecaster, log_shift: float) -> Forecaster:
    """The same forecaster with every leaf moved by `log_shift` in its (log-ratio) target
    space: forecasts about exp(log_shift) times too high. Built from the constructor's own
    parameters, so it follows the Forecaster's signature."""
    forest = model.forest.with_leaf_values(model.forest.value + log_shift)
    params = inspect.signature(Forecaster.__init__).parameters
    kwargs = {name: getattr(model, name) for name in params if name != "self"}
    kwargs.update(forest=forest, report=model.report, parent_version=None)
    return Forecaster(**kwargs)


@pytest.fixture(scope="module")
def bad(good: Forecaster) -> Forecaster:
    return shifted(good, 1.0)


def calm(minutes: float, seed: int = 3) -> Scenario:
    return Scenario(
        name="calm",
        seed=seed,
        duration_s=minutes * 60.0,
        traffic=SyntheticTraffic(mean_rps=8.0, diurnal_amplitude=0.0),
    )


def calm_ticks(minutes: float, start_ts: float) -> list[SimTick]:
    """Telemetry ticks of the calm scenario, everything sent to b0."""

    class ToB0(PolicyBase):
        def choose(self, request, view):
            return 0

    built = build(calm(minutes))
    ticks: list[SimTick] = []
    simulate(
        built.workload, built.fleet, ToB0(), plan=built.plan,
        config=SimConfig(start_ts=start_ts), on_tick=ticks.append,
    )  # fmt: skip
    return ticks


FAST = LoopConfig(
    samples_per_tick=4,
    burn_in_s=0.0,
    ph_warmup=60,
    reference_samples=60,
    experiment=ExperimentConfig(
        min_samples_per_arm=10, planned_samples_per_arm=30, n_bootstrap=300
    ),
    analysis_every_s=900.0,
    n_estimators=10,
)
AUTO = FAST.model_copy(update={"auto_approve": True})
"""The replays in this file approve their own proposals unless a test says otherwise."""


def make_loop(
    tmp_path, champion: Forecaster, config: LoopConfig = FAST
) -> tuple[FeedbackLoop, Store]:
    store = Store(tmp_path / "loop.db")
    alerts = AlertService(store, clock=lambda: loop.now, restore=False)
    loop = FeedbackLoop(
        store,
        backends_of(calm(1)),
        champion,
        config=config,
        run_id="t",
        alerts=alerts,
        artifact_dir=tmp_path / "models",
        start_ts=START_TS,
        policy_factory=lambda: PredictiveRouter(profiles(calm(1).backends())),
    )
    return loop, store


def kinds(loop: FeedbackLoop) -> list[str]:
    return [e.kind for e in loop.timeline]


# ------------------------------------------------------------------------------- pure helpers
def test_cusum_change_point_finds_where_an_upward_shift_began() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(10, 1, 200), rng.normal(13, 1, 100)])
    t = np.arange(x.size, dtype=float)
    cp = cusum_change_point(t, x, reference_mean=10.0, k=0.5)
    assert cp is not None and 195 <= cp <= 210
    assert cusum_change_point(t[:200], x[:200] - 2.0, reference_mean=10.0, k=0.5) is None


def test_effective_sample_size_shrinks_with_autocorrelation() -> None:
    rng = np.random.default_rng(1)
    iid = rng.normal(size=4000)
    rho, n_eff = effective_sample_size(iid)
    assert abs(rho) < 0.05 and n_eff > 3000
    ar = np.empty(4000)
    ar[0] = 0.0
    for i in range(1, ar.size):  # AR(1), phi = 0.6: n_eff ~ n (1 - phi) / (1 + phi) = n / 4
        ar[i] = 0.6 * ar[i - 1] + rng.normal()
    rho, n_eff = effective_sample_size(ar)
    assert 0.5 < rho < 0.7 and 700 < n_eff < 1400


def test_block_means_average_each_time_block() -> None:
    ts = np.array([0.0, 10.0, 59.0, 60.0, 200.0])
    v = np.array([1.0, 2.0, 3.0, 10.0, 7.0])
    assert block_means(ts, v, 0.0, 60.0).tolist() == [2.0, 10.0, 7.0]
    assert block_means([], [], 0.0, 60.0).size == 0


# --------------------------------------------------------------------- outcomes and the store
def test_outcomes_arrive_one_horizon_late_and_are_joined_in_the_store(tmp_path, good) -> None:
    loop, store = make_loop(tmp_path, good)
    replay(calm(20), loop)
    loop.finish()
    rows = store.resolved_decisions(run_id="t")
    assert rows and loop.stats["outcomes_accepted"] == len(rows)
    # label = the chosen backend's measured p95 one horizon after the decision
    lags = {round(r["observed_at"] - r["ts"], 6) for r in rows}
    assert lags == {HORIZON_S}
    telemetry = {(p.ts, p.backend): p.p95_ms for p in store.list_telemetry(run_id="t")}
    for r in rows[:50]:
        assert r["actual_latency_ms"] == telemetry[(r["ts"] + HORIZON_S, r["backend"])]
        assert r["predicted_latency_ms"] is not None
        assert r["model_version"] == good.version_id
    # a sample per tick, not every request; the last horizon's labels are not due yet: pending,
    # counted, not lost; nothing overdue, so nothing expired
    ticks = 20 * 60 / TICK_SECONDS
    assert loop.stats["decisions_sampled"] <= FAST.samples_per_tick * ticks
    stats = store.outcome_stats()
    assert stats.pending == loop.stats["outcomes_pending_at_end"] > 0
    assert stats.expired == loop.stats["outcomes_expired"] == 0
    assert stats.resolved + stats.pending == loop.stats["decisions_sampled"]
    store.close()


def test_bad_telemetry_raises_before_anything_of_the_tick_is_stored(tmp_path, good) -> None:
    loop, store = make_loop(tmp_path, good)
    replay(calm(8), loop)
    loop.flush()
    before = (len(store.list_telemetry(run_id="t")), loop.stats["decisions_sampled"])
    tick = calm_ticks(1, START_TS + 480.0)[0]
    n = tick.arrivals
    view = FakeView(len(loop.names), now_s=480.0)
    view.backends = profiles(calm(1).backends())
    decisions = [
        loop.route(RequestInfo(i, 480.0, 512, "standard", 1000.0, 30_000.0), view) for i in range(n)
    ]
    bad = [dataclasses.replace(tick.telemetry[0], p95_ms=math.nan), *tick.telemetry[1:]]
    with pytest.raises(ValueError, match="p95_ms"):
        loop.on_tick(tick.ts, decisions, bad, arrivals=n)
    loop.flush()
    assert (len(store.list_telemetry(run_id="t")), loop.stats["decisions_sampled"]) == before
    store.close()


# ------------------------------------------------------------------------------ experiments
def test_shadow_experiment_promotes_a_better_challenger_without_restart(
    tmp_path, good, bad
) -> None:
    loop, store = make_loop(tmp_path, bad, AUTO)
    router, fleet = loop.router, loop.fleet
    eid = loop.challenge(good, mode="shadow")
    replay(calm(60), loop)
    loop.finish()

    exp = store.get_experiment(eid)
    assert exp.status == "concluded" and exp.winner_id == good.version_id
    results = store.list_experiment_results(eid)
    # no test before the minimum sample, alpha spent only grows and never passes alpha
    spent = [r.detail["alpha_spent_total"] for r in results]
    assert spent == sorted(spent) and spent[-1] <= 0.05 + 1e-12
    for r in results:
        if min(r.n_champion, r.n_challenger) < FAST.experiment.min_samples_per_arm:
            assert r.p_value is None and r.verdict == "collecting"
        assert r.n_champion == r.n_challenger  # shadow: paired
    # both models predicted every scored request, only the champion routed
    preds = store.experiment_errors(eid)
    by_arm = {arm: [p for p in preds if p["arm"] == arm] for arm in ("champion", "challenger")}
    assert len(by_arm["champion"]) == len(by_arm["challenger"]) > 0
    assert all(p["routed"] == 1 for p in by_arm["champion"])
    assert all(p["routed"] == 0 for p in by_arm["challenger"])

    # promoted: the store's active version, the same router and fleet now forecasting with it
    assert store.active_model_version("forecaster").version_id == good.version_id
    assert loop.router is router and loop.fleet is fleet
    assert fleet.forecaster is good and fleet.view.model_version == good.version_id
    history = store.model_history("forecaster")
    assert [h.version_id for h in history][-1] == good.version_id
    assert "won exp1" in history[-1].reason
    assert {"promotion", "experiment_verdict"} <= set(kinds(loop))
    assert store.list_events(kind="model_change", run_id=None)
    alert_kinds = {a.kind for a in store.list_alerts(limit=None, include_suppressed=True)}
    assert {"experiment_verdict", "model_change"} <= alert_kinds
    # the post-promotion watch compared the previous model on the new model's traffic
    watch = [
        e
        for e in loop.timeline
        if e.kind == "experiment_verdict" and e.detail["purpose"] == "watch"
    ]
    assert watch and watch[0].detail["challenger"] == bad.version_id
    assert "promotion_confirmed" in kinds(loop) or watch[0].detail["status"] == "aborted"
    store.close()


def test_losing_challenger_is_withdrawn_and_the_champion_stays(tmp_path, good, bad) -> None:
    loop, store = make_loop(tmp_path, good)
    eid = loop.challenge(bad)
    replay(calm(45), loop)
    loop.finish()
    exp = store.get_experiment(eid)
    assert exp.status == "concluded" and exp.winner_id == good.version_id
    assert exp.verdict.startswith("champion_wins")
    assert "challenger_withdrawn" in kinds(loop)
    assert store.active_model_version("forecaster").version_id == good.version_id
    assert loop.fleet.forecaster is good
    assert store.get_model_version(bad.version_id).status == "registered"
    store.close()


def test_split_experiment_routes_each_request_by_its_arm_and_checks_the_split(
    tmp_path, good, bad
) -> None:
    loop, store = make_loop(tmp_path, good)
    eid = loop.challenge(bad, mode="split")
    replay(calm(45), loop)
    loop.finish()
    preds = store.experiment_errors(eid)
    assert preds
    # one model scores each request: the arm the request id's hash picked, which also routed it
    per_decision: dict[str, list[str]] = {}
    for p in preds:
        per_decision.setdefault(p["decision_id"], []).append(p["arm"])
    assert all(len(v) == 1 for v in per_decision.values())
    arms_seen = set()
    for did, (arm,) in list(per_decision.items())[:200]:
        d = store.get_decision(did)
        assert assign_arm(d["request_id"], 0.5, eid) == arm
        expected = bad.version_id if arm == "challenger" else good.version_id
        assert d["model_version"] == expected
        arms_seen.add(arm)
    assert arms_seen == {"champion", "challenger"}
    last = store.list_experiment_results(eid)[-1]
    routed = last.detail["routed_requests"]
    assert routed["champion"] > 0 and routed["challenger"] > 0
    assert last.srm_p_value is not None and last.srm_p_value > 0.001  # the hash split is fair
    assert last.detail["logged_srm"]["detected"] is False
    exp = store.get_experiment(eid)
    assert exp.status == "concluded" and exp.winner_id == good.version_id
    store.close()


def test_post_promotion_watch_rolls_back_a_worse_model(tmp_path, good, bad) -> None:
    loop, store = make_loop(tmp_path, good, AUTO)
    replay(calm(2), loop)  # the loop is running
    loop.promote(bad, reason="operator promotion")
    assert loop.fleet.forecaster is bad
    replay(calm(50, seed=4), loop, start_ts=START_TS + 120.0)
    loop.finish()
    assert "rollback" in kinds(loop)
    assert loop.fleet.forecaster is good
    assert store.active_model_version("forecaster").version_id == good.version_id
    actions = [h.action for h in store.model_history("forecaster")]
    assert actions[-1] == "rollback"
    alerts = store.list_alerts(kind="model_change", limit=None, include_suppressed=True)
    assert any(a.severity == "high" for a in alerts)
    store.close()


def test_without_approval_a_winning_challenger_waits_and_the_answer_decides(
    tmp_path, good, bad
) -> None:
    from context_api import approvals

    loop, store = make_loop(tmp_path, bad)
    eid = loop.challenge(good, mode="shadow")
    replay(calm(60), loop)
    assert store.get_experiment(eid).winner_id == good.version_id
    [row] = approvals.pending(store)
    assert row.action == "promote" and row.version_id == good.version_id
    assert row.experiment_id == eid and row.proposed_by == "feedback_loop"
    # the verdict alone changes nothing: the champion keeps serving, no new challenger either
    assert loop.fleet.forecaster is bad
    assert store.active_model_version("forecaster").version_id == bad.version_id
    assert "change_proposed" in kinds(loop) and "promotion" not in kinds(loop)
    # an operator approves (from another process, through the table): the next check applies it
    approvals.decide(store, row.approval_id, approved=True, by="alice", reason="ok", at=loop.now)
    replay(calm(6, seed=9), loop, start_ts=loop.now + 10.0)
    assert loop.fleet.forecaster is good and "promotion" in kinds(loop)
    assert approvals.get(store, row.approval_id).status == "applied"
    assert row.approval_id in store.model_history("forecaster")[-1].reason
    store.close()


def test_a_rejected_proposal_keeps_the_champion(tmp_path, good, bad) -> None:
    from context_api import approvals

    loop, store = make_loop(tmp_path, bad)
    loop.challenge(good, mode="shadow")
    replay(calm(60), loop)
    [row] = approvals.pending(store)
    approvals.decide(store, row.approval_id, approved=False, by="bob", reason="no", at=loop.now)
    replay(calm(6, seed=9), loop, start_ts=loop.now + 10.0)
    loop.finish()
    assert loop.fleet.forecaster is bad and "change_rejected" in kinds(loop)
    assert loop.stats["rejections"] == 1 and loop.stats["promotions"] == 0
    store.close()


def test_challenge_refuses_a_second_experiment_and_the_champion_itself(tmp_path, good, bad) -> None:
    loop, store = make_loop(tmp_path, good)
    with pytest.raises(ValueError, match="is the champion"):
        loop.challenge(good)
    loop.challenge(bad)
    with pytest.raises(ValueError, match="still running"):
        loop.challenge(shifted(good, 0.5))
    store.close()


# --------------------------------------------------------------- rollback without a restart
def test_router_picks_up_the_store_active_version_without_restart(tmp_path, good, bad) -> None:
    """`arcpoint models rollback` only changes the store; the running router follows it."""
    loop, store = make_loop(tmp_path, good)
    loop.promote(bad, reason="test")
    router, fleet = loop.router, loop.fleet
    # another process rolls back (here: the same store API the CLI uses)
    store.rollback_model("forecaster", to_version=good.version_id, reason="manual")
    replay(calm(6), loop)  # the next check notices and swaps the artifact in
    assert loop.router is router and loop.fleet is fleet
    assert fleet.forecaster.version_id == good.version_id
    assert fleet.view.model_version == good.version_id
    assert "model_synced" in kinds(loop)
    store.close()


def test_sync_active_forecaster_loads_the_artifact_into_a_fleet(tmp_path, good, bad) -> None:
    loop, store = make_loop(tmp_path, good)
    loop.promote(bad, reason="test")
    fleet = FleetState(loop.backends, bad)
    router = Router(PredictiveRouter(profiles(calm(1).backends())), fleet)
    ticks = calm_ticks(1, START_TS)
    for tick in ticks[:3]:
        router.on_telemetry(tick.telemetry, arrivals=tick.arrivals)
    assert router.fleet.view.model_version == bad.version_id
    assert sync_active_forecaster(store, fleet) is None  # already current
    store.activate_model_version(good.version_id, reason="restore", action="rollback")
    assert sync_active_forecaster(store, fleet) == good.version_id
    view = router.on_telemetry(ticks[3].telemetry, arrivals=ticks[3].arrivals)
    assert view.model_version == good.version_id
    # the artifact is arrays + JSON and reproduces the model exactly
    loaded = load_forecaster(store.get_model_version(good.version_id).artifact_path)
    X = fleet.features()
    assert np.array_equal(loaded.predict(X).mean, good.predict(X).mean)
    store.close()


def test_sync_refuses_a_version_without_artifact(tmp_path, good) -> None:
    loop, store = make_loop(tmp_path, good)
    store.register_model_version("rf-noartifact", "forecaster", note="no file")
    store.activate_model_version("rf-noartifact")
    with pytest.raises(ValueError, match="no artifact"):
        sync_active_forecaster(store, loop.fleet)
    # the loop records the failure and keeps routing with what it has
    replay(calm(6), loop)
    assert "model_sync_failed" in kinds(loop)
    assert loop.fleet.forecaster is good
    store.close()


# ------------------------------------------------------------------------------ end to end
COMPACT = LoopRunConfig(
    hours=2.0,
    history_hours=3.0,
    drift_start_s=1800.0,
    ramp_s=900.0,
    drift_factor=2.5,
    mean_rps=8.0,
    champion_trees=15,
    loop=LoopConfig(
        samples_per_tick=4,
        burn_in_s=300.0,
        ph_warmup=120,
        reference_samples=120,
        ph_threshold_sigmas=40.0,
        retrain=RetrainPolicy(
            min_new_samples=100,
            min_mae_samples=50,
            cooldown_seconds=600.0,
            train_window_seconds=3600.0,
            min_train_window_seconds=1800.0,
        ),
        experiment=ExperimentConfig(
            min_samples_per_arm=15, planned_samples_per_arm=45, n_bootstrap=300
        ),
        n_estimators=10,
        analysis_every_s=1200.0,
    ),
)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    db = tmp_path_factory.mktemp("e2e") / "loop.db"
    result = run_loop(LoopRunConfig(**{**COMPACT.__dict__, "db": str(db)}))
    return result, db


def test_end_to_end_detects_the_drift_after_it_began_and_retrains(e2e) -> None:
    result, db = e2e
    t = result.timeline
    drift_s = t["drift_began_s"]
    assert t["false_alarms_before_drift"] == 0
    assert t["drift_detected"] is not None and t["drift_detected"]["t_s"] > drift_s
    assert t["detection_delay_s"] == pytest.approx(t["drift_detected"]["t_s"] - drift_s)
    ch = t["challenger_trained"]
    assert ch is not None and ch["parent"] == t["champion"]["version"]
    assert ch["t_s"] > t["drift_detected"]["t_s"]
    # trained on data from the estimated change point on, at least the policy's minimum
    start, end = ch["window_s"]
    assert end - start >= COMPACT.loop.retrain.min_train_window_seconds - 1e-6
    assert start >= t["change_point_estimate_s"] - 1e-6
    assert t["experiments"] and t["experiments"][0]["looks"] >= 1
    assert math.isfinite(t["mae_ms"]["champion_before_drift"])
    assert t["mae_ms"]["champion_drifted_until_promotion"] > t["mae_ms"]["champion_before_drift"]

    with Store(db) as store:
        versions = {v.version_id: v for v in store.list_model_versions("forecaster")}
        v = versions[ch["version"]]
        assert v.parent_id == t["champion"]["version"]
        assert v.trained_from_ts is not None and v.trained_to_ts > v.trained_from_ts
        assert v.metrics["forest"]["mae_ms"] > 0 and v.metrics["n_holdout"] > 0
        assert load_forecaster(v.artifact_path).version_id == v.version_id
        reports = store.list_drift_reports(limit=None)
        assert {"welch_t", "mann_whitney_u", "page_hinkley"} <= {r.test for r in reports}
        assert all(r.ts >= START_TS + drift_s for r in reports)
        # the routing model's detector names the drifting backend, and only that one
        routing = [r for r in reports if (r.feature or "").startswith("routing_residual")]
        assert routing and {r.backend for r in routing} == {COMPACT.drift_backend}
        assert routing[0].detail["ratio"] > 1.0 and routing[0].model_version.startswith("lat-")
        alerts = store.list_alerts(kind="drift", limit=None)
        assert alerts and alerts[0].evidence["severity"] in ("medium", "high", "critical")
        assert any(a.subject == f"latency model on {COMPACT.drift_backend}" for a in alerts)
        events = {e.kind for e in store.list_events(run_id=result.run_id)}
        assert {"drift_detected", "challenger_trained", "experiment_started"} <= events
        assert "routing_drift_detected" in events
        assert "error_analysis" in events
        assert store.get_run(result.run_id).status == "finished"


def test_the_loop_is_deterministic(tmp_path, good, bad) -> None:
    """Same seed, same inputs: the same sampled decisions, verdicts and timeline."""

    def run(sub: str) -> tuple[list, list, list]:
        (tmp_path / sub).mkdir()
        loop, store = make_loop(tmp_path / sub, good)
        eid = loop.challenge(bad, mode="split")
        replay(calm(30), loop)
        loop.finish()
        out = (
            [(e.ts, e.kind, e.summary.replace(eid, "")) for e in loop.timeline],
            [(r["decision_id"], r["actual_latency_ms"]) for r in store.resolved_decisions()],
            [(r.ts, r.p_value, r.verdict) for r in store.list_experiment_results(eid)],
        )
        store.close()
        return out

    assert run("a") == run("b")
