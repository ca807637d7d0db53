"""Simulator benchmark: requests simulated per second, and the event-driven engine against the
stepwise reference.

    python benchmarks/bench_sim.py [--json PATH] [--duration S] [--load X] [--repeats N]

One workload (synthetic traffic with the Azure conversation trace's token mix, on the default
fleet at `--load` of its capacity, 0.5 by default as in the demo's scenarios) is run through the
same policy (join the shortest queue on the router's own in-flight counts: a policy with almost
no cost of its own, so the figures are the simulator's) by the event-driven engine and by the
reference that steps every engine iteration, alternately, `--repeats` times each, on one core.
Both runs must give identical per-request results (the benchmark fails otherwise). Reported:
`sim_requests_per_s` (requests / best event-driven wall time) and `speedup_vs_stepwise` (best
stepwise time / best event-driven time), plus the same at a high load (0.85), where batches are
larger and stepping each iteration costs more.

What the two engines do (same model, `tools.sim.engine`'s docstring): the reference
(`tools.sim.stepwise`) ends every engine iteration with an event, rebuilds the batch from each
running sequence's state and costs the iteration from scratch (work proportional to the batch,
once per iteration); the event-driven engine ends a run of iterations only when the batch
changes (a request joins, a prefill completes or changes chunk, a sequence finishes, a chaos or
abort event), with each run's end in closed form. Both share the run loop (routing each request,
responses, timeouts, scrapes, ticks), which costs the same under either engine and so bounds the
ratio: `run_loop_s` times that loop with an engine that serves every request the instant it
arrives (no engine work at all), and `max_speedup` = stepwise time / `run_loop_s` is the ratio
an event-driven engine costing nothing would reach. `engine_speedup_vs_stepwise` =
(stepwise - run loop) / (event-driven - run loop) is the engines' own work compared, beside
(never instead of) the end-to-end `speedup_vs_stepwise`. The same ratios on the process's CPU
time (`cpu_*`) are reported beside the wall-time ones: on a machine shared with other work, the
wall time of a 0.1 s run moves with the machine's load more than its CPU time does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

import tools.sim.run as sim_run
from tools.routers.base import PolicyBase
from tools.sim.engine import DONE, OK, EventEngine
from tools.sim.run import SimConfig, simulate
from tools.sim.spec import DEFAULT_FLEET
from tools.sim.workload import synthetic_at_load


class ShortestQueue(PolicyBase):
    name = "shortest_queue"

    def choose(self, request, view):
        f = view.in_flight
        return f.index(min(f))  # the first least-loaded backend, in C: two calls, no key


class _Instant(EventEngine):
    """Serves every request the moment it arrives: what remains is the run loop's own cost."""

    def arrive(self, r: int, t: int) -> None:
        req = self.req
        req.state[r] = DONE
        req.first_ps[r] = req.done_ps[r] = t
        self.on_done(r, t, OK)


def _run_loop_only(w) -> float:
    real = sim_run.EventEngine
    sim_run.EventEngine = _Instant
    try:
        t0 = time.perf_counter()
        simulate(w, DEFAULT_FLEET, ShortestQueue(), config=SimConfig(engine="event"))
        return time.perf_counter() - t0
    finally:
        sim_run.EventEngine = real


def _identical(a, b) -> bool:
    if not (np.array_equal(a.status, b.status) and np.array_equal(a.backend, b.backend)):
        return False
    for field in ("ttft_ms", "e2e_ms", "tpot_ms"):
        x, y = getattr(a, field), getattr(b, field)
        if not np.array_equal(np.isnan(x), np.isnan(y)) or not np.array_equal(
            x[~np.isnan(x)], y[~np.isnan(y)]
        ):
            return False
    return True


def _engine_ratio(best: dict[str, float]) -> float | None:
    """The engines' own time compared (each run less the run loop alone); None when the noise
    of a shared machine leaves the event-driven engine no measurable time of its own."""
    own = best["event"] - best["loop"]
    return round((best["stepwise"] - best["loop"]) / own, 2) if own > 0 else None


def measure(load: float, duration_s: float, repeats: int, seed: int) -> dict[str, float]:
    w = synthetic_at_load(DEFAULT_FLEET, load, duration_s=duration_s, seed=seed)
    best = {"event": float("inf"), "stepwise": float("inf"), "loop": float("inf")}
    cpu = dict(best)
    results = {}
    for _ in range(repeats):
        for engine in ("event", "stepwise"):
            t0, c0 = time.perf_counter(), time.process_time()
            r = simulate(w, DEFAULT_FLEET, ShortestQueue(), config=SimConfig(engine=engine))
            best[engine] = min(best[engine], time.perf_counter() - t0)
            cpu[engine] = min(cpu[engine], time.process_time() - c0)
            results[engine] = r
        c0 = time.process_time()
        best["loop"] = min(best["loop"], _run_loop_only(w))
        cpu["loop"] = min(cpu["loop"], time.process_time() - c0)
    if not _identical(results["event"], results["stepwise"]):
        raise SystemExit("event-driven and stepwise runs differ: the benchmark is void")
    return {
        "load": load,
        "requests": len(w),
        "simulated_s": duration_s,
        "event_s": round(best["event"], 4),
        "stepwise_s": round(best["stepwise"], 4),
        "sim_requests_per_s": round(len(w) / best["event"], 1),
        "stepwise_requests_per_s": round(len(w) / best["stepwise"], 1),
        "speedup_vs_stepwise": round(best["stepwise"] / best["event"], 2),
        "run_loop_s": round(best["loop"], 4),
        "max_speedup": round(best["stepwise"] / best["loop"], 2),
        "engine_speedup_vs_stepwise": _engine_ratio(best),
        "cpu_speedup_vs_stepwise": round(cpu["stepwise"] / cpu["event"], 2),
        "cpu_engine_speedup_vs_stepwise": _engine_ratio(cpu),
        "identical": True,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    ap.add_argument("--duration", type=float, default=600.0, help="simulated seconds (600)")
    ap.add_argument("--load", type=float, default=0.5, help="offered load, share of capacity")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--only",
        choices=("event", "stepwise", "loop"),
        help="run only this engine (loop: the run loop alone), --repeats times at --load, and "
        "print nothing else: for counting instructions under valgrind, where the machine's load "
        "does not show (the difference between --repeats 2 and 1 is one run)",
    )
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.load <= 0 or args.repeats < 1:
        ap.error("--duration, --load and --repeats must be positive")
    if args.only:
        w = synthetic_at_load(DEFAULT_FLEET, args.load, duration_s=args.duration, seed=args.seed)
        for _ in range(args.repeats):
            if args.only == "loop":
                _run_loop_only(w)
            else:
                simulate(w, DEFAULT_FLEET, ShortestQueue(), config=SimConfig(engine=args.only))
        return 0

    main_fig = measure(args.load, args.duration, args.repeats, args.seed)
    high = measure(0.85, args.duration, args.repeats, args.seed)
    out = {
        "sim_requests_per_s": main_fig["sim_requests_per_s"],
        "speedup_vs_stepwise": main_fig["speedup_vs_stepwise"],
        "default_load": main_fig,
        "high_load": high,
        "fleet": [s.name + ":" + s.gpu for s in DEFAULT_FLEET],
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for fig in (main_fig, high):
        print(
            f"load {fig['load']:.2f}: {fig['requests']:,} requests over {fig['simulated_s']:g} s "
            f"simulated; event-driven {fig['event_s']:.3f} s ({fig['sim_requests_per_s']:,.0f} "
            f"requests/s), stepwise {fig['stepwise_s']:.3f} s: {fig['speedup_vs_stepwise']:.1f}x "
            f"(identical per-request results); run loop alone {fig['run_loop_s']:.3f} s: at most "
            f"{fig['max_speedup']:.1f}x with an engine costing nothing; engines alone "
            f"(each run less the run loop): {_fmt(fig['engine_speedup_vs_stepwise'])}; on CPU "
            f"time (the process's, what a shared machine's load disturbs least): "
            f"{fig['cpu_speedup_vs_stepwise']:.1f}x, engines alone "
            f"{_fmt(fig['cpu_engine_speedup_vs_stepwise'])}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"JSON written to {args.json}", file=sys.stderr)
    return 0


def _fmt(ratio: float | None) -> str:
    return "not measurable" if ratio is None else f"{ratio:.1f}x"


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
