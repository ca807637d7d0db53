"""The fleet now and next: state, one backend in depth, forecasts, capacity risk and which
backend a request should use."""

from __future__ import annotations

import math
import statistics

import numpy as np

from context_api import api_models as m
from context_api import explain as ex
from context_api import queries as q
from context_api.agent_tools.base import (
    CLEAR_P,
    EJECT_ERROR_RATE,
    RECENT_MINUTES,
    ToolBase,
    ToolInfo,
    level,
    p_over,
)
from context_api.timefmt import ToolError, iso, rnd
from context_api.timefmt import iso_or_unknown as _iso


class FleetTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "fleet_state",
            "Every backend now: status (ok, degraded, failing, ejected), p50/p95 latency, "
            "load, error rate, utilisation, traffic share, 5-minute forecast with interval "
            "and SLA-breach probability; recent SLA violations, escalations, active alerts.",
            m.AtInput,
            m.FleetStateOut,
            "fleet_state",
        ),
        ToolInfo(
            "backend_detail",
            "One backend in depth: its state, latency and error trend over a window, SLA "
            "violations of requests sent to it, and its anomalies, drift reports, alerts "
            "and chaos/incident events.",
            m.BackendInput,
            m.BackendDetailOut,
            "backend_detail",
        ),
        ToolInfo(
            "forecasts",
            "Each backend's p95 latency forecast 5 minutes ahead with its 90% interval and "
            "the probability of ending above the tier's SLA.",
            m.ForecastsInput,
            m.ForecastsOut,
            "forecasts",
        ),
        ToolInfo(
            "capacity_risk",
            "Which backends are forecast past their SLA or their capacity in the next N "
            "minutes, and how likely (interval read as Gaussian; load trend vs capacity).",
            m.CapacityRiskInput,
            m.CapacityRiskOut,
            "capacity_risk",
        ),
        ToolInfo(
            "recommend_backend",
            "Which backend a request of a tier should use right now: the cheapest backend "
            "confidently within the SLA (breach probability < 0.25), else the least likely "
            "to breach; never an ejected one. Alternatives and exclusions with reasons.",
            m.RecommendInput,
            m.RecommendOut,
            "recommend_backend",
        ),
    )

    def fleet_state(self, params: m.AtInput | None = None) -> m.FleetStateOut:
        params = params or m.AtInput()
        pic = self._picture(params.at)
        sla = self.sla_ms
        states = [self._backend_state(pic, n, sla) for n in sorted(pic.points)]
        recent = self._recent(pic.now, RECENT_MINUTES)
        alerts = self.store.list_alerts(since=pic.now - 3600.0, include_suppressed=False, limit=10)
        return m.FleetStateOut(
            now=_iso(pic.now),
            now_ts=pic.now,
            sla_ms=sla,
            backends=states,
            model_version=pic.model_version,
            forecast_source=pic.source,
            total_rps=round(sum(p.rps for p in pic.points.values()), 2),
            healthy=[s.backend for s in states if s.status == "ok"],
            recent_window_minutes=RECENT_MINUTES,
            recent_requests=recent["requests"],
            recent_sla_violation_pct=recent["violation_pct"],
            recent_escalated=recent["escalated"],
            active_alerts=[
                {
                    "at": iso(a.created_at),
                    "kind": a.kind,
                    "subject": a.subject,
                    "severity": a.severity,
                    "recommended_action": a.recommended_action,
                }
                for a in alerts
                if a.created_at <= pic.now
            ],
            notes=pic.notes,
        )

    def backend_detail(self, params: m.BackendInput) -> m.BackendDetailOut:
        self._check_backend(params.backend)
        pic = self._picture(params.at)
        name = params.backend
        if name not in pic.points:
            raise ToolError(f"no telemetry from {name} at or before {_iso(pic.now)}")
        since = pic.now - params.window_minutes * 60.0
        pts = q.telemetry_window(self.store, name, since, pic.now)
        p95 = [p.p95_ms for p in pts]
        slope = None
        if len(pts) >= 3:
            t = np.array([(p.ts - pts[0].ts) / 60.0 for p in pts])
            slope = float(np.polyfit(t, np.array(p95), 1)[0])
        per_backend = {
            r["backend"]: r
            for r in q.sla_by_backend(self.store, since, pic.now + 1e-6, self.sla_ms)
        }
        mine = per_backend.get(name)
        requests = int(mine["n"]) if mine else 0
        viol = (
            (100.0 * (mine["over_sla"] + mine["no_outcome"]) / mine["n"])
            if mine and mine["n"]
            else None
        )
        anomalies = self.store.list_anomalies(
            since=since, until=pic.now + 1e-6, backend=name, limit=20
        )
        drift = self.store.list_drift_reports(
            since=since - 3600.0, until=pic.now + 1e-6, backend=name, limit=10
        )
        alerts = self.store.list_alerts(
            since=since - 3600.0, subject=name, include_suppressed=False, limit=10
        )
        events = [
            e
            for e in self.store.list_events(since=since - 6 * 3600.0, until=pic.now + 1e-6)
            if e.subject == name and ex.event_end(e) >= since
        ]
        return m.BackendDetailOut(
            now=_iso(pic.now),
            state=self._backend_state(pic, name, self.sla_ms),
            window_minutes=params.window_minutes,
            p95_ms_min=rnd(min(p95)) if p95 else None,
            p95_ms_mean=rnd(statistics.fmean(p95)) if p95 else None,
            p95_ms_max=rnd(max(p95)) if p95 else None,
            p95_slope_ms_per_min=rnd(slope, 2),
            error_rate_max=rnd(max(p.error_rate for p in pts), 4) if pts else None,
            rps_mean=rnd(statistics.fmean(p.rps for p in pts), 2) if pts else None,
            requests=requests,
            sla_violation_pct=rnd(viol, 2),
            anomalies=[
                {"at": iso(a.ts), "severity": round(a.severity, 3), "detector": a.detector}
                for a in anomalies
            ],
            drift_reports=[ex.drift_dict(d) for d in drift],
            alerts=[
                {
                    "at": iso(a.created_at),
                    "kind": a.kind,
                    "severity": a.severity,
                    "recommended_action": a.recommended_action,
                }
                for a in alerts
                if a.created_at <= pic.now
            ],
            events=[ex.event_dict(e) for e in events],
        )

    def forecasts(self, params: m.ForecastsInput | None = None) -> m.ForecastsOut:
        params = params or m.ForecastsInput()
        tier, sla = self._sla_for(params.tier)
        pic = self._picture(params.at, tier)
        return m.ForecastsOut(
            now=_iso(pic.now),
            sla_ms=sla,
            tier=tier,
            horizon_minutes=5.0,
            model_version=pic.model_version,
            source=pic.source,
            forecasts=[self._forecast(pic, n, sla) for n in sorted(pic.points)],
            notes=pic.notes,
        )

    def capacity_risk(self, params: m.CapacityRiskInput | None = None) -> m.CapacityRiskOut:
        params = params or m.CapacityRiskInput()
        sla = params.sla_ms or self.sla_ms
        pic = self._picture(params.at)
        minutes = params.minutes
        notes = list(pic.notes)
        frac = min(minutes, 5.0) / 5.0
        if minutes > 5.0:
            notes.append(
                f"the forecaster looks 5 minutes ahead; its 5-minute forecast stands in for "
                f"{minutes:g} minutes"
            )
        # The router decides each backend's load; what it cannot decide is the fleet's demand.
        # Project the demand's trend and keep the current split: a backend's projected load is
        # its share of the projected demand.
        total_now = sum(p.rps for p in pic.points.values() if p.load_known)
        slope, resid_sd = self._demand_trend(pic.now)
        ticks = minutes * 60.0 / 10.0
        total_proj = max(0.0, total_now + slope * ticks)
        total_sd = resid_sd * math.sqrt(1.0 + ticks / 30.0)
        if abs(slope) > 0 and total_now > 0:
            notes.append(
                f"demand {total_now:.1f} rps now, trend {slope * 6:+.2f} rps/min, projected "
                f"{total_proj:.1f} rps in {minutes:g} min if the split stays as it is"
            )
        risks: list[m.Risk] = []
        unknown: list[str] = []
        fleet_cap = 0.0
        cap_known = True
        for name in sorted(pic.points):
            p = pic.points[name]
            if pic.ejected.get(name) or p.error_rate >= EJECT_ERROR_RATE:
                risks.append(
                    m.Risk(
                        backend=name,
                        kind="unavailable",
                        probability=1.0,
                        level="high",
                        detail=(
                            f"{'ejected' if pic.ejected.get(name) else 'failing'}: error rate "
                            f"{p.error_rate:.0%}; its traffic must be carried by the others"
                        ),
                        figures={"error_rate": rnd(p.error_rate, 4)},
                    )
                )
                continue
            mean, lo, hi = pic.forecasts.get(name, (None, None, None))
            if mean is None or lo is None or hi is None:
                unknown.append(name)
            if mean is not None and lo is not None and hi is not None:
                # Shorter looks interpolate from the current p95 to the 5-minute forecast.
                now95 = p.p95_ms
                mu, lo_n, hi_n = (now95 + (v - now95) * frac for v in (mean, lo, hi))
                prob = p_over(mu, lo_n, hi_n, sla) or 0.0
                if prob >= 0.05:
                    risks.append(
                        m.Risk(
                            backend=name,
                            kind="sla",
                            probability=round(prob, 3),
                            level=level(prob),  # type: ignore[arg-type]
                            detail=(
                                f"p95 forecast {mu:.0f} ms (90% interval {lo_n:.0f}-{hi_n:.0f} "
                                f"ms) in {minutes:g} min against the {sla:.0f} ms SLA; now "
                                f"{now95:.0f} ms"
                            ),
                            figures={
                                "p95_now_ms": rnd(now95),
                                "forecast_ms": rnd(mu),
                                "lo_ms": rnd(lo_n),
                                "hi_ms": rnd(hi_n),
                                "sla_ms": sla,
                            },
                        )
                    )
            cap = pic.capacities.get(name)
            if cap is None or not p.load_known:
                cap_known = False
                continue
            fleet_cap += cap
            share = p.rps / total_now if total_now > 0 else 0.0
            proj = share * total_proj
            limit = params.capacity_threshold * cap
            sd = max(share * total_sd, 0.02 * cap)
            prob = 0.5 * math.erfc(-((proj - limit) / sd) / math.sqrt(2.0))
            if prob >= 0.05:
                risks.append(
                    m.Risk(
                        backend=name,
                        kind="capacity",
                        probability=round(prob, 3),
                        level=level(prob),  # type: ignore[arg-type]
                        detail=(
                            f"load {p.rps:.1f} rps now, {proj:.1f} rps projected in {minutes:g} "
                            f"min against {limit:.1f} rps ({params.capacity_threshold:.0%} of "
                            f"its {cap:g} rps capacity)"
                        ),
                        figures={
                            "rps_now": rnd(p.rps, 2),
                            "rps_projected": rnd(proj, 2),
                            "capacity_rps": cap,
                            "utilisation_now": rnd(p.rps / cap, 3),
                            "utilisation_projected": rnd(proj / cap, 3),
                        },
                    )
                )
        risks.sort(key=lambda r: (-r.probability, r.backend, r.kind))
        flagged = {r.backend for r in risks}
        return m.CapacityRiskOut(
            now=_iso(pic.now),
            minutes=minutes,
            sla_ms=sla,
            risks=risks,
            no_risk=[n for n in sorted(pic.points) if n not in flagged and n not in unknown],
            unknown=unknown,
            fleet_capacity_rps=round(fleet_cap, 2) if cap_known and fleet_cap else None,
            fleet_load_rps=round(total_now, 2),
            projected_load_rps=round(total_proj, 2),
            notes=notes,
        )

    def _demand_trend(self, now: float) -> tuple[float, float]:
        """(fleet rps slope per tick, residual sd) over the last 5 minutes of telemetry."""
        rows = q.rows(
            self.store,
            "SELECT ts, SUM(rps) AS rps FROM telemetry WHERE ts > ? AND ts <= ? AND load_known = 1"
            " GROUP BY ts ORDER BY ts",
            (now - 300.0, now),
        )
        if len(rows) < 4:
            return 0.0, 0.0
        t = np.array([(r["ts"] - now) / 10.0 for r in rows])
        y = np.array([r["rps"] for r in rows])
        slope, intercept = np.polyfit(t, y, 1)
        resid = y - (slope * t + intercept)
        return float(slope), float(np.std(resid, ddof=2))

    def recommend_backend(self, params: m.RecommendInput | None = None) -> m.RecommendOut:
        params = params or m.RecommendInput()
        tier, sla = self._sla_for(params.tier, params.sla_ms)
        pic = self._picture(params.at, tier)
        recs: list[m.Recommendation] = []
        excluded: dict[str, str] = {}
        for name in sorted(pic.points):
            p = pic.points[name]
            if pic.ejected.get(name):
                excluded[name] = f"ejected by the router (error rate {p.error_rate:.0%})"
                continue
            if p.error_rate >= EJECT_ERROR_RATE:
                excluded[name] = f"failing (error rate {p.error_rate:.0%})"
                continue
            fc = self._forecast(pic, name, sla)
            recs.append(
                m.Recommendation(
                    backend=name,
                    forecast_ms=fc.forecast_ms,
                    lo_ms=fc.lo_ms,
                    hi_ms=fc.hi_ms,
                    p_over_sla=fc.p_over_sla,
                    p95_now_ms=rnd(p.p95_ms),
                    cost_per_request=pic.costs.get(name),
                    policy_share=rnd(pic.shares.get(name), 3),
                )
            )
        if not recs:
            return m.RecommendOut(
                now=_iso(pic.now),
                tier=tier,
                sla_ms=sla,
                recommended=None,
                confident=False,
                basis="none",
                alternatives=[],
                excluded=excluded,
                unknown=[],
                rationale="every backend is ejected or failing: no safe choice exists",
                model_version=pic.model_version,
            )
        best, confident, basis, rationale = _choose(recs, sla)
        unknown = [r.backend for r in recs if r.forecast_ms is None]
        others = sorted(
            (r for r in recs if best is None or r.backend != best.backend),
            key=lambda r: (r.p_over_sla if r.p_over_sla is not None else 2.0, _cost(r), r.backend),
        )
        return m.RecommendOut(
            now=_iso(pic.now),
            tier=tier,
            sla_ms=sla,
            recommended=best,
            confident=confident,
            basis=basis,
            alternatives=others,
            excluded=excluded,
            unknown=unknown,
            rationale=rationale,
            model_version=pic.model_version,
        )


def _cost(r: m.Recommendation) -> float:
    return r.cost_per_request if r.cost_per_request is not None else math.inf


def _choose(
    recs: list[m.Recommendation], sla: float
) -> tuple[m.Recommendation | None, bool, str, str]:
    """(recommended, confident, basis, rationale) among usable backends.

    Never a backend forecast over the SLA while another is forecast within it; a backend with no
    forecast is unknown, never treated as safe. Among those forecast within the SLA: the cheapest
    confidently within (breach probability under CLEAR_P), else the lowest forecast among the
    least likely to breach. With no forecast at all, the latest measured p95 is the only
    evidence, and the answer says so.
    """
    known = [r for r in recs if r.forecast_ms is not None and r.p_over_sla is not None]
    within = [r for r in known if (r.forecast_ms or 0.0) <= sla]
    if within:
        clear = [r for r in within if (r.p_over_sla or 0.0) < CLEAR_P]
        if clear:
            best = min(clear, key=lambda r: (_cost(r), r.p_over_sla, r.backend))
            return (
                best,
                True,
                "forecast",
                f"{best.backend} is the cheapest backend confidently within the {sla:.0f} ms "
                f"SLA: forecast {best.forecast_ms:.0f} ms (90% interval {best.lo_ms:.0f}-"
                f"{best.hi_ms:.0f} ms), {best.p_over_sla:.0%} chance of ending over it",
            )
        # Wide intervals make breach probabilities similar: among the backends within 0.1 of
        # the least likely to breach, take the lowest forecast.
        floor = min(r.p_over_sla or 0.0 for r in within)
        near = [r for r in within if (r.p_over_sla or 0.0) <= floor + 0.1]
        best = min(near, key=lambda r: (r.forecast_ms or math.inf, _cost(r), r.backend))
        return (
            best,
            False,
            "forecast",
            f"{best.backend} is forecast within the {sla:.0f} ms SLA ({best.forecast_ms:.0f} ms) "
            f"but not confidently: {best.p_over_sla:.0%} chance of ending over it",
        )
    if known:
        best = min(known, key=lambda r: (r.forecast_ms or math.inf, _cost(r), r.backend))
        return (
            best,
            False,
            "forecast",
            f"no backend is forecast within the {sla:.0f} ms SLA; {best.backend} is forecast "
            f"closest ({best.forecast_ms:.0f} ms, {best.p_over_sla:.0%} chance of ending over "
            "it): expect SLA misses wherever the request goes",
        )
    measured = [r for r in recs if r.p95_now_ms is not None and r.p95_now_ms <= sla]
    if measured:
        best = min(measured, key=lambda r: (_cost(r), r.p95_now_ms, r.backend))
        return (
            best,
            False,
            "measured_p95",
            f"no forecast is available, so this rests on the latest measured p95 alone: "
            f"{best.backend} is the cheapest backend whose p95 ({best.p95_now_ms:.0f} ms) is "
            f"within the {sla:.0f} ms SLA; where latency goes next is unknown",
        )
    return (
        None,
        False,
        "none",
        f"no forecast is available and no backend's latest measured p95 is within the "
        f"{sla:.0f} ms SLA: no backend can be recommended",
    )
