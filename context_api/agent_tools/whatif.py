"""What if a backend were drained, or failed, now: the request-level simulator run forward from
the fleet's current state.

The fleet is the store's backends as engines (`tools.sim.spec.EngineSpec`): the specs a run
recorded in its parameters (`fleet_specs`), else the simulator's default fleet when the stored
backends are exactly its names; otherwise the fleet's hardware is unknown and the tool says so.
Demand is the fleet's mean request rate over the last two minutes of telemetry, held steady,
with the reference token mix (the Azure conversation trace's). Both arms replay the same
requests (common random numbers), routed by the same policy, for one warm-up minute and then
`minutes` more; only requests that arrive after the warm-up are scored. "Drain" takes the backend
out of the fleet; "fail" makes it hang (every request times out) from the end of the warm-up, as
a backend failure does, while the router keeps it until it learns otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from context_api import api_models as m
from context_api import queries as q
from context_api.agent_tools.base import ToolBase, ToolInfo
from context_api.timefmt import ToolError, iso, rnd

WARMUP_S = 60.0
DEMAND_WINDOW_S = 120.0
POLICY = "predictive"
"""The routing policy both arms run: the per-request predictive router
(`tools.routers.predictive`), with its shipped latency model."""
SEED = 0


class WhatIfTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "what_if",
            "What would happen if a backend were drained (taken out of rotation) or failed "
            "(hung) now: the request-level simulator run forward from the current demand on "
            "the fleet, against the same requests with the fleet as it is. Per backend and "
            "overall: SLO misses, time to first token, errors and cost.",
            m.WhatIfInput,
            m.WhatIfOut,
            "what_if",
        ),
    )

    def _fleet_specs(self, names: list[str]) -> tuple[Any, str]:
        from tools.sim.spec import DEFAULT_FLEET, EngineSpec

        for run in self.store.list_runs(limit=20):
            specs = (run.params or {}).get("fleet_specs")
            if isinstance(specs, list) and specs:
                try:
                    fleet = tuple(EngineSpec.model_validate(s) for s in specs)
                except ValueError:
                    continue
                if {s.name for s in fleet} >= set(names):
                    return tuple(s for s in fleet if s.name in names), f"run {run.run_id}"
        known = {s.name: s for s in DEFAULT_FLEET}
        if set(names) == set(known):
            return tuple(known[n] for n in names), "the simulator's default fleet (same names)"
        raise ToolError(
            "cannot simulate this fleet: its engines (GPU class, KV cache, prices) are not "
            f"recorded, and its backends ({', '.join(names)}) are not the simulator's default "
            "fleet; a what-if needs them"
        )

    def what_if(self, params: m.WhatIfInput) -> m.WhatIfOut:
        from tools.routers.registry import make_policy
        from tools.sim.chaos import ChaosEvent, compile_plan
        from tools.sim.metrics import violations
        from tools.sim.run import profiles, simulate
        from tools.sim.workload import synthetic

        self._check_backend(params.backend)
        now = self.now()
        names = self.backends_known()
        fleet, source = self._fleet_specs(names)
        stats = q.telemetry_stats(self.store, now - DEMAND_WINDOW_S, now + 1e-6)
        demand = sum(float(s["rps_mean"] or 0.0) for s in stats.values() if s.get("load_known"))
        if demand <= 0:
            raise ToolError("no request rate in the last two minutes of telemetry: nothing to run")
        horizon = params.minutes * 60.0
        workload = synthetic(
            duration_s=WARMUP_S + horizon,
            mean_rps=demand,
            seed=SEED,
            diurnal_amplitude=0.0,
            burst_rate_per_hour=0.0,
        )
        base_fleet = fleet
        if params.action == "drain":
            scen_fleet = tuple(s for s in fleet if s.name != params.backend)
            plan = None
            if not scen_fleet:
                raise ToolError(f"{params.backend} is the only backend: draining it leaves none")
        else:
            scen_fleet = fleet
            event = ChaosEvent(
                kind="backend_failure",
                start_s=WARMUP_S,
                duration_s=horizon,
                backend=params.backend,
            )
            plan = compile_plan([event], [s.name for s in fleet], WARMUP_S + horizon, SEED)
        base = simulate(workload, base_fleet, make_policy(POLICY, profiles(base_fleet), SEED))
        scen = simulate(
            workload, scen_fleet, make_policy(POLICY, profiles(scen_fleet), SEED), plan=plan
        )
        b, s = _scored(base, violations), _scored(scen, violations)
        rows = []
        for name in names:
            rows.append(
                {
                    "backend": name,
                    "baseline_rps": rnd(b["rps"].get(name, 0.0), 2),
                    "scenario_rps": rnd(s["rps"].get(name, 0.0), 2),
                    "baseline_violation_pct": b["by_backend"].get(name),
                    "scenario_violation_pct": s["by_backend"].get(name),
                    "baseline_p95_ms": b["ttft_p95"].get(name),
                    "scenario_p95_ms": s["ttft_p95"].get(name),
                }
            )
        verb = "drained" if params.action == "drain" else "failed (hung)"
        summary = (
            f"If {params.backend} were {verb} at {iso(now)}, over the next {params.minutes:g} "
            f"minutes at the current {demand:.1f} req/s: SLO misses {b['violation_pct']}% -> "
            f"{s['violation_pct']}% of requests, errors {b['error_pct']}% -> {s['error_pct']}%, "
            f"p95 time to first token of the answered requests {b['p95_ms']} -> {s['p95_ms']} ms"
        )
        return m.WhatIfOut(
            now=iso(now) or "unknown",
            action=params.action,
            backend=params.backend,
            minutes=params.minutes,
            demand_rps=round(demand, 2),
            policy=POLICY,
            summary=summary,
            overall={
                "baseline": {k: b[k] for k in _OVERALL},
                "scenario": {k: s[k] for k in _OVERALL},
            },
            backends=rows,
            notes=[
                f"engines from {source}; engines start empty and the first "
                f"{WARMUP_S:g} s are a warm-up, not scored",
                f"demand held at the last two minutes' mean; reference token mix; routed by the "
                f"{POLICY} router with its shipped latency model",
                f"one seeded run per arm on the same {len(workload):,} requests",
            ],
        )


_OVERALL = ("requests", "violation_pct", "p95_ms", "error_pct", "cost_per_request")


def _scored(result: Any, violations: Any) -> dict[str, Any]:
    from tools.sim.engine import OK

    keep = result.arrival_s >= WARMUP_S
    bad = violations(result)[keep]
    backend = result.backend[keep]
    ttft = result.ttft_ms[keep]
    span = max(result.duration_s - WARMUP_S, 1e-9)
    names = list(result.backends)

    def p95(x: np.ndarray) -> float | None:
        x = x[~np.isnan(x)]
        return round(float(np.percentile(x, 95)), 1) if x.size else None

    by_backend, rps, ttft95 = {}, {}, {}
    for i, name in enumerate(names):
        mine = backend == i
        rps[name] = float(mine.sum()) / span
        by_backend[name] = round(100.0 * float(bad[mine].mean()), 2) if mine.any() else None
        ttft95[name] = p95(ttft[mine])
    n = int(keep.sum())
    return {
        "requests": n,
        "violation_pct": round(100.0 * float(bad.mean()), 2) if n else None,
        "p95_ms": p95(ttft),
        "error_pct": round(100.0 * float((result.status[keep] != OK).mean()), 2) if n else None,
        "cost_per_request": round(float(result.cost[keep].mean()), 6) if n else None,
        "by_backend": by_backend,
        "rps": rps,
        "ttft_p95": ttft95,
    }
