"""Train the latency model from closed-loop outcomes on simulated fleets it will never be judged on.

Data. `training_run(seed)` draws a whole experiment at random: a fleet of 3 to 8 backends whose
GPUs are drawn from a continuum of memory, bandwidth and compute (not only the three classes of
the default fleet, so speed is something the model reads from live signals, not a name),
synthetic traffic at a random load with prompt lengths scaled up or down, optional shared-prefix
documents, and one chaos event of a random kind on a random backend. None of the demo's
scenarios or seeds, and none of the Azure traces' arrivals, is used: the demo and the traces are
where the router is judged.

Closed loop. `Recorder` wraps a behaviour policy: at each decision it takes the chosen backend's
feature row (`FleetTracker.row`, the serving code) and joins it with the request's outcome when
that arrives. The behaviour is least-request, round robin or the predictive router itself, each
with an `epsilon` share of uniformly random choices, so the data holds the states a router
creates and the bad choices it must learn to avoid.

Fit. `fit` trains a `LatencyModel` on some runs, calibrates its spread on other runs and reports
coverage on yet other runs (`report`): the share of held-out outcomes inside the 80% and 90%
intervals and the calibration of P(meet SLO) by decile.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tools.routers.base import (
    Completion,
    EngineMetrics,
    PolicyBase,
    ProbeReply,
    RequestInfo,
    RouterView,
    RoutingPolicy,
)
from tools.routers.llmd import DEFAULT_LRU_CAPACITY_PER_SERVER, PrefixIndex
from tools.routers.predictive.features import (
    FEATURES,
    MONOTONE_INCREASING,
    N_FEATURES,
    FleetTracker,
)
from tools.routers.predictive.model import (
    CAL_PROBS,
    LatencyModel,
    MomentForest,
    calibrate,
    leaf_moments,
)
from tools.sim.chaos import CHAOS_KINDS, ChaosEvent, apply_arrival_chaos, compile_plan
from tools.sim.run import SimConfig, profiles, simulate
from tools.sim.scenario import Built, Scenario, SyntheticTraffic
from tools.sim.spec import GpuClass, TokenStats, fleet_capacity_rps
from tools.sim.workload import LENGTH_FITS, Workload, synthetic
from tools.sim.workload import TIERS as SIM_TIERS

TRAIN_SEED_BASE = 900_000
"""Training runs use seeds from here (the demo's scenarios use 101-110 plus the seed index)."""
BLOCK_TOKENS = 16


# --- random experiments ---------------------------------------------------------------------
def random_gpu(rng: random.Random, i: int) -> GpuClass:
    """A GPU from a continuum spanning L4-class to H200-class parts; price follows speed."""
    bw = math.exp(rng.uniform(math.log(700), math.log(4800)))
    tflops = bw * math.exp(rng.uniform(math.log(0.1), math.log(0.35)))
    mem = rng.choice((48, 80, 80, 94, 141))
    price = 0.9 * (bw / 1000.0) ** 0.9 * math.exp(rng.uniform(-0.25, 0.25))
    return GpuClass(f"g{i}", memory_gb=mem, bandwidth_gbs=bw, bf16_tflops=tflops, hourly_usd=price)


def with_prefixes(w: Workload, rng: np.random.Generator, share: float, docs: int) -> Workload:
    """`w` with `share` of its requests opening with one of `docs` shared documents (Zipf
    popularity, up to 2,048 tokens each): block hashes as public prefix-sharing traces carry."""
    n = len(w)
    doc_len = rng.integers(16, 2048, size=docs)
    pop = 1.0 / np.arange(1, docs + 1) ** 1.1
    pop /= pop.sum()
    which = rng.choice(docs, size=n, p=pop)
    shared = rng.random(n) < share
    out = []
    nxt = 1 << 40
    for r in range(n):
        blocks = int(w.input_tokens[r]) // BLOCK_TOKENS
        if shared[r]:
            k = min(blocks, int(doc_len[which[r]]) // BLOCK_TOKENS)
            head = tuple(int(which[r]) * 100_000 + j for j in range(k))
        else:
            head = ()
        tail = tuple(range(nxt, nxt + blocks - len(head)))
        nxt += blocks
        out.append(head + tail)
    return replace(w, prefix=tuple(out), block_tokens=BLOCK_TOKENS)


def training_run(seed: int, duration_s: float = 600.0) -> Built:
    """One random experiment (see the module docstring), reproducible from `seed`."""
    rng = random.Random(seed)
    nb = rng.randint(3, 8)
    fleet = tuple(random_gpu(rng, i).derive(f"t{i}") for i in range(nb))
    base = LENGTH_FITS[rng.choice(("conv", "code"))]
    scale = math.exp(rng.uniform(math.log(0.4), math.log(2.5)))
    fit = replace(
        base,
        mu_in=base.mu_in + math.log(scale),
        max_in=int(min(32_000, base.max_in * scale)),
        mu_out=base.mu_out + rng.uniform(-0.5, 0.5),
    )
    probe = np.random.default_rng(seed)
    i, o = fit.draw(20_000, probe)
    load = rng.uniform(0.15, 1.05)
    mean_rps = load * fleet_capacity_rps(fleet, TokenStats.of(i, o))
    traffic = SyntheticTraffic(
        mean_rps=mean_rps,
        diurnal_amplitude=rng.uniform(0.0, 0.5),
        period_s=rng.uniform(300.0, 3600.0),
        burst_rate_per_hour=rng.uniform(0.0, 12.0),
        burst_multiplier=rng.uniform(1.0, 2.5),
    )
    w = synthetic(
        duration_s=duration_s,
        mean_rps=mean_rps,
        seed=seed,
        lengths=fit,
        diurnal_amplitude=traffic.diurnal_amplitude,
        period_s=traffic.period_s,
        burst_rate_per_hour=traffic.burst_rate_per_hour,
        burst_multiplier=traffic.burst_multiplier,
    )
    if rng.random() < 0.3:
        w = with_prefixes(w, np.random.default_rng(seed + 1), rng.uniform(0.3, 0.9), 50)
    chaos: tuple[ChaosEvent, ...] = ()
    if rng.random() < 0.85:
        kind = rng.choice(CHAOS_KINDS)
        start = rng.uniform(60.0, duration_s * 0.6)
        dur = rng.uniform(60.0, duration_s - start)
        ev: dict[str, Any] = {"kind": kind, "start_s": start, "duration_s": dur}
        if kind not in ("traffic_surge", "kv_pressure"):
            ev["backend"] = fleet[rng.randrange(nb)].name
        if kind in ("latency_spike", "slow_replica", "anomaly_burst"):
            ev["magnitude"] = math.exp(rng.uniform(math.log(1.5), math.log(16.0)))
        elif kind == "gradual_drift":
            ev["magnitude"] = rng.uniform(1.3, 4.0)
        elif kind == "traffic_surge":
            ev["magnitude"] = rng.uniform(1.3, 3.0)
        elif kind == "kv_pressure":
            ev["magnitude"] = rng.uniform(0.5, 2.0)
        if kind in ("backend_failure", "cascading_failure"):
            ev["mode"] = rng.choice(("hang", "error"))
        chaos = (ChaosEvent(**ev),)
    sc = Scenario(
        name=f"train-{seed}", seed=seed, duration_s=duration_s, fleet=fleet, traffic=traffic,
        chaos=chaos,
    )  # fmt: skip
    w = replace(apply_arrival_chaos(w, chaos, seed), name=sc.name)
    plan = compile_plan(chaos, [s.name for s in fleet], duration_s, seed)
    return Built(sc, seed, fleet, w, plan)


# --- the closed-loop log ----------------------------------------------------------------------
class Recorder(PolicyBase):
    """Wraps a behaviour policy; logs the chosen backend's feature row with the outcome."""

    def __init__(self, base: RoutingPolicy, n: int, epsilon: float = 0.0, seed: int = 0) -> None:
        self.base = base
        self.name = f"recorded-{getattr(base, 'name', 'policy')}"
        self.scrape_interval_s = getattr(base, "scrape_interval_s", None)
        self.tracker = FleetTracker(n)
        self.prefix = PrefixIndex(n, DEFAULT_LRU_CAPACITY_PER_SERVER)
        self.epsilon = epsilon
        self.n = n
        self.rng = random.Random(seed)
        self.pending: dict[int, np.ndarray] = {}
        self.rows: list[np.ndarray] = []
        self.outcomes: list[tuple[float, float, int]] = []
        """(TTFT ms or NaN, e2e ms, status code 0 ok / 1 timeout / 2 error / 3 rejected)."""
        self.on_tick = getattr(base, "on_tick", super().on_tick)

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        b = self.base.choose(request, view)
        if self.epsilon and self.rng.random() < self.epsilon:
            b = self.rng.randrange(self.n)
        inp = request.input_tokens
        hashes = request.prefix_hashes[:256]
        tok = float(inp)
        if hashes:
            hit = self.prefix.match(hashes).get(b, 0)
            tok = float(max(1, inp - hit * BLOCK_TOKENS))
            self.prefix.add(hashes, b)
        self.pending[request.request_id] = self.tracker.row(b, view, tok)
        self.tracker.on_route(b, inp, view.now_s)
        return b

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        c = completion
        row = self.pending.pop(c.request_id, None)
        if row is not None:
            code = ("ok", "timeout", "error", "rejected").index(c.status)
            self.rows.append(row)
            self.outcomes.append((math.nan if c.ttft_ms is None else c.ttft_ms, c.e2e_ms, code))
        self.tracker.on_complete(c)
        self.base.on_complete(c, view)

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        self.tracker.on_scrape(metrics)
        self.base.on_scrape(metrics, view)

    def on_probe(self, reply: ProbeReply, view: RouterView) -> None:
        self.base.on_probe(reply, view)


@dataclass
class Dataset:
    X: np.ndarray
    ttft_ms: np.ndarray
    """NaN where no token came (timeouts: see `targets`)."""
    e2e_ms: np.ndarray
    status: np.ndarray
    group: np.ndarray
    """Which run each row comes from (splits keep runs whole)."""

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def take(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.X[idx], self.ttft_ms[idx], self.e2e_ms[idx], self.status[idx],
                       self.group[idx])  # fmt: skip

    def targets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows used, log TTFT, log e2e): served requests and timeouts (a timeout's TTFT is
        taken as its time to give up: censored, but the forest needs to see that it is long);
        errors and rejections are failures, not latencies (the router tracks their rate)."""
        use = self.status <= 1
        ttft = np.where(np.isnan(self.ttft_ms), self.e2e_ms, self.ttft_ms)
        return use, np.log(np.maximum(ttft[use], 1.0)), np.log(np.maximum(self.e2e_ms[use], 1.0))

    @staticmethod
    def concat(parts: Sequence[Dataset]) -> Dataset:
        return Dataset(*(np.concatenate([getattr(p, k) for p in parts])
                         for k in ("X", "ttft_ms", "e2e_ms", "status", "group")))  # fmt: skip


def record_run(built: Built, behaviour: RoutingPolicy, group: int, epsilon: float, seed: int,
               config: SimConfig | None = None) -> Dataset:  # fmt: skip
    """Simulate `built` under `behaviour` (epsilon-randomised) and return its joined log."""
    rec = Recorder(behaviour, len(built.fleet), epsilon=epsilon, seed=seed)
    simulate(built.workload, built.fleet, rec, plan=built.plan, config=config)
    if not rec.rows:
        return Dataset(np.empty((0, N_FEATURES)), *(np.empty(0) for _ in range(4)))
    out = np.asarray(rec.outcomes)
    return Dataset(np.vstack(rec.rows), out[:, 0], out[:, 1], out[:, 2].astype(np.int8),
                   np.full(len(rec.rows), group, dtype=np.int32))  # fmt: skip


def collect(
    seeds: Sequence[int],
    behaviours: Sequence[Callable[[Built], RoutingPolicy]],
    epsilon: float = 0.2,
    duration_s: float = 600.0,
    log: Callable[[str], None] | None = None,
) -> Dataset:
    """One run per seed, its behaviour policy taken in turn from `behaviours`."""
    parts = []
    for k, seed in enumerate(seeds):
        built = training_run(seed, duration_s)
        pol = behaviours[k % len(behaviours)](built)
        t0 = time.perf_counter()
        ds = record_run(built, pol, group=seed, epsilon=epsilon, seed=seed)
        parts.append(ds)
        if log:
            log(f"run {seed}: {len(built.fleet)} backends, {len(ds)} rows, "
                f"{getattr(pol, 'name', '?')}, {time.perf_counter() - t0:.1f}s")  # fmt: skip
    return Dataset.concat(parts)


# --- fitting and its report --------------------------------------------------------------------
def _forest(X: np.ndarray, y: np.ndarray, hp: dict[str, Any], seed: int) -> MomentForest:
    from sklearn.ensemble import RandomForestRegressor

    from tools.flat_forest import FlatForest

    mono = [1 if name in MONOTONE_INCREASING else 0 for name in FEATURES]
    rf = RandomForestRegressor(
        n_estimators=hp["n_estimators"],
        max_depth=hp["max_depth"],
        min_samples_leaf=hp["min_samples_leaf"],
        max_features=hp["max_features"],
        max_samples=hp["max_samples"],
        monotonic_cst=mono,
        random_state=seed,
        n_jobs=hp.get("n_jobs", 2),
    ).fit(X, y)
    flat = FlatForest.from_sklearn(rf)
    del rf
    m1, m2 = leaf_moments(flat, X, y)
    return MomentForest(flat.with_leaf_values(m1), m2, np.zeros_like(CAL_PROBS))


DEFAULT_HYPERPARAMETERS: dict[str, Any] = {
    "n_estimators": 30,
    "max_depth": 12,
    "min_samples_leaf": 200,
    "max_features": 0.6,
    "max_samples": 0.3,
}


def split_groups(ds: Dataset, fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Row indices of consecutive shares of the runs (shuffled by seed), whole runs each."""
    groups = np.unique(ds.group)
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    cuts = np.cumsum(np.asarray(fractions) * groups.size).round().astype(int)
    parts = np.split(groups, cuts[:-1])
    return [np.flatnonzero(np.isin(ds.group, p)) for p in parts]


def fit(
    ds: Dataset,
    *,
    hyperparameters: dict[str, Any] | None = None,
    seed: int = 0,
    calibration_share: float = 0.2,
    trained_on: dict[str, Any] | None = None,
    max_rows: int = 400_000,
    parent_version: str | None = None,
) -> LatencyModel:
    """Fit on (1 - calibration_share) of the runs, calibrate on the rest."""
    hp = {**DEFAULT_HYPERPARAMETERS, **(hyperparameters or {})}
    fit_idx, cal_idx = split_groups(ds, (1.0 - calibration_share, calibration_share), seed)
    fit_ds, cal_ds = ds.take(fit_idx), ds.take(cal_idx)
    if not len(fit_ds) or not len(cal_ds):
        raise ValueError(
            f"need runs both to fit and to calibrate on: {np.unique(ds.group).size} run(s) given"
        )
    use, yt, ye = fit_ds.targets()
    X = fit_ds.X[use]
    if X.shape[0] > max_rows:
        keep = np.random.default_rng(seed).choice(X.shape[0], max_rows, replace=False)
        X, yt, ye = X[keep], yt[keep], ye[keep]
    t0 = time.perf_counter()
    ttft = _forest(X, yt, hp, seed)
    e2e = _forest(X, ye, hp, seed + 1)
    cuse, cyt, cye = cal_ds.targets()
    ttft = calibrate(ttft, cal_ds.X[cuse], cyt)
    e2e = calibrate(e2e, cal_ds.X[cuse], cye)
    hp_out = {k: v for k, v in hp.items() if k != "n_jobs"}
    info = {
        **(trained_on or {}),
        "fit_rows": int(X.shape[0]),
        "calibration_rows": int(cuse.sum()),
        "fit_runs": int(np.unique(fit_ds.group).size),
        "calibration_runs": int(np.unique(cal_ds.group).size),
        "fit_seconds": round(time.perf_counter() - t0, 1),
    }
    return LatencyModel(
        ttft, e2e, hyperparameters=hp_out, trained_on=info, parent_version=parent_version
    )


def evaluate(model: LatencyModel, ds: Dataset) -> dict[str, Any]:
    """Held-out quality: MAE of log latency, interval coverage (80%, 90%), and the calibration
    of P(meet SLO) per tier (predicted vs observed share, by decile of the prediction)."""
    use, yt, ye = ds.targets()
    X = ds.X[use]
    mt, st, me, se = model.predict(X)
    out: dict[str, Any] = {"rows": int(use.sum()), "runs": int(np.unique(ds.group).size)}
    for name, mu, sd, y, mf in (("ttft", mt, st, yt, model.ttft), ("e2e", me, se, ye, model.e2e)):
        cov = {}
        for level in (0.8, 0.9):
            lo = mu + sd * mf.zq((1 - level) / 2)
            hi = mu + sd * mf.zq((1 + level) / 2)
            cov[f"coverage_{int(level * 100)}"] = round(float(np.mean((y >= lo) & (y <= hi))), 4)
        med = mu + sd * mf.zq(0.5)
        out[name] = {
            "mae_log": round(float(np.mean(np.abs(y - med))), 4),
            "baseline_mae_log": round(float(np.mean(np.abs(y - np.median(y)))), 4),
            **cov,
        }
    # P(meet) calibration, all requests (failures count as misses), per tier SLO
    ttft_all = np.where(np.isnan(ds.ttft_ms), np.inf, ds.ttft_ms)
    mt, st, me, se = model.predict(ds.X)
    cal = {}
    for tier in SIM_TIERS:
        p = model.p_meet(mt, st, me, se, tier.ttft_slo_ms, tier.e2e_slo_ms)
        met = (ds.status == 0) & (ttft_all <= tier.ttft_slo_ms) & (ds.e2e_ms <= tier.e2e_slo_ms)
        bins = np.minimum((p * 10).astype(int), 9)
        rows = []
        for k in range(10):
            m = bins == k
            if m.sum() >= 50:
                rows.append([k / 10, round(float(p[m].mean()), 3), round(float(met[m].mean()), 3),
                             int(m.sum())])  # fmt: skip
        brier = float(np.mean((p - met) ** 2))
        cal[tier.name] = {"brier": round(brier, 4), "deciles": rows,
                          "base_rate": round(float(met.mean()), 4)}  # fmt: skip
    out["p_meet"] = cal
    return out


def behaviour_set(model: LatencyModel | None) -> list[Callable[[Built], RoutingPolicy]]:
    """The behaviour policies of a collection round (the router itself once a model exists)."""
    from tools.routers.registry import make_policy

    def named(name: str) -> Callable[[Built], RoutingPolicy]:
        return lambda b: make_policy(name, profiles(b.fleet), seed=b.seed)

    out = [named("least_request"), named("round_robin"), named("peak_ewma")]
    if model is not None:
        from tools.routers.predictive.policy import PredictiveRouter

        out.append(lambda b: PredictiveRouter(profiles(b.fleet), seed=b.seed, model=model))
    return out
