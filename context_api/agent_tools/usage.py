"""Backends over a window: how they compare, and what the traffic cost.

Two sources, kept apart because they answer different things: telemetry (every tick of every
backend: latency, errors, request rate) and the stored routing decisions with their outcomes
(SLA violations of the requests routed). Requests served are estimated from telemetry as the
mean request rate times the span covered; decisions may be a sample (the closed loop stores a
few per tick), so both counts are reported and never mixed.
"""

from __future__ import annotations

import math
from typing import Any

from context_api import api_models as m
from context_api import queries as q
from context_api.agent_tools.base import ToolBase, ToolInfo
from context_api.timefmt import ToolError, rnd
from context_api.timefmt import iso_or_unknown as _iso

CRITERIA = {
    "p95_ms_mean": "lowest mean p95 latency",
    "sla_violation_pct": "fewest SLA violations among routed requests",
    "error_rate_mean": "lowest mean error rate",
    "cost_per_request": "cheapest per request",
}


class UsageTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "compare_backends",
            "Compare backends over a window: latency (mean p50 and p95, max p95, share of ticks "
            "over the SLA), errors, load, requests routed to each and their SLA violations, "
            "cost per request; and which is better on each criterion.",
            m.CompareInput,
            m.CompareOut,
            "compare_backends",
        ),
        ToolInfo(
            "cost",
            "What the traffic cost over a window, per backend and in total: requests served "
            "(from telemetry request rates) times cost per request, and the cost of the stored "
            "decisions.",
            m.CostInput,
            m.CostOut,
            "cost",
        ),
    )

    def _usage(self, since: float, until: float) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Per backend: telemetry stats, routed decisions and cost, over [since, until)."""
        stats = q.telemetry_stats(self.store, since, until)
        routed = {r["backend"]: r for r in q.sla_by_backend(self.store, since, until, self.sla_ms)}
        over = q.ticks_over(self.store, since, until, self.sla_ms)
        notes: list[str] = []
        try:
            costs = self._picture(until).costs
        except ToolError:
            costs = {}
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(set(stats) | set(routed)):
            st = stats.get(name) or {}
            r = routed.get(name)
            ticks = int(st.get("ticks") or 0)
            served = None
            if ticks and st.get("load_known") and st.get("rps_mean") is not None:
                span = float(st["last_ts"]) - float(st["first_ts"])
                step = span / (ticks - 1) if ticks > 1 else 0.0
                served = float(st["rps_mean"]) * (span + step)
            bad = (r["over_sla"] + r["no_outcome"]) if r else 0
            unit = costs.get(name)
            out[name] = {
                "backend": name,
                "ticks": ticks,
                "p50_ms_mean": rnd(st.get("p50_mean")),
                "p95_ms_mean": rnd(st.get("p95_mean")),
                "p95_ms_max": rnd(st.get("p95_max")),
                "ticks_over_sla_pct": rnd(100.0 * over.get(name, 0) / ticks, 1) if ticks else None,
                "error_rate_mean": rnd(st.get("err_mean"), 4),
                "error_rate_max": rnd(st.get("err_max"), 4),
                "rps_mean": rnd(st.get("rps_mean"), 2),
                "requests_served_est": None if served is None else round(served),
                "decisions_stored": int(r["n"]) if r else 0,
                "sla_violations": bad,
                "sla_violation_pct": rnd(100.0 * bad / r["n"], 2) if r and r["n"] else None,
                "outcome_latency_ms_mean": rnd(r["mean_latency_ms"]) if r else None,
                "cost_per_request": unit,
                "cost_usd_est": None if served is None or unit is None else round(served * unit, 4),
                "stored_decisions_cost_usd": round(int(r["n"]) * unit, 4)
                if r and unit is not None
                else None,
            }
        if any(v["cost_per_request"] is None for v in out.values()):
            notes.append("costs per request are unknown for some backends (none configured)")
        if any(v["requests_served_est"] is None for v in out.values() if v["ticks"]):
            notes.append("request rates are unknown for some backends (their telemetry has none)")
        return out, notes

    def compare_backends(self, params: m.CompareInput | None = None) -> m.CompareOut:
        params = params or m.CompareInput()
        for name in params.backends or []:
            self._check_backend(name)
        since, until = self._window(params.since, params.until, 60.0, params.around)
        usage, notes = self._usage(since, until)
        names = params.backends or sorted(usage)
        rows = [usage.get(n) or {"backend": n, "ticks": 0} for n in names]
        for r in rows:
            if not r.get("ticks"):
                notes.append(f"{r['backend']} has no telemetry in the window")
        best: dict[str, str | None] = {}
        for key in CRITERIA:
            values = [(r[key], r["backend"]) for r in rows if r.get(key) is not None]
            if len(values) < 2:
                best[key] = None
                continue
            values.sort()
            best[key] = None if math.isclose(values[0][0], values[1][0]) else values[0][1]
        return m.CompareOut(
            since=_iso(since),
            until=_iso(until),
            sla_ms=self.sla_ms,
            backends=rows,
            best=best,
            notes=notes,
        )

    def cost(self, params: m.CostInput | None = None) -> m.CostOut:
        params = params or m.CostInput()
        for name in params.backends or []:
            self._check_backend(name)
        since, until = self._window(params.since, params.until, 60.0)
        usage, notes = self._usage(since, until)
        rows = [
            {
                k: v[k]
                for k in (
                    "backend",
                    "requests_served_est",
                    "cost_per_request",
                    "cost_usd_est",
                    "decisions_stored",
                    "stored_decisions_cost_usd",
                )
            }
            for name, v in usage.items()
            if not params.backends or name in params.backends
        ]

        def total(key: str) -> float | None:
            values = [r[key] for r in rows]
            return None if not values or None in values else round(sum(values), 4)

        served = sum(r["requests_served_est"] or 0 for r in rows)
        stored = sum(r["decisions_stored"] for r in rows)
        if served and stored and stored < 0.9 * served:
            notes.append(
                f"only {stored:,} of about {served:,} requests have a stored decision (a sample):"
                " the estimate from request rates is the cost of the traffic"
            )
        return m.CostOut(
            since=_iso(since),
            until=_iso(until),
            backends=rows,
            total_usd=total("cost_usd_est"),
            stored_decisions_usd=total("stored_decisions_cost_usd"),
            notes=notes,
        )
