"""The predictive router: shared features, the latency model and its artifact, the policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.router_fakes import FakeView, completion, request, scrape
from tools.routers.base import BackendProfile, RequestInfo
from tools.routers.predictive import PredictiveRouter, PredictiveSettings, artifact
from tools.routers.predictive.features import FEATURES, N_FEATURES, F, FleetTracker, vary
from tools.routers.predictive.model import LatencyModel, ModelError
from tools.routers.predictive.table import DELTAS, TOKEN_GRID
from tools.routers.predictive.training import Dataset, evaluate, fit


def toy_dataset(n_runs: int = 10, per_run: int = 400, seed: int = 0) -> Dataset:
    """Rows whose latency grows with requests in flight and prompt tokens, times a per-backend
    speed (`log_ttft_per_token`), with lognormal noise: what the model must recover."""
    rng = np.random.default_rng(seed)
    n = n_runs * per_run
    X = np.zeros((n, N_FEATURES))
    X[:, F["in_flight"]] = rng.integers(0, 40, n)
    X[:, F["log_prefill_tokens"]] = np.log1p(rng.integers(16, 8000, n))
    speed = rng.choice([math.log(0.05), math.log(0.2)], n)
    X[:, F["log_ttft_per_token"]] = speed
    tokens = np.expm1(X[:, F["log_prefill_tokens"]])
    base = np.exp(speed) * (tokens + 256) * (1 + X[:, F["in_flight"]] / 8)
    ttft = base * np.exp(rng.normal(0, 0.2, n))
    e2e = ttft + 20 * rng.lognormal(4.5, 0.8, n)
    status = np.zeros(n, dtype=np.int8)
    group = np.repeat(np.arange(n_runs), per_run)
    return Dataset(X, ttft, e2e, status, group)


@pytest.fixture(scope="module")
def toy_model() -> LatencyModel:
    hp = {"n_estimators": 12, "max_depth": 8, "min_samples_leaf": 20, "n_jobs": 1}
    return fit(toy_dataset(), hyperparameters=hp, seed=1)


def profiles(prices: list[float]) -> list[BackendProfile]:
    return [BackendProfile(f"b{i}", p, 2 * p) for i, p in enumerate(prices)]


# --- features ---------------------------------------------------------------------------------
def test_grid_rows_are_what_the_tracker_reads_after_the_requests_are_sent():
    tracker = FleetTracker(2)
    view = FakeView(2, now_s=5.0)
    view.scrapes[0] = scrape(0, 4.5, waiting=2, kv=0.3, running=5)
    for _rid in range(3):
        tracker.on_route(0, 1000, now=5.0)
        view.in_flight[0] += 1
    base = tracker.row(0, view, 0.0)
    grid = vary(base, [500.0], [4], mean_input=1000.0)[0]
    for _rid in range(4):
        tracker.on_route(0, 1000, now=5.0)
        view.in_flight[0] += 1
    after = tracker.row(0, view, 500.0)
    np.testing.assert_allclose(grid, after, rtol=1e-9)
    assert grid[F["in_flight"]] == 7 and grid[F["routed_since_scrape"]] == 7
    assert grid[F["scrape_waiting"]] == 2 and grid[F["scrape_age_s"]] == pytest.approx(0.5)


def test_completions_move_the_latency_averages_and_a_scrape_resets_the_count():
    tracker = FleetTracker(1)
    tracker.on_route(0, 512, now=0.0)
    tracker.on_complete(completion(0, at=1.0, e2e_ms=2000.0, ttft_ms=300.0))
    assert tracker.log_ttft[0] == pytest.approx(math.log(300.0))  # first completion replaces
    assert tracker.in_flight_tokens[0] == 0
    tracker.on_complete(completion(0, at=2.0, status="error"))
    assert 0.0 < tracker.err[0] < 1.0
    tracker.on_scrape(scrape(0, 2.5))
    assert tracker.routed_since_scrape[0] == 0 and tracker.heard_s[0] == 2.5


# --- the model -------------------------------------------------------------------------------
def test_model_recovers_the_load_effect_and_its_intervals_cover_held_out_runs(toy_model):
    held = toy_dataset(n_runs=3, seed=9)
    report = evaluate(toy_model, held)
    assert 0.72 <= report["ttft"]["coverage_80"] <= 0.88
    assert 0.84 <= report["ttft"]["coverage_90"] <= 0.96
    assert report["ttft"]["mae_log"] < 0.5 * report["ttft"]["baseline_mae_log"]
    # latency only grows with requests in flight (monotone constraint) and by a lot
    X = np.zeros((2, N_FEATURES))
    X[:, F["log_prefill_tokens"]] = math.log1p(1000)
    X[:, F["log_ttft_per_token"]] = math.log(0.05)
    X[1, F["in_flight"]] = 30
    mt, _, _, _ = toy_model.predict(X)
    assert math.exp(mt[1] - mt[0]) > 2.0  # truth: 4.75; a small forest shrinks it


def test_p_meet_falls_with_load_and_never_reaches_zero_or_one(toy_model):
    X = np.zeros((3, N_FEATURES))
    X[:, F["log_prefill_tokens"]] = math.log1p(1000)
    X[:, F["log_ttft_per_token"]] = math.log(0.2)
    X[:, F["in_flight"]] = [0, 10, 39]
    p = toy_model.p_meet(*toy_model.predict(X), 1000.0, 60000.0)
    assert p[0] > p[1] > p[2]
    assert np.all((p > 0) & (p < 1))


def test_artifact_round_trips_and_refuses_tampering(tmp_path, toy_model):
    _npz, js = artifact.save(toy_model, tmp_path / "m")
    back = artifact.load(tmp_path / "m")
    assert back.version_id == toy_model.version_id
    X = toy_dataset(n_runs=1, per_run=50).X
    np.testing.assert_array_equal(back.predict(X)[0], toy_model.predict(X)[0])
    arrays, meta = toy_model.to_arrays()
    arrays["ttft.value"] = arrays["ttft.value"] + 1e-3
    with pytest.raises(ModelError, match="version id mismatch"):
        LatencyModel.from_arrays(arrays, meta)
    with pytest.raises(ModelError, match="another feature layout"):
        LatencyModel.from_arrays(*toy_model.to_arrays()[:1], {**meta, "features": ["x"]})
    js.write_text("{not json")
    with pytest.raises(ModelError, match="unreadable metadata"):
        artifact.load(tmp_path / "m")


def test_the_shipped_model_loads_and_reads_this_codes_features():
    model = artifact.load_default()
    assert model.version_id.startswith("lat-")
    assert model.ttft.forest.n_features == len(FEATURES)
    assert model.report["holdout"]["ttft"]["coverage_80"] > 0.7


# --- the policy --------------------------------------------------------------------------------
def settle(policy: PredictiveRouter, view: FakeView, speeds_ms: list[float]) -> None:
    """One completion per backend at the given TTFT for a 512-token prompt."""
    for b, ttft in enumerate(speeds_ms):
        policy.on_complete(completion(b, at=view.now_s, e2e_ms=ttft * 5, ttft_ms=ttft), view)


def test_cheapest_backend_that_is_safe_enough_wins(toy_model):
    policy = PredictiveRouter(profiles([3.0, 1.0, 2.0]), model=toy_model, explore_s=1e9, choices=0)
    view = FakeView(3, now_s=1.0)
    settle(policy, view, [150.0, 150.0, 150.0])
    assert policy.choose(request(1, now=1.0), view) == 1
    assert policy.last.reason == "cheapest_likely"
    assert len(policy.last.p) == 3 and all(0 < p < 1 for p in policy.last.p)


def test_a_slow_backend_loses_the_request_even_when_cheapest(toy_model):
    policy = PredictiveRouter(profiles([3.0, 1.0]), model=toy_model, explore_s=1e9)
    view = FakeView(2, now_s=1.0)
    settle(policy, view, [60.0, 3000.0])  # b1: 0.2 ms/token of speed vs 0.05 on b0
    req = RequestInfo(1, 1.0, 4000, "premium", 500.0, 15000.0)
    assert policy.choose(req, view) == 0


def test_a_burst_between_refreshes_spreads_instead_of_herding(toy_model):
    policy = PredictiveRouter(profiles([1.0, 1.0, 1.0]), model=toy_model, explore_s=1e9)
    view = FakeView(3, now_s=1.0)
    settle(policy, view, [150.0, 150.0, 150.0])
    sent = [0, 0, 0]
    for rid in range(60):  # same instant: no scrape, no refresh, only router-side counts move
        b = policy.choose(request(rid, now=1.0), view)
        view.in_flight[b] += 1
        sent[b] += 1
    assert min(sent) >= 15, sent


def test_a_failing_backend_is_ejected_and_comes_back(toy_model):
    s = PredictiveSettings(base_ejection_s=30.0, explore_s=1e9)
    policy = PredictiveRouter(profiles([1.0, 2.0]), model=toy_model, settings=s)
    view = FakeView(2, now_s=1.0)
    settle(policy, view, [150.0, 150.0])
    for k in range(10):
        policy.on_complete(completion(0, at=1.0, status="error", rid=100 + k), view)
    assert policy.ejected_until[0] == pytest.approx(31.0)
    assert policy.choose(request(1, now=1.0), view) == 1
    view.now_s = 32.0
    assert policy.choose(request(2, now=32.0), view) == 0


def test_a_silent_backend_holding_requests_is_treated_as_hung(toy_model):
    policy = PredictiveRouter(profiles([1.0, 2.0]), model=toy_model, silent_s=5.0, explore_s=1e9)
    view = FakeView(2, now_s=1.0)
    settle(policy, view, [150.0, 150.0])
    view.in_flight[0] = 3
    view.now_s = 10.0
    policy.on_scrape(scrape(1, 9.5), view)
    assert policy.choose(request(1, now=10.0), view) == 1
    assert policy.ejected_until[0] > 10.0


def test_settings_are_validated_and_unknown_ones_named(toy_model):
    with pytest.raises(ValueError, match="unknown setting"):
        PredictiveRouter(profiles([1.0]), model=toy_model, nope=1)
    with pytest.raises(ValueError, match="target must lie"):
        PredictiveSettings(target=1.5)


def test_prediction_grid_spans_what_requests_need():
    assert TOKEN_GRID[0] <= 16 and TOKEN_GRID[-1] >= 32_000
    assert 0 in DELTAS and DELTAS[0] < 0 < DELTAS[-1]


def test_back_from_ejection_a_backend_takes_one_request_at_a_time_until_one_succeeds(toy_model):
    policy = PredictiveRouter(profiles([1.0, 2.0]), model=toy_model, explore_s=1e9)
    view = FakeView(2, now_s=1.0)
    settle(policy, view, [150.0, 150.0])
    for k in range(10):
        policy.on_complete(completion(0, at=1.0, status="error", rid=100 + k), view)
    view.now_s = 40.0
    assert policy.choose(request(1, now=40.0), view) == 0  # readmitted: the probe request
    view.in_flight[0] = 1
    assert policy.choose(request(2, now=40.0), view) == 1  # still on probation
    policy.on_complete(completion(0, at=40.5, rid=1), view)
    view.in_flight[0] = 0
    view.in_flight[1] = 1
    assert not policy.probation[0]


def test_the_forecast_prior_raises_a_degrading_backend_and_never_lowers_one(toy_model):
    from tools.routers.predictive.prior import ForecastPrior
    from tools.telemetry import TelemetryPoint

    class Forecaster:  # b0 forecast at 4x its p95 (interval 2x-8x), b1 at half of it
        def predict(self, X):
            mean, lo, hi = np.array([400.0, 50.0]), np.array([200.0, 25.0]), np.array([800.0, 99.0])
            return type("F", (), {"mean": mean, "lo": lo, "hi": hi})()

    prior = ForecastPrior(Forecaster(), ["b0", "b1"], weight=1.0, max_shift=1.0)
    for k in range(40):
        prior.on_tick([TelemetryPoint(1e9 + 10 * k, n, 5.0, 80.0, 100.0, 0.0, 3.0)
                       for n in ("b0", "b1")])  # fmt: skip
    assert prior.shifts[0] == pytest.approx(1.0)  # log 4 = 1.39, capped at max_shift
    assert prior.shifts[1] == 0.0
    policy = PredictiveRouter(profiles([1.0, 1.0]), model=toy_model, prior=prior, explore_s=1e9)
    view = FakeView(2, now_s=1.0)
    settle(policy, view, [150.0, 150.0])
    policy.on_scrape(scrape(0, 1.0), view)
    policy.on_scrape(scrape(1, 1.0), view)
    assert policy.choose(request(1, now=1.0), view) == 1
    assert policy.last.p[0] < policy.last.p[1]


def test_the_prior_ignores_a_rise_whose_interval_includes_no_change():
    from tools.routers.predictive.prior import ForecastPrior
    from tools.telemetry import TelemetryPoint

    class Forecaster:  # both forecast at 1.5x their p95; only b1's interval excludes now
        def predict(self, X):
            mean, lo = np.array([150.0, 150.0]), np.array([90.0, 120.0])
            return type("F", (), {"mean": mean, "lo": lo, "hi": 2 * mean})()

    gated = ForecastPrior(Forecaster(), ["b0", "b1"])
    plain = ForecastPrior(Forecaster(), ["b0", "b1"], require_interval=False)
    for k in range(40):
        tick = [TelemetryPoint(1e9 + 10 * k, n, 5.0, 80.0, 100.0, 0.0, 3.0) for n in ("b0", "b1")]
        gated.on_tick(tick)
        plain.on_tick(tick)
    assert gated.shifts == [0.0, pytest.approx(math.log(1.5))]
    assert plain.shifts == [pytest.approx(math.log(1.5))] * 2


def test_fast_polls_update_live_state_but_re_walk_the_forest_at_most_every_scrape_refresh_s(
    toy_model,
):
    policy = PredictiveRouter(
        profiles([1.0, 1.0]), model=toy_model, scrape_interval_s=0.05, scrape_refresh_s=0.25
    )
    assert policy.scrape_interval_s == 0.05  # it polls as often as llm-d
    view = FakeView(2, now_s=1.0)
    policy.on_scrape(scrape(0, 1.0), view)
    walks = policy.refreshes
    for k in range(1, 5):  # four more 50 ms polls of backend 0 within 0.25 s
        view.now_s = 1.0 + 0.05 * k
        policy.on_scrape(scrape(0, view.now_s), view)
    assert policy.refreshes == walks
    assert policy.tracker.heard_s[0] == pytest.approx(1.2)  # the live state did move
    view.now_s = 1.25
    policy.on_scrape(scrape(0, 1.25), view)
    assert policy.refreshes == walks + 1


def test_hysteresis_keeps_the_incumbent_unless_the_pick_is_cheaper_by_the_margin(toy_model):
    def route_after_override(prices: list[float], **settings: float) -> tuple[int, str]:
        policy = PredictiveRouter(profiles(prices), model=toy_model, explore_s=1e9, **settings)
        view = FakeView(2, now_s=1.0)
        settle(policy, view, [150.0, 150.0])
        assert policy.choose(request(1, now=1.0), view) == 0  # the cheaper, equally fast
        policy.reroute(request(1, now=1.0), view, 1)  # the agent sent it to b1 instead
        view.in_flight[1] += 1
        return policy.choose(request(2, now=1.0), view), policy.last.reason

    # 5% cheaper is inside a 10% margin: the incumbent keeps the traffic
    assert route_after_override([1.0, 1.05], stick_p=0.05, stick_cost=0.1) == (1, "kept")
    # half the price is a margin that matters
    assert route_after_override([1.0, 2.0], stick_p=0.05, stick_cost=0.1) == (
        0,
        "cheapest_likely",
    )
    # no hysteresis: price alone decides
    assert route_after_override([1.0, 1.05]) == (0, "cheapest_likely")


def test_an_override_is_counted_where_the_request_went(toy_model):
    policy = PredictiveRouter(profiles([1.0, 3.0]), model=toy_model, explore_s=1e9)
    view = FakeView(2, now_s=1.0)
    settle(policy, view, [150.0, 150.0])
    req = RequestInfo(9, 1.0, 700, "standard", 1000.0, 10000.0)
    assert policy.choose(req, view) == 0
    t = policy.tracker
    assert (t.routed_since_scrape, t.in_flight_tokens) == ([1, 0], [700, 0])
    policy.reroute(req, view, 1)
    assert (t.routed_since_scrape, t.in_flight_tokens) == ([0, 1], [0, 700])
    assert policy.last.backend == 1 and policy.pref["standard"] == 1
    assert policy._pending[9][0] == 1  # the online correction learns from where it ran


def test_at_risk_the_hot_cold_rule_avoids_the_hot_backend(toy_model):
    policy = PredictiveRouter(
        profiles([1.0, 1.0, 1.0]),
        model=toy_model,
        explore_s=1e9,
        at_risk="hotcold",
        lost_p=0.0,
        choices=0,
    )
    view = FakeView(3, now_s=1.0)
    settle(policy, view, [300.0, 200.0, 250.0])
    view.in_flight[:] = [2, 30, 3]  # b1 answers fastest but holds ten times the requests
    tight = RequestInfo(1, 1.0, 4000, "premium", 60.0, 2000.0)  # no backend is likely
    b = policy.choose(tight, view)
    assert policy.last.reason == "hotcold_at_risk" and max(policy.last.p) < 0.95
    assert b == 2  # cold ones: b0 and b2; b2 has the lower recent TTFT


def test_power_of_d_choices_spreads_a_burst_over_every_backend(toy_model):
    policy = PredictiveRouter(profiles([1.0, 2.0, 3.0]), model=toy_model, explore_s=1e9, choices=2)
    view = FakeView(3, now_s=1.0)
    settle(policy, view, [150.0, 150.0, 150.0])
    sent = [0, 0, 0]
    for rid in range(90):
        b = policy.choose(request(rid, now=1.0), view)
        sent[b] += 1
    # the cheapest wins whenever it is drawn (two thirds of the pairs), the dearest never
    assert sent[2] == 0 and 45 <= sent[0] <= 75, sent
    with pytest.raises(ValueError, match="choices"):
        PredictiveSettings(choices=1)
    with pytest.raises(ValueError, match="at_risk"):
        PredictiveSettings(at_risk="random")


def test_near_equal_probabilities_are_told_apart_by_requests_in_flight(toy_model):
    def pick(p: list[float], inflight: list[int], **settings: float) -> tuple[int, str]:
        n = len(p)
        policy = PredictiveRouter(
            profiles([1.0] * n), model=toy_model, explore_s=1e9, choices=0, **settings
        )
        req = RequestInfo(1, 1.0, 512, "standard", 300.0, 6000.0)
        return policy._pick(p, [1.0] * n, [False] * n, 1.0, req, inflight)

    # at risk: b0 is likelier by 0.02, a difference its lagging averages cannot vouch for,
    # and holds six requests to b1's one; b2 is clearly worse and idle
    at_risk, load = [0.60, 0.58, 0.40], [6, 1, 0]
    assert pick(at_risk, load, tie_p=0.0) == (0, "likeliest_at_risk")
    assert pick(at_risk, load, tie_p=0.05) == (1, "likeliest_at_risk")
    # outside the band the likelier wins however loaded
    assert pick(at_risk, load, tie_p=0.01) == (0, "likeliest_at_risk")
    # identical replicas at the same price, both safe: the less loaded, not the first
    assert pick([0.99, 0.99], [5, 1], tie_p=0.0) == (0, "cheapest_likely")
    assert pick([0.99, 0.99], [5, 1], tie_p=0.05) == (1, "cheapest_likely")
    with pytest.raises(ValueError, match="tie_p"):
        PredictiveSettings(tie_p=1.5)
