"""Race the predictive router against the anchors, on the demo's scenarios or on held-out runs.

    python benchmarks/bench_predictive_race.py [--seeds N] [--scenarios A,B] [--json PATH]
    python benchmarks/bench_predictive_race.py --dev 950000:950012 [--variants JSON]
    python benchmarks/bench_predictive_race.py --first-seed 950000 --seeds 3 [--variants JSON]
    python benchmarks/bench_predictive_race.py --seeds 2 --anchors '' --variants JSON  (ablation)

Default: the demo's ten scenarios (`tools.sim.scenario.SCENARIOS`) x N seeds x the anchors
(least_request, peak_ewma, prequal, c3, llmd) and `predictive`, through `tools.sim.simulate`
(common random numbers: every policy sees the same build of a seed), printing per run and then,
per scenario, each policy's mean SLA violations and the predictive router's ratio to the best
anchor. It is the demo's comparison for the router alone, until `arcpoint demo --seeds N` races
it with everything else.

`--dev LO:HI` races random experiments (`tools.routers.predictive.training.training_run`, seeds
LO..HI-1) instead: where settings are chosen (never on the demo's scenarios or the traces).
`--variants '{"name": {setting: value}}'` runs predictive variants side by side (`"prior": true`
adds the 5-minute forecast prior, its forecaster trained here as the demo trains it; `"prior":
"mean"` the prior that shifts on the forecast's mean alone, without its interval), the summary
gives each variant's geometric-mean violation ratio to the best anchor, its wins (at most 0.7x),
and its worst goodput ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from evals.scoring import count_flaps
from evals.workload_files import trace_for
from tools.routers.registry import make_policy
from tools.sim.metrics import summarise
from tools.sim.run import profiles, simulate
from tools.sim.scenario import SCENARIOS, Built, build

ANCHORS = ("least_request", "peak_ewma", "prequal", "c3", "llmd")
_TRACES: dict[str, Any] = {}
_VARIANTS: dict[str, dict[str, Any]] = {}
_FORECASTER: list[Any] = []


def _build(where: str, seed: int) -> Built:
    if where == "dev":
        from tools.routers.predictive.training import training_run

        return training_run(seed)
    sc = SCENARIOS[where]
    return build(sc, sc.seed + seed, _TRACES.get(sc.trace_source or ""))


def _one(task: tuple[str, str, int]) -> tuple[str, str, int, dict[str, float]]:
    where, name, seed = task
    b = _build(where, seed)
    if name in _VARIANTS:
        opts = dict(_VARIANTS[name])
        prior = opts.pop("prior", False)
        if prior:
            from tools.routers.predictive.prior import ForecastPrior

            opts["prior"] = ForecastPrior(
                _FORECASTER[0], [s.name for s in b.fleet], require_interval=prior != "mean"
            )
        policy = make_policy("predictive", profiles(b.fleet), seed=b.seed, **opts)
    else:
        policy = make_policy(name, profiles(b.fleet), seed=b.seed)
    t0 = time.perf_counter()
    r = simulate(b.workload, b.fleet, policy, plan=b.plan)
    m: dict[str, Any] = dict(summarise(r))
    counts = {n: np.array([t.counts.get(n, 0) for t in r.ticks], float) for n in r.backends}
    ts = np.array([t.ts for t in r.ticks])
    m["flaps_per_h"] = sum(count_flaps(counts, ts).values()) / (r.duration_s / 3600)
    m["ambiguous_pct"] = 100.0 * getattr(policy, "ambiguous", 0) / max(1, len(r))
    m["seconds"] = time.perf_counter() - t0
    return where, name, seed, m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="scenario seeds are each scenario's seed + FIRST..FIRST+N-1 (the demo's: 0; "
        "settings are chosen at 950000, never at the demo's)",
    )
    ap.add_argument("--dev", metavar="LO:HI", help="random held-out runs instead of scenarios")
    ap.add_argument("--variants", default='{"predictive": {}}', help="JSON name -> settings")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--anchors",
        default=",".join(ANCHORS),
        help="comma-separated anchors to race (default all five; empty: the variants alone, "
        "means only, e.g. an ablation whose anchors `arcpoint demo` already ran)",
    )
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument(
        "--reuse",
        metavar="PATH",
        action="append",
        default=[],
        help="a previous run's --json: its runs (same cells, same policy names) are not re-run "
        "(the anchors do not change between variant races); repeatable",
    )
    args = ap.parse_args(argv)
    _VARIANTS.update(json.loads(args.variants))
    if any(v.get("prior") for v in _VARIANTS.values()):
        # the demo's forecaster recipe: telemetry of another simulated run of the default fleet
        from tools.forecaster import train
        from tools.sim.history import simulate_history

        print("training the forecaster for the prior...", flush=True)
        _FORECASTER.append(train(simulate_history(3 * 3600.0, seed=1000), seed=0)[0])
    if args.dev:
        lo, hi = (int(x) for x in args.dev.split(":"))
        cells = [("dev", s) for s in range(lo, hi)]
    else:
        names = args.scenarios.split(",")
        for s in names:
            src = SCENARIOS[s].trace_source
            if src and src not in _TRACES:
                _TRACES[src] = trace_for(src)
        first = args.first_seed
        cells = [(s, first + k) for s in names for k in range(args.seeds)]
    anchors = tuple(a for a in args.anchors.split(",") if a)
    unknown = sorted(set(anchors) - set(ANCHORS))
    if unknown:
        ap.error(f"unknown anchor(s) {unknown}; known: {', '.join(ANCHORS)}")
    policies = [*anchors, *_VARIANTS]
    res: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    for path in args.reuse:
        for key, runs in json.loads(Path(path).read_text()).items():
            where, _, seed = key.rpartition(":")
            if (where, int(seed)) in cells:
                for name, m in runs.items():
                    if name in policies:
                        res.setdefault((where, int(seed)), {})[name] = m
    tasks = [(w, p, k) for w, k in cells for p in policies if p not in res.get((w, k), {})]
    with get_context("fork").Pool(args.jobs) as pool:
        for where, name, seed, m in pool.imap_unordered(_one, tasks):
            res.setdefault((where, seed), {})[name] = m
            print(f"{where:18s} {seed:7d} {name:14s} viol={m['sla_violation_pct']:6.2f} "
                  f"good={m['goodput_rps']:6.2f} flaps={m['flaps_per_h']:4.0f} "
                  f"t={m['seconds']:.1f}s", flush=True)  # fmt: skip
            if args.json:  # after every run: a long race stopped early keeps what it ran
                _write(args.json, res)
    print()
    groups: dict[str, list[tuple[str, int]]] = {}
    for key in res:
        groups.setdefault("dev" if args.dev else key[0], []).append(key)
    if len(groups) > 1:
        groups["all"] = list(res)
    for group, keys in groups.items():
        ratios: dict[str, list[float]] = {v: [] for v in _VARIANTS}
        goodput: dict[str, list[float]] = {v: [] for v in _VARIANTS}
        flaps: dict[str, list[float]] = {v: [] for v in _VARIANTS}
        means = {p: float(np.mean([res[k][p]["sla_violation_pct"] for k in keys]))
                 for p in policies}  # fmt: skip
        line = f"{group:18s} " + " ".join(f"{p[:8]}={means[p]:6.2f}" for p in policies)
        if not anchors:
            print(line)
            continue
        for k in keys:
            r = res[k]
            best = min(anchors, key=lambda p: r[p]["sla_violation_pct"])
            top = max(r[p]["goodput_rps"] for p in anchors)
            for v in _VARIANTS:
                bv = r[best]["sla_violation_pct"]
                ratios[v].append((r[v]["sla_violation_pct"] + 0.5) / (bv + 0.5))
                goodput[v].append(r[v]["goodput_rps"] / top if top else 1.0)
                flaps[v].append(r[v]["flaps_per_h"])
        best_mean = min(anchors, key=lambda p: means[p])
        print(line + f" | best anchor {best_mean}")
        for v in _VARIANTS:
            geo = math.exp(float(np.mean(np.log(ratios[v]))))
            wins = sum(x <= 0.7 for x in ratios[v])
            print(f"  {v}: mean/best-anchor-mean {means[v] / max(means[best_mean], 1e-9):.2f}, "
                  f"geo-mean ratio {geo:.3f}, wins {wins}/{len(keys)}, "
                  f"worst goodput ratio {min(goodput[v]):.3f}, "
                  f"flaps/h mean {np.mean(flaps[v]):.0f} max {max(flaps[v]):.0f}")  # fmt: skip
    if args.json:
        _write(args.json, res)
    return 0


def _write(path: str, res: dict[tuple[str, int], dict[str, dict[str, float]]]) -> None:
    out = {f"{w}:{k}": v for (w, k), v in res.items()}
    Path(path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
