"""The ContextAPI: the one typed gateway through which agents read (and, within policy, change)
Arcpoint's state. Each public method is also a tool: a name, a description and the JSON schema
of its pydantic input (`ContextAPI.tools()`); `ContextAPI.call(name, args)` validates, runs,
and turns any failure into an error result, so a tool problem reaches the model as data it can
react to, never as an exception through the graph.

`context_api` cannot import `agents`: the specs here are plain (`ToolDef`), and the agents wrap
them into their own `ToolSpec`s.

Where the numbers come from:
- "now" is the newest telemetry in the database unless a time is given;
- forecasts come from a live forecaster when one is given (features from the stored telemetry),
  otherwise from the router's own cached forecasts: the candidates stored with the newest
  decision (what the router actually acted on);
- breach probabilities read the forecast interval as Gaussian, its half-width being 1.645 sigma
  (the nominal 90% interval), exactly as the routing policy does.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from context_api import api_models as m
from context_api import explain as ex
from context_api import queries as q
from context_api.store import DriftReport as StoredDriftReport
from context_api.store import Store
from context_api.timefmt import ToolError, iso, num, parse_time, rnd
from context_api.timefmt import iso_or_unknown as _iso
from tools.drift import concept_drift
from tools.drift.page_hinkley import PageHinkley
from tools.routing import DEFAULT_SLA_MS, TIERS, BackendInfo

Z90 = 1.6448536269514722
RECENT_MINUTES = 15.0
STALE_AFTER_S = 60.0
WARN_ERROR_RATE = 0.05
EJECT_ERROR_RATE = 0.5
CLEAR_P = 0.25
"""A backend is confidently within the SLA below this breach probability (as in the policy)."""

EMPTY_HINT = (
    "The database holds no telemetry yet. Run `arcpoint demo` to simulate a fleet and fill it, "
    "or `arcpoint ingest FILE` to load real telemetry, then ask again."
)


class EmptyStoreError(ToolError):
    def __init__(self) -> None:
        super().__init__(EMPTY_HINT)


@dataclass(frozen=True)
class ToolDef:
    """A context-API method as a tool. `writes` marks the few that change state."""

    name: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    method: Callable[[Any], BaseModel]
    writes: bool = False

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_model.model_json_schema(),
        }


class ToolOutcome(BaseModel):
    ok: bool
    content: dict[str, Any] | None = None
    error: str | None = None


# --- small helpers -----------------------------------------------------------------------------


def p_over(mean: float | None, lo: float | None, hi: float | None, sla: float) -> float | None:
    """P(p95 > sla), the interval read as Gaussian with half-width 1.645 sigma (as the policy)."""
    if mean is None or lo is None or hi is None:
        return None
    sigma = max((hi - lo) / (2.0 * Z90), 1e-6)
    return 0.5 * math.erfc(-((mean - sla) / sigma) / math.sqrt(2.0))


def _level(p: float) -> str:
    return "high" if p >= 0.5 else "medium" if p >= 0.2 else "low"


def _default_fleet_info(names: Sequence[str]) -> dict[str, BackendInfo]:
    """Costs and capacities of the simulator's default fleet (what `arcpoint demo` runs), used
    only when the stored backends are exactly that fleet."""
    from tools.fleet import DEFAULT_FLEET

    known = {s.name: s for s in DEFAULT_FLEET}
    if set(names) != set(known):
        return {}
    return {n: BackendInfo(n, known[n].cost_per_request, known[n].capacity_rps) for n in names}


@dataclass
class _Picture:
    """The fleet at one moment: telemetry, forecasts, ejections, shares."""

    now: float
    points: dict[str, Any]
    forecasts: dict[str, tuple[float | None, float | None, float | None]]
    ejected: dict[str, bool]
    shares: dict[str, float]
    costs: dict[str, float | None]
    capacities: dict[str, float | None]
    source: str
    model_version: str | None
    notes: list[str]


# --- the API -----------------------------------------------------------------------------------


class ContextAPI:
    """Typed, read-mostly access to the store for agents and operators. See the module docstring.

    `backends` gives costs and capacities when known (else they are read from stored decisions,
    or from the simulator's default fleet when the stored backends are exactly it);
    `forecaster` (a `tools.forecaster.Forecaster`) forecasts from stored telemetry instead of
    reading the router's cached forecasts.
    """

    def __init__(
        self,
        store: Store,
        *,
        backends: Sequence[BackendInfo] | None = None,
        forecaster: Any = None,
        sla_ms: float = DEFAULT_SLA_MS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(sla_ms) and sla_ms > 0):
            raise ValueError("sla_ms must be finite and > 0")
        self.store = store
        self.forecaster = forecaster
        self.sla_ms = float(sla_ms)
        self._clock = clock
        self._backends = {b.name: b for b in backends} if backends else None
        self._tools = self._registry()

    # -- tools -------------------------------------------------------------------------------

    def _registry(self) -> dict[str, ToolDef]:
        defs = [
            ToolDef(
                "fleet_state",
                "Every backend now: status (ok, degraded, failing, ejected), p50/p95 latency, "
                "load, error rate, utilisation, traffic share, 5-minute forecast with interval "
                "and SLA-breach probability; recent SLA violations, escalations, active alerts.",
                m.AtInput,
                m.FleetStateOut,
                self.fleet_state,
            ),
            ToolDef(
                "backend_detail",
                "One backend in depth: its state, latency and error trend over a window, SLA "
                "violations of requests sent to it, and its anomalies, drift reports, alerts "
                "and chaos/incident events.",
                m.BackendInput,
                m.BackendDetailOut,
                self.backend_detail,
            ),
            ToolDef(
                "forecasts",
                "Each backend's p95 latency forecast 5 minutes ahead with its 90% interval and "
                "the probability of ending above the tier's SLA.",
                m.ForecastsInput,
                m.ForecastsOut,
                self.forecasts,
            ),
            ToolDef(
                "capacity_risk",
                "Which backends are forecast past their SLA or their capacity in the next N "
                "minutes, and how likely (interval read as Gaussian; load trend vs capacity).",
                m.CapacityRiskInput,
                m.CapacityRiskOut,
                self.capacity_risk,
            ),
            ToolDef(
                "drift_status",
                "Is the forecaster drifting? Concept-drift tests (Welch t, Mann-Whitney U, "
                "Benjamini-Hochberg corrected) on per-tick absolute errors, current window vs "
                "reference, per backend; Page-Hinkley change points; stored drift reports.",
                m.DriftInput,
                m.DriftStatusOut,
                self.drift_status,
            ),
            ToolDef(
                "anomalies",
                "Anomalies the detector stored since a time, with per-backend counts and "
                "the highest severity (0-1).",
                m.AnomaliesInput,
                m.AnomaliesOut,
                self.anomalies,
            ),
            ToolDef(
                "quality_timeline",
                "Service quality over a window: SLA violations per time bucket, when quality "
                "degraded, which backends carried the violations, and in time order the chaos "
                "or incident events, drift, anomalies, alerts and model version changes, with "
                "the events that most likely explain the degradation.",
                m.TimelineInput,
                m.QualityTimelineOut,
                self.quality_timeline,
            ),
            ToolDef(
                "experiments",
                "Champion-vs-challenger experiments: status, a fresh evaluation of running "
                "ones (sample-ratio mismatch, significance with alpha spending, MAE of each "
                "arm, recommendation promote/keep/rollback/continue), stored verdicts.",
                m.ExperimentsInput,
                m.ExperimentsOut,
                self.experiments,
            ),
            ToolDef(
                "recent_alerts",
                "Recent alerts (newest first) with severity, subject, evidence, recommended "
                "action, occurrences and delivery state.",
                m.AlertsInput,
                m.AlertsOut,
                self.recent_alerts,
            ),
            ToolDef(
                "explain_decision",
                "Why a stored routing decision went where it did: its candidates with "
                "forecasts, intervals and breach probabilities, the policy's reason, the "
                "ambiguity and any escalation, and the outcome that arrived later.",
                m.ExplainInput,
                m.ExplainOut,
                self.explain_decision,
            ),
            ToolDef(
                "find_decisions",
                "The newest stored decisions in a window (optionally one backend's, or only "
                "ambiguous ones), with their outcomes: use it to find decision ids.",
                m.FindDecisionsInput,
                m.DecisionsOut,
                self.find_decisions,
            ),
            ToolDef(
                "recommend_backend",
                "Which backend a request of a tier should use right now: the cheapest backend "
                "confidently within the SLA (breach probability < 0.25), else the least likely "
                "to breach; never an ejected one. Alternatives and exclusions with reasons.",
                m.RecommendInput,
                m.RecommendOut,
                self.recommend_backend,
            ),
            ToolDef(
                "model_versions",
                "Model versions of a kind: the active one with its hold-out metrics, all "
                "versions, and the activation/rollback history.",
                m.ModelVersionsInput,
                m.ModelVersionsOut,
                self.model_versions,
            ),
            ToolDef(
                "performance",
                "Forecast accuracy (MAE, RMSE, bias) per model version and backend over a "
                "window, and SLA violations per backend.",
                m.PerformanceInput,
                m.PerformanceOut,
                self.performance,
            ),
            ToolDef(
                "retrain_check",
                "Apply the retraining policy now (drift, recent error vs hold-out, new "
                "samples, cooldown): would a retrain be triggered, and why or why not.",
                m.RetrainCheckInput,
                m.RetrainCheckOut,
                self.retrain_check,
            ),
            ToolDef(
                "request_retrain",
                "Ask for a retrain. Allowed only when the retraining policy triggers one right "
                "now; then records a retrain request event with the training window.",
                m.RequestRetrainInput,
                m.WriteOut,
                self.request_retrain,
                writes=True,
            ),
            ToolDef(
                "record_drift_reports",
                "Run the concept-drift check and store its findings at or above a severity as "
                "drift reports (the drift monitor's record).",
                m.RecordDriftInput,
                m.WriteOut,
                self.record_drift_reports,
                writes=True,
            ),
        ]
        return {d.name: d for d in defs}

    def tools(self, names: Sequence[str] | None = None, *, writes: bool = False) -> list[ToolDef]:
        """Tool definitions, optionally a subset by name; write tools only when asked for."""
        if names is None:
            return [d for d in self._tools.values() if writes or not d.writes]
        unknown = [n for n in names if n not in self._tools]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; known: {sorted(self._tools)}")
        return [self._tools[n] for n in names]

    def call(self, name: str, args: dict[str, Any] | None = None) -> ToolOutcome:
        """Run a tool by name. Never raises: a failure is an error outcome with a message."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolOutcome(
                ok=False, error=f"unknown tool {name!r}; known: {sorted(self._tools)}"
            )
        try:
            params = tool.input_model.model_validate(args or {})
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in err.errors(include_url=False, include_input=False)
            )
            return ToolOutcome(ok=False, error=f"invalid input: {problems}")
        try:
            out = tool.method(params)
        except ToolError as err:
            return ToolOutcome(ok=False, error=str(err))
        except Exception as err:  # a bug or a storage problem: data for the model, not a crash
            return ToolOutcome(ok=False, error=f"{name} failed: {type(err).__name__}: {err}")
        return ToolOutcome(ok=True, content=out.model_dump(mode="json"))

    # -- time and the fleet picture ----------------------------------------------------------

    def now(self, at: float | str | None = None) -> float:
        latest = q.latest_telemetry_ts(self.store)
        if latest is None:
            if at is None:
                raise EmptyStoreError()
            return parse_time(at, self._clock()) or self._clock()
        value = parse_time(at, latest)
        return latest if value is None else value

    def is_empty(self) -> bool:
        return q.latest_telemetry_ts(self.store) is None

    def _window(
        self, since: Any, until: Any, default_minutes: float, around: Any = None
    ) -> tuple[float, float]:
        now = self.now()
        if around is not None:
            center = parse_time(around, now)
            assert center is not None
            return center - 1800.0, center + 1800.0
        end = parse_time(until, now) if until is not None else now
        assert end is not None
        start = parse_time(since, now) if since is not None else end - default_minutes * 60.0
        assert start is not None
        if start >= end:
            raise ToolError(f"the window is empty: since {_iso(start)} is not before {_iso(end)}")
        return start, end

    def _info(self, names: Sequence[str]) -> dict[str, BackendInfo]:
        if self._backends is not None:
            return self._backends
        return _default_fleet_info(names)

    def _picture(self, at: Any = None, tier: str = "standard") -> _Picture:
        now = self.now(at)
        points = q.latest_points(self.store, now)
        if not points:
            raise ToolError(f"no telemetry at or before {_iso(now)}")
        names = sorted(points)
        info = self._info(names)
        notes: list[str] = []
        forecasts: dict[str, tuple[float | None, float | None, float | None]] = {}
        ejected = {n: False for n in names}
        shares: dict[str, float] = {}
        costs: dict[str, float | None] = {
            n: (info[n].cost_per_request if n in info else None) for n in names
        }
        capacities = {n: (info[n].capacity_rps if n in info else None) for n in names}
        active = self.store.active_model_version("forecaster")
        model_version = active.version_id if active else None
        source = "none"

        did = q.latest_decision_id(self.store, now, tier) or q.latest_decision_id(self.store, now)
        if did is not None:
            dts, cands = q.decision_candidates(self.store, did)
            for c in cands:
                name = c.get("backend")
                if name not in ejected:
                    continue
                ejected[name] = bool(c.get("ejected"))
                shares[name] = float(c.get("share") or 0.0)
                if costs.get(name) is None and num(c.get("cost")) is not None:
                    costs[name] = float(c["cost"])
                forecasts[name] = (
                    num(c.get("forecast_ms")),
                    num(c.get("lo_ms")),
                    num(c.get("hi_ms")),
                )
            source = f"router cache at {_iso(dts)} (decision {did})"
            row = self.store.get_decision(did)
            if row is not None and row.get("model_version"):
                model_version = row["model_version"]
            if now - dts > STALE_AFTER_S:
                notes.append(f"the newest routing decision is {now - dts:.0f} s older than now")
        if self.forecaster is not None:
            from tools.features import LONG_TICKS, FeatureWindow
            from tools.telemetry import TICK_SECONDS

            rows = []
            for n in names:
                window = FeatureWindow(n)
                for p in q.telemetry_window(self.store, n, now - LONG_TICKS * TICK_SECONDS, now):
                    window.update(p)
                rows.append(window.features())
            fc = self.forecaster.predict(np.vstack(rows))
            for i, n in enumerate(names):
                forecasts[n] = (float(fc.mean[i]), float(fc.lo[i]), float(fc.hi[i]))
            source = f"live forecaster {self.forecaster.version_id}"
            model_version = self.forecaster.version_id
        if not forecasts:
            notes.append("no forecasts: no routing decision is stored and no forecaster is loaded")
        for n in names:
            if n not in forecasts:
                forecasts[n] = (None, None, None)
            if not ejected[n] and points[n].error_rate >= EJECT_ERROR_RATE and did is None:
                ejected[n] = True
        return _Picture(
            now, points, forecasts, ejected, shares, costs, capacities, source, model_version, notes
        )

    def _forecast(self, pic: _Picture, name: str, sla: float) -> m.Forecast:
        mean, lo, hi = pic.forecasts.get(name, (None, None, None))
        sigma = None if lo is None or hi is None else (hi - lo) / (2.0 * Z90)
        p = p_over(mean, lo, hi, sla)
        return m.Forecast(
            backend=name,
            forecast_ms=rnd(mean),
            lo_ms=rnd(lo),
            hi_ms=rnd(hi),
            sigma_ms=rnd(sigma),
            p_over_sla=rnd(p, 3),
        )

    def _backend_state(self, pic: _Picture, name: str, sla: float) -> m.BackendState:
        p = pic.points[name]
        fc = self._forecast(pic, name, sla)
        cap = pic.capacities.get(name)
        util = p.rps / cap if cap and p.load_known else None
        reasons: list[str] = []
        status = "ok"
        if pic.now - p.ts > STALE_AFTER_S:
            status = "stale"
            reasons.append(f"last telemetry {pic.now - p.ts:.0f} s before now")
        if pic.ejected.get(name):
            status = "ejected"
            reasons.append(f"ejected by the router (error rate {p.error_rate:.0%})")
        elif p.error_rate >= EJECT_ERROR_RATE:
            status = "failing"
            reasons.append(f"error rate {p.error_rate:.0%}")
        else:
            if p.error_rate >= WARN_ERROR_RATE:
                reasons.append(f"error rate {p.error_rate:.1%}")
            if p.p95_ms > sla:
                reasons.append(f"p95 {p.p95_ms:.0f} ms above the {sla:.0f} ms SLA")
            if fc.p_over_sla is not None and fc.p_over_sla >= 0.5:
                reasons.append(
                    f"forecast {fc.forecast_ms:.0f} ms: {fc.p_over_sla:.0%} likely over SLA"
                )
            if util is not None and util >= 0.9:
                reasons.append(f"utilisation {util:.0%}")
            if reasons and status == "ok":
                status = "degraded"
        return m.BackendState(
            backend=name,
            status=status,  # type: ignore[arg-type]
            status_reasons=reasons,
            telemetry_at=iso(p.ts),
            p50_ms=rnd(p.p50_ms),
            p95_ms=rnd(p.p95_ms),
            rps=rnd(p.rps, 2) if p.load_known else None,
            error_rate=rnd(p.error_rate, 4),
            in_flight=rnd(p.in_flight, 2) if p.load_known else None,
            capacity_rps=cap,
            utilisation=rnd(util, 3),
            cost_per_request=pic.costs.get(name),
            traffic_share=rnd(pic.shares.get(name), 3),
            ejected=bool(pic.ejected.get(name)),
            forecast=fc,
        )

    def _sla_for(self, tier: str | None, sla_ms: float | None = None) -> tuple[str, float]:
        tier = tier or "standard"
        if tier not in TIERS:
            raise ToolError(f"unknown tier {tier!r}; known: {', '.join(TIERS)}")
        if sla_ms is not None:
            return tier, float(sla_ms)
        return tier, TIERS[tier].sla_ms if tier != "standard" else self.sla_ms

    def _recent(self, now: float, minutes: float) -> dict[str, Any]:
        b = q.sla_buckets(
            self.store, now - minutes * 60.0, now + 1e-6, minutes * 60.0 + 1.0, self.sla_ms
        )
        n = sum(r["n"] for r in b)
        bad = sum(r["over_sla"] + r["no_outcome"] for r in b)
        return {
            "requests": n,
            "violation_pct": round(100.0 * bad / n, 2) if n else None,
            "escalated": sum(r["agent_decided"] for r in b),
        }

    # -- read tools --------------------------------------------------------------------------

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
        pic = self._picture(params.at)
        name = params.backend
        if name not in pic.points:
            raise ToolError(f"unknown backend {name!r}; known: {', '.join(sorted(pic.points))}")
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
                            level=_level(prob),  # type: ignore[arg-type]
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
                        level=_level(prob),  # type: ignore[arg-type]
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
            no_risk=[n for n in sorted(pic.points) if n not in flagged],
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

    def drift_status(self, params: m.DriftInput | None = None) -> m.DriftStatusOut:
        params = params or m.DriftInput()
        now = self.now(params.at)
        cur_start = now - params.window_minutes * 60.0
        ref_start = cur_start - params.reference_minutes * 60.0
        per_tick = q.abs_errors_per_tick(self.store, ref_start, now + 1e-6)
        by_backend: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in per_tick:
            if params.backend is None or r["backend"] == params.backend:
                by_backend[r["backend"]].append(r)
        live: list[m.DriftFinding] = []
        severities: list[str] = []
        drifted: list[str] = []
        for name in sorted(by_backend):
            ref = [r["mae"] for r in by_backend[name] if r["ts"] < cur_start]
            cur = [r["mae"] for r in by_backend[name] if r["ts"] >= cur_start]
            report = concept_drift(ref, cur, min_samples=20)
            for res in report.results:
                live.append(
                    m.DriftFinding(
                        backend=name,
                        test=res.test,
                        status=res.status,
                        severity=res.severity,
                        p_value=num(res.p_value),
                        p_adjusted=num(res.p_adjusted),
                        reference_mae_ms=rnd(res.reference_mean),
                        current_mae_ms=rnd(res.current_mean),
                        n_reference=res.n_reference,
                        n_current=res.n_current,
                    )
                )
            severities.append(report.max_severity)
            if report.drifted:
                drifted.append(name)
        # Page-Hinkley over the longer history locates when the error level changed.
        change_points = [c for c in self._change_points(now, params.backend) if c.ts >= ref_start]
        stored = self.store.list_drift_reports(since=ref_start, until=now + 1e-6, limit=20)
        if params.backend is not None:
            stored = [d for d in stored if d.backend in (None, params.backend)]
        severities += [d.severity for d in stored if d.ts >= cur_start]
        order = ["none", "low", "medium", "high", "critical"]
        worst = max(severities, key=order.index) if severities else "none"
        notes = []
        if not by_backend:
            notes.append("no resolved decisions in the windows: nothing to test")
        return m.DriftStatusOut(
            now=_iso(now),
            window=f"{_iso(cur_start)} to {_iso(now)}",
            reference=f"{_iso(ref_start)} to {_iso(cur_start)}",
            max_severity=worst,
            drifted_backends=drifted,
            live=live,
            change_points=change_points,
            stored_reports=[ex.drift_dict(d) for d in stored],
            method=(
                "per-tick mean absolute forecast error per backend; one-sided Welch t and "
                "Mann-Whitney U (current > reference), Benjamini-Hochberg within a backend; "
                "min 20 ticks per side; calibrated Page-Hinkley (mode up) for change points"
            ),
            notes=notes,
        )

    def _change_points(self, now: float, backend: str | None) -> list[m.ChangePoint]:
        rows = q.abs_errors_per_tick(self.store, now - 4 * 3600.0, now + 1e-6)
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            if backend is None or r["backend"] == backend:
                series[r["backend"]].append((r["ts"], r["mae"]))
        out: list[m.ChangePoint] = []
        for name in sorted(series):
            ts = np.array([t for t, _ in series[name]])
            x = np.array([v for _, v in series[name]])
            if x.size < 60:
                continue
            detector = PageHinkley.calibrated(mode="up", warmup=40, min_instances=40)
            for i in detector.detect(x):
                # Detection lags the change by tens of ticks: compare the level well before
                # the alarm with the level around it.
                before = x[max(0, i - 60) : max(0, i - 20)]
                after = x[max(0, i - 20) : i + 20]
                out.append(
                    m.ChangePoint(
                        backend=name,
                        at=_iso(float(ts[i])),
                        ts=float(ts[i]),
                        mae_before_ms=rnd(np.mean(before)) if before.size else None,
                        mae_after_ms=rnd(np.mean(after)),
                    )
                )
        out.sort(key=lambda c: c.ts)
        return out[-10:]

    def anomalies(self, params: m.AnomaliesInput | None = None) -> m.AnomaliesOut:
        params = params or m.AnomaliesInput()
        since, until = self._window(params.since, params.until, 60.0)
        found = self.store.list_anomalies(
            since=since,
            until=until + 1e-6,
            backend=params.backend,
            min_severity=params.min_severity or None,
            limit=params.limit,
        )
        by: dict[str, dict[str, Any]] = {}
        for a in found:
            e = by.setdefault(
                a.backend, {"count": 0, "max_severity": 0.0, "first": a.ts, "last": a.ts}
            )
            e["count"] += 1
            e["max_severity"] = max(e["max_severity"], round(a.severity, 3))
            e["first"] = min(e["first"], a.ts)
            e["last"] = max(e["last"], a.ts)
        for e in by.values():
            e["first"], e["last"] = iso(e["first"]), iso(e["last"])
        return m.AnomaliesOut(
            since=_iso(since),
            until=_iso(until),
            count=len(found),
            by_backend=by,
            anomalies=[
                {
                    "at": iso(a.ts),
                    "backend": a.backend,
                    "severity": round(a.severity, 3),
                    "score": round(a.score, 4),
                    "detector": a.detector,
                    "features": a.features,
                }
                for a in found
            ],
        )

    def quality_timeline(self, params: m.TimelineInput | None = None) -> m.QualityTimelineOut:
        params = params or m.TimelineInput()
        since, until = self._window(params.since, params.until, 60.0, params.around)
        bucket_s = params.bucket_minutes * 60.0
        raw = {r["k"]: r for r in q.sla_buckets(self.store, since, until, bucket_s, self.sla_ms)}
        span = until - since
        ref_rows = q.sla_buckets(self.store, since - span, since, span + 1.0, self.sla_ms)
        ref_n = sum(r["n"] for r in ref_rows)
        ref_bad = sum(r["over_sla"] + r["no_outcome"] for r in ref_rows)
        buckets: list[m.Bucket] = []
        for k in range(math.ceil(span / bucket_s)):
            r = raw.get(
                k, {"n": 0, "over_sla": 0, "no_outcome": 0, "ambiguous": 0, "agent_decided": 0}
            )
            bad = r["over_sla"] + r["no_outcome"]
            buckets.append(
                m.Bucket(
                    start=_iso(since + k * bucket_s),
                    start_ts=since + k * bucket_s,
                    requests=r["n"],
                    violations=bad,
                    violation_pct=round(100.0 * bad / r["n"], 2) if r["n"] else None,
                    no_outcome=r["no_outcome"],
                    ambiguous=r["ambiguous"] or 0,
                    escalated_to_agent=r["agent_decided"] or 0,
                    degraded=False,
                )
            )
        notes: list[str] = []
        first = next((i for i, b in enumerate(buckets) if b.requests), None)
        if first:
            notes.append(f"no decisions are stored before {buckets[first].start}")
            buckets = buckets[first:]
        pcts = [
            b.violation_pct for b in buckets if b.violation_pct is not None and b.requests >= 20
        ]
        quiet = float(np.percentile(pcts, 25)) if pcts else None
        if ref_n >= 100 and (quiet is None or 100.0 * ref_bad / ref_n <= quiet):
            ref_pct = 100.0 * ref_bad / ref_n
            reference = (
                f"the preceding {span / 60:.0f} minutes ({_iso(since - span)} to {_iso(since)})"
            )
        elif ref_n >= 100 and quiet is not None:
            # The preceding window had its own trouble: the window's quiet buckets are the
            # better picture of normal.
            ref_pct = quiet
            reference = (
                "the quietest quarter of the window's buckets (the preceding window was worse, "
                f"{100.0 * ref_bad / ref_n:.1f}%)"
            )
        elif pcts:
            ref_pct = float(np.percentile(pcts, 25))
            reference = "the quietest quarter of the window's buckets (no earlier data)"
        else:
            ref_pct = None
            reference = "none (no requests in or before the window)"
        threshold = None if ref_pct is None else max(2.0 * ref_pct, ref_pct + 5.0)
        for b in buckets:
            b.degraded = bool(
                threshold is not None
                and b.violation_pct is not None
                and b.requests >= 20
                and b.violation_pct >= threshold
            )
        degraded = [b for b in buckets if b.degraded]
        peak = max(
            (b for b in buckets if b.violation_pct is not None and b.requests >= 20),
            key=lambda b: b.violation_pct or 0.0,
            default=None,
        )
        d_from = degraded[0].start_ts if degraded else None
        d_until = degraded[-1].start_ts + bucket_s if degraded else None
        if not degraded:
            notes.append(
                "no bucket's SLA violations rose above twice the reference (or reference + 5 "
                "points): quality did not drop measurably in this window"
            )

        # Which backends carried the violations (in the degraded period, else the whole window).
        a, b_ = (d_from, d_until) if d_from is not None else (since, until)
        impact_rows = q.sla_by_backend(self.store, a, b_, self.sla_ms)
        total_bad = sum(r["over_sla"] + r["no_outcome"] for r in impact_rows) or 1
        tele_during = q.telemetry_summary(self.store, a, b_)
        tele_before = q.telemetry_summary(self.store, a - max(b_ - a, 600.0), a)
        impacts = []
        for r in sorted(impact_rows, key=lambda r: -(r["over_sla"] + r["no_outcome"])):
            bad = r["over_sla"] + r["no_outcome"]
            name = r["backend"]
            impacts.append(
                m.BackendImpact(
                    backend=name,
                    violations=bad,
                    share_of_violations=round(bad / total_bad, 3),
                    violation_pct=round(100.0 * bad / r["n"], 2) if r["n"] else None,
                    p95_ms_before=rnd(tele_before.get(name, {}).get("p95")),
                    p95_ms_during=rnd(tele_during.get(name, {}).get("p95")),
                    error_rate_during=rnd(tele_during.get(name, {}).get("err"), 4),
                )
            )

        events = self._timeline_events(since, until)
        causes: list[m.TimelineEvent] = []
        if d_from is not None and d_until is not None:
            lead = 15 * 60.0
            for e in events:
                end = parse_time(e.end_at, e.ts) if e.end_at else e.ts
                if e.ts <= d_until and (end or e.ts) >= d_from - lead and e.kind in ex.CAUSE_RANK:
                    causes.append(e)
            causes.sort(key=lambda e: (ex.CAUSE_RANK[e.kind], abs(e.ts - d_from)))
        omitted = max(0, len(events) - 60)
        return m.QualityTimelineOut(
            since=_iso(since),
            until=_iso(until),
            bucket_minutes=params.bucket_minutes,
            reference_violation_pct=rnd(ref_pct, 2),
            reference=reference,
            peak=peak,
            degraded_from=iso(d_from),
            degraded_until=iso(d_until),
            buckets=buckets,
            backends=impacts,
            events=events[:60],
            likely_causes=causes[:6],
            events_omitted=omitted,
            notes=notes,
        )

    def _timeline_events(self, since: float, until: float) -> list[m.TimelineEvent]:
        out: list[m.TimelineEvent] = []
        for e in self.store.list_events(since=since - 6 * 3600.0, until=until):
            end = ex.event_end(e)
            if end < since and e.ts < since:
                continue
            if e.ts < since and e.kind != "chaos":
                continue
            out.append(
                m.TimelineEvent(
                    at=_iso(e.ts),
                    ts=e.ts,
                    kind=e.kind,
                    subject=e.subject,
                    summary=ex.event_summary(e),
                    end_at=iso(end) if end != e.ts else None,
                )
            )
        for d in self.store.list_drift_reports(
            since=since, until=until, min_severity="medium", limit=50
        ):
            out.append(
                m.TimelineEvent(
                    at=_iso(d.ts),
                    ts=d.ts,
                    kind="drift",
                    subject=d.backend or d.model_version,
                    summary=(
                        f"{d.severity} {d.kind} drift ({d.test}"
                        f"{f', p={d.p_value:.2g}' if d.p_value is not None else ''})"
                        f"{f' on {d.backend}' if d.backend else ''}"
                        f"{f' ({d.feature})' if d.feature else ''}"
                    ),
                )
            )
        # Anomalies collapse into episodes per backend (gaps under 2 minutes join).
        found = sorted(
            self.store.list_anomalies(since=since, until=until, limit=5000), key=lambda a: a.ts
        )
        episodes: dict[str, list[list[Any]]] = defaultdict(list)
        for a in found:
            eps = episodes[a.backend]
            if eps and a.ts - eps[-1][1] <= 120.0:
                eps[-1][1] = a.ts
                eps[-1][2] += 1
                eps[-1][3] = max(eps[-1][3], a.severity)
            else:
                eps.append([a.ts, a.ts, 1, a.severity])
        for backend, eps in episodes.items():
            for start, end, n, sev in eps:
                out.append(
                    m.TimelineEvent(
                        at=_iso(start),
                        ts=start,
                        kind="anomaly",
                        subject=backend,
                        summary=(
                            f"{n} anomal{'y' if n == 1 else 'ies'} on {backend}, "
                            f"max severity {sev:.2f}"
                        ),
                        end_at=iso(end) if end != start else None,
                    )
                )
        for a in self.store.list_alerts(since=since, include_suppressed=False, limit=100):
            if a.created_at >= until:
                continue
            out.append(
                m.TimelineEvent(
                    at=_iso(a.created_at),
                    ts=a.created_at,
                    kind="alert",
                    subject=a.subject,
                    summary=(
                        f"{a.severity} {a.kind} alert on {a.subject}: "
                        f"{a.recommended_action or 'no action given'}"
                    ),
                )
            )
        out.sort(key=lambda e: (e.ts, e.kind))
        return out

    def experiments(self, params: m.ExperimentsInput | None = None) -> m.ExperimentsOut:
        params = params or m.ExperimentsInput()
        if params.experiment_id is not None:
            one = self.store.get_experiment(params.experiment_id)
            if one is None:
                raise ToolError(f"unknown experiment {params.experiment_id!r}")
            found = [one]
        else:
            found = self.store.list_experiments(params.status)
        out = []
        for e in found:
            results = self.store.list_experiment_results(e.experiment_id)
            last = results[-1] if results else None
            live = self._evaluate_experiment(e, last) if e.status == "running" else None
            out.append(
                m.ExperimentOut(
                    experiment_id=e.experiment_id,
                    name=e.name,
                    mode=e.mode,
                    status=e.status,
                    champion_id=e.champion_id,
                    challenger_id=e.challenger_id,
                    started_at=_iso(e.started_at),
                    ended_at=iso(e.ended_at),
                    verdict=e.verdict,
                    winner_id=e.winner_id,
                    live=live,
                    last_result=None
                    if last is None
                    else {
                        "at": iso(last.ts),
                        "verdict": last.verdict,
                        "n_champion": last.n_champion,
                        "n_challenger": last.n_challenger,
                        "champion_mae_ms": rnd(last.champion_mae),
                        "challenger_mae_ms": rnd(last.challenger_mae),
                        "p_value": last.p_value,
                        "srm_p_value": last.srm_p_value,
                    },
                )
            )
        notes = [] if out else ["no experiments are stored"]
        return m.ExperimentsOut(experiments=out, notes=notes)

    def _evaluate_experiment(self, e: Any, last: Any) -> dict[str, Any]:
        from tools.experiment_stats import ExperimentConfig, evaluate_shadow, evaluate_split

        allowed = set(ExperimentConfig.model_fields)
        cfg = ExperimentConfig(**{k: v for k, v in e.params.items() if k in allowed})
        rows = self.store.experiment_errors(e.experiment_id)
        prev = 0.0
        if last is not None:
            prev = float(last.detail.get("spent_through_fraction", 0.0) or 0.0)
        if e.mode == "shadow":
            pairs: dict[str, dict[str, float]] = defaultdict(dict)
            for r in rows:
                pairs[r["decision_id"]][r["arm"]] = r["abs_error"]
            both = [p for p in pairs.values() if "champion" in p and "challenger" in p]
            champ = [p["champion"] for p in both]
            chall = [p["challenger"] for p in both]
            verdict = evaluate_shadow(champ, chall, cfg, previous_information_fraction=prev)
        else:
            champ = [r["abs_error"] for r in rows if r["arm"] == "champion"]
            chall = [r["abs_error"] for r in rows if r["arm"] == "challenger"]
            verdict = evaluate_split(champ, chall, cfg, previous_information_fraction=prev)
        v = verdict.model_dump(mode="json")
        keep = (
            "state",
            "recommendation",
            "test",
            "p_value",
            "alpha_spent_at_look",
            "information_fraction",
            "n_champion",
            "n_challenger",
            "min_samples_per_arm",
            "mae_champion_ms",
            "mae_challenger_ms",
            "mae_difference_ms",
            "relative_change",
            "ci_low_ms",
            "ci_high_ms",
            "ci_level",
            "summary",
        )
        out = {k: v.get(k) for k in keep}
        if verdict.srm is not None:
            out["srm"] = verdict.srm.model_dump(mode="json")
        return out

    def recent_alerts(self, params: m.AlertsInput | None = None) -> m.AlertsOut:
        from context_api.alerting import recent_alerts

        params = params or m.AlertsInput()
        since = parse_time(params.since, self.now()) if params.since is not None else None
        views = recent_alerts(
            self.store,
            kind=params.kind,
            min_severity=params.min_severity,
            since=since,
            limit=params.limit,
        )
        return m.AlertsOut(
            count=len(views),
            alerts=[
                {
                    "alert_id": v.alert.alert_id,
                    "at": iso(v.alert.created_at),
                    "kind": v.alert.kind,
                    "subject": v.alert.subject,
                    "severity": v.alert.severity,
                    "evidence": v.alert.evidence,
                    "recommended_action": v.alert.recommended_action,
                    "occurrences": v.occurrences,
                    "delivery": v.delivery_state,
                }
                for v in views
            ],
        )

    def explain_decision(self, params: m.ExplainInput) -> m.ExplainOut:
        row = self.store.get_decision(params.decision_id)
        if row is None:
            raise ToolError(
                f"no stored decision {params.decision_id!r}; use find_decisions to list recent ids"
            )
        sla = num(row.get("sla_ms")) or self.sla_ms
        cands: list[m.CandidateView] = []
        for c in row.get("candidates") or []:
            mean, lo, hi = num(c.get("forecast_ms")), num(c.get("lo_ms")), num(c.get("hi_ms"))
            p = p_over(mean, lo, hi, sla)
            cands.append(
                m.CandidateView(
                    backend=str(c.get("backend")),
                    forecast_ms=rnd(mean),
                    lo_ms=rnd(lo),
                    hi_ms=rnd(hi),
                    p_over_sla=rnd(p, 3),
                    cost_per_request=num(c.get("cost")),
                    share=rnd(c.get("share"), 3),
                    ejected=bool(c.get("ejected")),
                    allowed=not bool(c.get("ejected")),
                )
            )
        chosen = next((c for c in cands if c.backend == row["backend"]), None)
        reason = row.get("reason") or ""
        base_reason, _, fallback = reason.partition(";agent_fallback=")
        policy = row.get("policy")
        if policy == "router_agent":
            decided_by = "router_agent"
            base_reason = base_reason.removeprefix("agent:")
        elif fallback:
            decided_by = "policy_after_agent_fallback"
        else:
            decided_by = "policy"
        amb = row.get("ambiguous_reason")
        outcome: dict[str, Any] = {"status": row.get("status")}
        actual = num(row.get("actual_latency_ms"))
        if actual is not None:
            outcome.update(
                actual_latency_ms=round(actual, 1),
                within_sla=actual <= sla,
                forecast_error_ms=rnd(row.get("error_ms")),
                observed_at=iso(num(row.get("observed_at"))),
            )
        elif row.get("status") == "pending":
            outcome["note"] = "no outcome reported (yet): a failed request reports none"
        explanation = ex.explain_lines(
            row, cands, chosen, sla, base_reason, decided_by, fallback, amb
        )
        escalation = self._escalation_of(row["decision_id"]) if row.get("ambiguous") else None
        if escalation is not None and escalation.get("rationale"):
            explanation.append(
                f"Router agent ({escalation.get('llm')}, confidence "
                f"{escalation.get('confidence')}): {escalation['rationale']}"
            )
        return m.ExplainOut(
            decision_id=row["decision_id"],
            request_id=row.get("request_id"),
            at=_iso(row["ts"]),
            tier=row.get("tier"),
            sla_ms=sla,
            backend=row["backend"],
            decided_by=decided_by,  # type: ignore[arg-type]
            policy=policy,
            reason=base_reason or None,
            reason_text=ex.REASON_TEXT.get(base_reason, base_reason or "not recorded"),
            ambiguous=bool(row.get("ambiguous")),
            ambiguous_reason=amb,
            ambiguity_text=ex.ambiguity_text(amb),
            agent_fallback_reason=fallback or None,
            model_version=row.get("model_version"),
            candidates=cands,
            chosen=chosen,
            outcome=outcome,
            explanation=explanation,
            escalation=escalation,
        )

    def _escalation_of(self, decision_id: str) -> dict[str, Any] | None:
        """The escalation trace of a decision (and the shared agent run it reused), if any."""
        from context_api.traces import TraceStore

        try:
            traces = TraceStore(self.store)
            found = traces.list(kind="escalation", parent_id=decision_id, limit=1)
            if not found:
                return None
            trace = traces.get(found[0].trace_id)
            if trace is None:
                return None
            final = trace.final if isinstance(trace.final, dict) else {}
            source = trace
            shared = trace.inputs.get("shared_trace_id")
            if shared:
                source = traces.get(shared) or trace
            answer = source.final if isinstance(source.final, dict) else {}
        except Exception:  # an odd or older file: the decision is still explained
            return None
        return {
            "trace_id": trace.trace_id,
            "agent_trace_id": source.trace_id,
            "decided_by": final.get("decided_by"),
            "backend": final.get("backend"),
            "agent_backend": answer.get("agent_backend"),
            "confidence": answer.get("confidence"),
            "rationale": answer.get("rationale"),
            "fallback_reason": trace.fallback_reason,
            "llm": trace.llm,
            "model": trace.model,
        }

    def find_decisions(self, params: m.FindDecisionsInput | None = None) -> m.DecisionsOut:
        params = params or m.FindDecisionsInput()
        since, until = self._window(params.since, params.until, 15.0)
        found = q.recent_decisions(
            self.store,
            since,
            until + 1e-6,
            backend=params.backend,
            ambiguous_only=params.ambiguous_only,
            limit=params.limit,
        )
        return m.DecisionsOut(
            since=_iso(since),
            until=_iso(until),
            decisions=[
                {
                    "decision_id": r["decision_id"],
                    "at": iso(r["ts"]),
                    "backend": r["backend"],
                    "tier": r["tier"],
                    "sla_ms": r["sla_ms"],
                    "policy": r["policy"],
                    "reason": r["reason"],
                    "ambiguous": bool(r["ambiguous"]),
                    "actual_latency_ms": rnd(r["actual"]),
                    "status": r["status"],
                }
                for r in found
            ],
        )

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
                alternatives=[],
                excluded=excluded,
                rationale="every backend is ejected or failing: no safe choice exists",
                model_version=pic.model_version,
            )
        known = [r for r in recs if r.p_over_sla is not None]
        clear = [r for r in known if (r.p_over_sla or 0.0) < CLEAR_P]
        cost = lambda r: r.cost_per_request if r.cost_per_request is not None else math.inf  # noqa: E731
        if clear:
            best = min(clear, key=lambda r: (cost(r), r.p_over_sla, r.backend))
            rationale = (
                f"{best.backend} is the cheapest backend confidently within the {sla:.0f} ms "
                f"SLA: forecast {best.forecast_ms:.0f} ms (90% interval {best.lo_ms:.0f}-"
                f"{best.hi_ms:.0f} ms), {best.p_over_sla:.0%} chance of ending over it"
            )
        elif known:
            # Wide intervals make breach probabilities similar: among the backends within 0.1
            # of the least likely to breach, take the lowest forecast.
            floor = min(r.p_over_sla or 0.0 for r in known)
            near = [r for r in known if (r.p_over_sla or 0.0) <= floor + 0.1]
            best = min(near, key=lambda r: (r.forecast_ms or math.inf, cost(r), r.backend))
            rationale = (
                f"no backend is confidently within the {sla:.0f} ms SLA; {best.backend} has the "
                f"lowest forecast ({best.forecast_ms:.0f} ms) among the least likely to breach "
                f"it ({best.p_over_sla:.0%} breach probability)"
            )
        else:
            best = min(recs, key=lambda r: (cost(r), r.backend))
            rationale = f"no forecasts available; {best.backend} is the cheapest healthy backend"
        others = sorted(
            (r for r in recs if r.backend != best.backend),
            key=lambda r: (r.p_over_sla if r.p_over_sla is not None else 1.0, cost(r)),
        )
        return m.RecommendOut(
            now=_iso(pic.now),
            tier=tier,
            sla_ms=sla,
            recommended=best,
            confident=bool(clear),
            alternatives=others,
            excluded=excluded,
            rationale=rationale,
            model_version=pic.model_version,
        )

    def model_versions(self, params: m.ModelVersionsInput | None = None) -> m.ModelVersionsOut:
        params = params or m.ModelVersionsInput()
        versions = self.store.list_model_versions(params.kind)
        active = self.store.active_model_version(params.kind)

        def brief(v: Any) -> dict[str, Any]:
            metrics = v.metrics or {}
            forest = metrics.get("forest") if isinstance(metrics.get("forest"), dict) else {}
            interval = metrics.get("interval") if isinstance(metrics.get("interval"), dict) else {}
            return {
                "version_id": v.version_id,
                "status": v.status,
                "parent_id": v.parent_id,
                "created_at": iso(v.created_at),
                "activated_at": iso(v.activated_at),
                "trained_from": iso(v.trained_from_ts),
                "trained_to": iso(v.trained_to_ts),
                "holdout_mae_ms": rnd(forest.get("mae_ms")),
                "interval_coverage": rnd(interval.get("holdout_coverage"), 3),
                "note": v.note,
            }

        return m.ModelVersionsOut(
            kind=params.kind,
            active=brief(active) if active else None,
            versions=[brief(v) for v in versions[-20:]],
            history=[
                {
                    "at": iso(h.ts),
                    "version_id": h.version_id,
                    "previous_version_id": h.previous_version_id,
                    "action": h.action,
                    "reason": h.reason,
                }
                for h in self.store.model_history(params.kind)[-20:]
            ],
        )

    def performance(self, params: m.PerformanceInput | None = None) -> m.PerformanceOut:
        params = params or m.PerformanceInput()
        since, until = self._window(params.since, params.until, 60.0)
        summary = self.store.error_summary(since, until + 1e-6)
        sla_rows = q.sla_by_backend(self.store, since, until + 1e-6, self.sla_ms)
        return m.PerformanceOut(
            since=_iso(since),
            until=_iso(until),
            by_version_backend=[
                {
                    "model_version": s.model_version,
                    "backend": s.backend,
                    "n": s.n,
                    "mae_ms": rnd(s.mae),
                    "rmse_ms": rnd(s.rmse),
                    "bias_ms": rnd(s.bias),
                }
                for s in summary
            ],
            sla_by_backend=[
                {
                    "backend": r["backend"],
                    "requests": r["n"],
                    "violations": r["over_sla"] + r["no_outcome"],
                    "violation_pct": round(100.0 * (r["over_sla"] + r["no_outcome"]) / r["n"], 2)
                    if r["n"]
                    else None,
                    "mean_latency_ms": rnd(r["mean_latency_ms"]),
                }
                for r in sla_rows
            ],
        )

    def _retrain_inputs(self, now: float) -> tuple[Any, dict[str, Any]]:
        from tools.retrain_policy import RetrainInputs

        active = self.store.active_model_version("forecaster")
        drift = self.drift_status(m.DriftInput(at=now))
        recent = self.store.error_summary(now - 3600.0, now + 1e-6, by=())
        holdout = None
        trained_to = None
        if active is not None:
            forest = active.metrics.get("forest") if isinstance(active.metrics, dict) else None
            holdout = num(forest.get("mae_ms")) if isinstance(forest, dict) else None
            trained_to = active.trained_to_ts or active.activated_at or active.created_at
        since_train = None if trained_to is None else max(0.0, now - trained_to)
        new_samples = q.outcomes_since(self.store, trained_to) if trained_to is not None else 0
        starts = [c.ts for c in drift.change_points]
        inputs = RetrainInputs(
            now_ts=now,
            drift_severity=drift.max_severity,  # type: ignore[arg-type]
            drift_started_at=max(starts) if starts and drift.max_severity != "none" else None,
            recent_mae_ms=num(recent[0].mae) if recent else None,
            recent_mae_samples=recent[0].n if recent else 0,
            holdout_mae_ms=holdout,
            new_samples_since_training=new_samples,
            seconds_since_training=since_train,
        )
        return inputs, {"active_version": active.version_id if active else None}

    def retrain_check(self, params: m.RetrainCheckInput | None = None) -> m.RetrainCheckOut:
        from tools.retrain_policy import decide_retrain

        params = params or m.RetrainCheckInput()
        now = self.now(params.at)
        inputs, extra = self._retrain_inputs(now)
        decision = decide_retrain(inputs)
        return m.RetrainCheckOut(
            now=_iso(now),
            retrain=decision.retrain,
            summary=decision.summary,
            decision=decision.model_dump(mode="json"),
            inputs={**inputs.model_dump(mode="json"), **extra},
        )

    # -- write tools (within policy) ---------------------------------------------------------

    def request_retrain(self, params: m.RequestRetrainInput) -> m.WriteOut:
        from tools.retrain_policy import decide_retrain

        now = self.now(params.at)
        inputs, extra = self._retrain_inputs(now)
        decision = decide_retrain(inputs)
        if not decision.retrain:
            return m.WriteOut(
                ok=False,
                message=(
                    "refused: the retraining policy does not trigger a retrain now "
                    f"({decision.summary})"
                ),
                detail={"blockers": list(decision.blockers), "triggers": list(decision.triggers)},
            )
        window = decision.window.model_dump(mode="json") if decision.window else None
        event_id = self.store.record_event(
            "retrain_requested",
            subject="forecaster",
            detail={
                "reason": params.reason,
                "triggers": list(decision.triggers),
                "window": window,
                "active_version": extra["active_version"],
            },
            ts=now,
        )
        return m.WriteOut(
            ok=True,
            message=f"retrain requested (event {event_id}): {decision.summary}",
            detail={"event_id": event_id, "window": window, "triggers": list(decision.triggers)},
        )

    def record_drift_reports(self, params: m.RecordDriftInput) -> m.WriteOut:
        status = self.drift_status(params)
        order = ["none", "low", "medium", "high", "critical"]
        floor = order.index(params.min_severity)
        now = self.now(params.at)
        reports = [
            StoredDriftReport(
                ts=now,
                kind="concept",
                test=f.test,
                severity=f.severity,  # type: ignore[arg-type]
                backend=f.backend,
                feature="abs_error",
                p_value=f.p_adjusted,
                n_reference=f.n_reference,
                n_current=f.n_current,
                detail={
                    "reference_mae_ms": f.reference_mae_ms,
                    "current_mae_ms": f.current_mae_ms,
                    "window": status.window,
                    "reference": status.reference,
                },
            )
            for f in status.live
            if f.status == "drift" and order.index(f.severity) >= floor
        ]
        ids = self.store.insert_drift_reports(reports) if reports else []
        return m.WriteOut(
            ok=True,
            message=f"stored {len(ids)} drift report(s) at or above {params.min_severity}",
            detail={"ids": ids, "max_severity": status.max_severity},
        )


__all__ = [
    "EMPTY_HINT",
    "ContextAPI",
    "EmptyStoreError",
    "ToolDef",
    "ToolError",
    "ToolOutcome",
    "iso",
    "p_over",
    "parse_time",
]
