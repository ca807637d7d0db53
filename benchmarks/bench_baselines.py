"""Routing-baseline hot path: the time of one `choose` for every policy in `tools.routers`.

    python benchmarks/bench_baselines.py [--json PATH] [--decisions N]

For 4, 8 and 16 backends, each policy routes N requests (each with 16 prefix block hashes drawn
from 64 shared prompts) while the view changes under it as it would in a fleet: in-flight counts
move, a completion arrives every other decision, a scrape per backend every 50 decisions and, for
Prequal, its probes are answered before the next decision. Only `choose` is timed, one call at a
time with `perf_counter_ns` (so each figure includes about 0.1 µs of timer overhead); p50 and p99
are reported with the ratio to round robin's p50 measured in the same run. Absolute figures move
with the machine's load; compare within a run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

from tools.routers.base import (
    BackendProfile,
    Completion,
    EngineMetrics,
    ProbeReply,
    RequestInfo,
)
from tools.routers.registry import POLICIES, make_policy


class _View:
    def __init__(self, n: int) -> None:
        self.now_s = 0.0
        self.backends = [BackendProfile(f"b{i}", 0.001, 0.002) for i in range(n)]
        self.in_flight = [0] * n
        self.pending_probes: list[int] = []

    def last_scrape(self, backend: int) -> EngineMetrics | None:
        return None

    def send_probe(self, backend: int) -> None:
        self.pending_probes.append(backend)


def _quantile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def bench_policy(name: str, n: int, decisions: int, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    view = _View(n)
    policy = make_policy(name, view.backends, seed=seed)
    prompts = [tuple(rng.getrandbits(62) for _ in range(16)) for _ in range(64)]
    requests = [
        RequestInfo(i, 0.0, 1024, "standard", 1000.0, 10000.0, prompts[rng.randrange(64)])
        for i in range(decisions)
    ]
    outstanding: list[tuple[int, int]] = []
    times: list[int] = []
    clock = time.perf_counter_ns
    for i, req in enumerate(requests):
        view.now_s = i * 0.01
        t0 = clock()
        b = policy.choose(req, view)
        times.append(clock() - t0)
        view.in_flight[b] += 1
        outstanding.append((b, i))
        if i % 2 and outstanding:
            done_b, rid = outstanding.pop(rng.randrange(len(outstanding)))
            view.in_flight[done_b] -= 1
            e2e = rng.uniform(200.0, 4000.0)
            status = "ok" if rng.random() > 0.02 else "error"
            policy.on_complete(
                Completion(
                    rid,
                    done_b,
                    view.now_s - e2e / 1000,
                    view.now_s,
                    status,
                    e2e / 4 if status == "ok" else None,
                    e2e,
                    1024,
                    200,
                ),
                view,
            )
        if i % 50 == 0:
            for k in range(n):
                policy.on_scrape(
                    EngineMetrics(
                        k,
                        view.now_s,
                        view.in_flight[k],
                        max(0, view.in_flight[k] - 8),
                        min(1.0, view.in_flight[k] / 32),
                    ),
                    view,
                )
        for k in view.pending_probes:
            policy.on_probe(
                ProbeReply(
                    k, view.now_s, view.now_s + 0.005, view.in_flight[k], rng.uniform(200.0, 4000.0)
                ),
                view,
            )
        view.pending_probes.clear()
    times.sort()
    return {"p50_us": _quantile(times, 0.5), "p99_us": _quantile(times, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--decisions", type=int, default=20_000)
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for n in (4, 8, 16):
        rows = {name: bench_policy(name, n, args.decisions) for name in POLICIES}
        base = rows["round_robin"]["p50_us"]
        for row in rows.values():
            row["p50_vs_round_robin"] = row["p50_us"] / base if base else float("nan")
        results[str(n)] = rows
        print(f"{n} backends: choose p50 / p99 µs (p50 ratio to round robin)")
        for name, row in rows.items():
            print(
                f"  {name:17s} {row['p50_us']:7.2f} / {row['p99_us']:7.2f}"
                f"  ({row['p50_vs_round_robin']:.1f}x)"
            )
    if args.json:
        payload = {"machine": platform.platform(), "decisions": args.decisions, "results": results}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
