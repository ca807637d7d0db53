"""The predictive router's hot path and refresh, against scikit-learn's predict in the same run.

    python benchmarks/bench_predictive.py [--json PATH] [--requests N]

For fleets of 4, 8 and 16 backends: `choose` per request (p50/p99, the timer's own cost
subtracted) on a hand-driven view with scrapes every 100 requests and completions as they come,
and the refresh of one backend's grid (the model over 16 x 20 points). scikit-learn's `predict`
is timed on the same rows, from a forest of the shipped model's configuration fitted in this run
(its predictions as targets, so the trees have the same shape): per request it would cost one
call on the fleet's rows. Absolute times move with the machine's load; the ratio is the point.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from resource import RUSAGE_THREAD, getrusage
from typing import Any

import numpy as np

from tools.routers.base import BackendProfile, Completion, EngineMetrics, RequestInfo
from tools.routers.predictive import PredictiveRouter
from tools.routers.predictive.features import vary
from tools.routers.predictive.table import DELTAS, TOKEN_GRID


class _View:
    def __init__(self, n: int, backends: list[BackendProfile] | None = None) -> None:
        self.now_s = 0.0
        self.backends = backends or []
        self.in_flight = [0] * n
        self.scrapes: dict[int, EngineMetrics] = {}

    def last_scrape(self, b: int) -> EngineMetrics | None:
        return self.scrapes.get(b)

    def send_probe(self, b: int) -> None:
        return None


def _pct(ns: np.ndarray, q: float) -> float:
    return float(np.percentile(ns, q)) / 1000.0


class Trace:
    """What `drive` records beside each request's time, to say which requests are slow: the
    time of each scrape's handling (the grid refresh it triggers included), whether a grid
    refresh ran since the previous request, how many requests ago the last refresh was,
    whether a garbage collection ran during the request, whether the process was switched out
    during it (context switches, read with `getrusage` around the timer: on a shared machine
    another process's turn lands inside some requests), and the policy's reason for its pick."""

    def __init__(self, requests: int) -> None:
        self.scrape_ns: list[int] = []
        self.after_refresh = np.zeros(requests, dtype=bool)
        self.since_refresh = np.zeros(requests, dtype=np.int64)
        self.gc_during = np.zeros(requests, dtype=bool)
        self.switched = np.zeros(requests, dtype=bool)
        self.reason: list[str] = []

    def trim(self, w: int) -> None:
        """Drop the first `w` requests (the warm-up) and the first tenth of the scrapes."""
        self.after_refresh = self.after_refresh[w:]
        self.since_refresh = self.since_refresh[w:]
        self.gc_during = self.gc_during[w:]
        self.switched = self.switched[w:]
        self.reason = self.reason[w:]
        self.scrape_ns = self.scrape_ns[len(self.scrape_ns) // 10 :]


def drive(
    n: int,
    requests: int,
    seed: int = 0,
    wrap: Callable[[PredictiveRouter], Any] | None = None,
    full: bool = False,
    trace: Trace | None = None,
) -> tuple[np.ndarray, PredictiveRouter, _View]:
    """Route `requests` through a fresh router on n backends; per-request times (ns).

    `wrap`: what is timed around the policy (`agents.router.Router` in bench_router.py), fed
    the same scrapes and completions; `full`: time its `route` (a whole `Decision`), not
    `choose`; `trace`: filled in (see `Trace`)."""
    backs = [BackendProfile(f"b{i}", 1e-4 * (1 + i % 3), 2e-4 * (1 + i % 3)) for i in range(n)]
    policy = PredictiveRouter(backs, explore_s=1e9)
    target = wrap(policy) if wrap is not None else policy
    view = _View(n, backs)
    rng = np.random.default_rng(seed)
    clock = time.perf_counter_ns
    out = np.empty(requests, dtype=np.int64)
    collections = [0]
    if trace is not None:
        gc.callbacks.append(_count_collections(collections))
    refreshes = policy.refreshes
    since = 0
    for k in range(requests):
        view.now_s += 0.01
        if k % 100 == 0:
            for b in range(n):
                running, waiting = int(rng.integers(0, 30)), int(rng.integers(0, 5))
                m = EngineMetrics(b, view.now_s, running, waiting, float(rng.random() * 0.5))
                view.scrapes[b] = m
                t0 = clock()
                target.on_scrape(m, view)
                if trace is not None:
                    trace.scrape_ns.append(clock() - t0)
        req = RequestInfo(k, view.now_s, int(rng.integers(50, 4000)), "standard", 1e3, 3e4)
        if trace is not None:
            trace.after_refresh[k] = policy.refreshes != refreshes
            since = 0 if policy.refreshes != refreshes else since + 1
            trace.since_refresh[k] = since
            refreshes = policy.refreshes
            before = collections[0]
            ru = getrusage(RUSAGE_THREAD)
            switches = ru.ru_nvcsw + ru.ru_nivcsw
        t0 = clock()
        if full:
            d = target.route(req, view)
            out[k] = clock() - t0
            b = int(d.backend[1:])
            # the caller lets the decision go after the request (a replay or the server once it
            # is logged), not while the next one is routed: were it released by the next
            # assignment, the timer would count it (and, after a refresh, the old grids it holds)
            d = None
        else:
            b = target.choose(req, view)
            out[k] = clock() - t0
        if trace is not None:
            ru = getrusage(RUSAGE_THREAD)
            trace.switched[k] = ru.ru_nvcsw + ru.ru_nivcsw != switches
            trace.gc_during[k] = collections[0] != before
            trace.reason.append(policy.last.reason)
        view.in_flight[b] += 1
        done = int(rng.integers(0, n))
        if k > 20 and view.in_flight[done] > 0:
            view.in_flight[done] -= 1
            c = Completion(k - 20, done, view.now_s - 1, view.now_s, "ok", 200.0, 2e3, 500, 100)
            target.on_complete(c, view)
    if trace is not None:
        gc.callbacks.pop()
    overhead = np.empty(20_000, dtype=np.int64)
    for i in range(overhead.size):
        t0 = clock()
        overhead[i] = clock() - t0
    return np.maximum(out - int(np.median(overhead)), 0), policy, view


def _count_collections(counter: list[int]) -> Callable[[str, dict[str, int]], None]:
    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counter[0] += 1

    return on_gc


def sklearn_twin(policy: PredictiveRouter, view: _View) -> Any:
    """A scikit-learn forest of the shipped TTFT model's configuration, fitted here on the
    model's own predictions over the grid rows of the first 4 backends (same tree shape)."""
    from sklearn.ensemble import RandomForestRegressor

    model, tracker = policy.model, policy.tracker
    assert model is not None
    hp = model.hyperparameters
    train_X = np.vstack([vary(tracker.row(b, view, 0.0), TOKEN_GRID, DELTAS, 1000.0)
                         for b in range(min(4, policy.n))] * 40)  # fmt: skip
    train_X = train_X + np.random.default_rng(1).normal(0, 0.3, train_X.shape)
    print("fitting a scikit-learn forest of the same configuration...", file=sys.stderr)
    return RandomForestRegressor(
        n_estimators=hp["n_estimators"],
        max_depth=hp["max_depth"],
        min_samples_leaf=5,
        max_features=hp["max_features"],
        random_state=0,
        n_jobs=1,
    ).fit(train_X, model.predict(train_X)[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    ap.add_argument("--requests", type=int, default=50_000)
    args = ap.parse_args(argv)
    fig: dict[str, float | int | str] = {}
    policy = view = None
    for n in (4, 8, 16):
        ns, policy_n, view_n = drive(n, args.requests)
        ns = ns[len(ns) // 10 :]  # warm-up (numba compilation, first grids) excluded
        fig[f"route_p50_us_{n}"] = round(_pct(ns, 50), 2)
        fig[f"route_p99_us_{n}"] = round(_pct(ns, 99), 2)
        if n == 4:
            policy, view = policy_n, view_n
    assert policy is not None and view is not None
    fig["route_p50_us"] = fig["route_p50_us_4"]
    fig["route_p99_us"] = fig["route_p99_us_4"]

    # refresh of one backend's grid vs scikit-learn on the same rows
    model = policy.model
    assert model is not None
    tracker = policy.tracker
    grid = vary(tracker.row(0, view, 0.0), TOKEN_GRID, DELTAS, tracker.mean_input)
    rf = sklearn_twin(policy, view)
    rows4 = np.vstack([tracker.row(b, view, 800.0) for b in range(4)])
    clock = time.perf_counter_ns
    ours, sk_grid, sk_req = [], [], []
    for _ in range(5):
        rf.predict(rows4)
        policy.table.refresh([0], tracker, view, [0.0] * 4, [0.0] * 4, [0.0] * 4)
    for _ in range(100):
        t0 = clock()
        rf.predict(rows4)
        sk_req.append(clock() - t0)
        t0 = clock()
        rf.predict(grid)
        rf.predict(grid)  # two targets, as the refresh evaluates
        sk_grid.append(clock() - t0)
        t0 = clock()
        policy.table.refresh([0], tracker, view, [0.0] * 4, [0.0] * 4, [0.0] * 4)
        ours.append(clock() - t0)
    fig["refresh_one_backend_p50_us"] = round(_pct(np.array(ours), 50), 1)
    fig["sklearn_same_grid_p50_us"] = round(_pct(np.array(sk_grid), 50), 1)
    fig["refresh_speedup"] = round(
        float(fig["sklearn_same_grid_p50_us"]) / float(fig["refresh_one_backend_p50_us"]), 1
    )
    fig["sklearn_predict_per_request_p50_us"] = round(_pct(np.array(sk_req), 50), 1)
    fig["model_version"] = model.version_id
    fig["trees"] = model.ttft.forest.n_trees
    targets = {"route_p99_us": ("<=", 20)}
    for k, v in fig.items():
        mark = ""
        if k in targets:
            op, t = targets[k]
            mark = f"   target {op} {t}: {'met' if v <= t else 'NOT met'}"  # type: ignore[operator]
        print(f"{k:>36}: {v}{mark}")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
