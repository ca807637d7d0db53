"""What every tool module shares: tool declarations, "now", the fleet picture and the breach
probability.

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from context_api import api_models as m
from context_api import queries as q
from context_api.model_store import ModelCache, artifact_dir_for
from context_api.store import Store
from context_api.timefmt import ToolError, iso, num, parse_time, rnd
from context_api.timefmt import iso_or_unknown as _iso
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


def level(p: float) -> str:
    return "high" if p >= 0.5 else "medium" if p >= 0.2 else "low"


def _default_fleet_info(names: Sequence[str]) -> dict[str, BackendInfo]:
    """Costs and capacities of the simulator's default fleet (what `arcpoint demo` runs), used
    only when the stored backends are exactly that fleet."""
    from tools.sim.spec import DEFAULT_FLEET, backend_infos

    known = {b.name: b for b in backend_infos(DEFAULT_FLEET)}
    if set(names) != set(known):
        return {}
    return {n: known[n] for n in names}


@dataclass
class Picture:
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


@dataclass(frozen=True)
class ToolInfo:
    """A tool as a tool module declares it: the method is named, and bound per API object."""

    name: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    method: str
    writes: bool = False


class ToolBase:
    """What every tool module shares: the store, "now", the window arithmetic and the fleet
    picture (telemetry, forecasts, ejections and shares at one moment).

    `backends` gives costs and capacities when known (else they are read from stored decisions,
    or from the simulator's default fleet when the stored backends are exactly it);
    `forecaster` (a `tools.forecaster.Forecaster`) forecasts from stored telemetry instead of
    reading the router's cached forecasts; `artifact_dir` is where trained models are written
    (default: `<db stem>.models/` beside the database).
    """

    TOOLS: tuple[ToolInfo, ...] = ()

    def __init__(
        self,
        store: Store,
        *,
        backends: Sequence[BackendInfo] | None = None,
        forecaster: Any = None,
        sla_ms: float = DEFAULT_SLA_MS,
        clock: Callable[[], float] = time.time,
        artifact_dir: str | Path | None = None,
    ) -> None:
        if not (math.isfinite(sla_ms) and sla_ms > 0):
            raise ValueError("sla_ms must be finite and > 0")
        self.store = store
        self.forecaster = forecaster
        self.sla_ms = float(sla_ms)
        self._clock = clock
        self._backends = {b.name: b for b in backends} if backends else None
        if artifact_dir is None and store.path != ":memory:":
            artifact_dir = artifact_dir_for(store.path)
        self.artifact_dir = None if artifact_dir is None else Path(artifact_dir)
        """Where tools that train models write their artifacts (None: in-memory store)."""
        self.models = ModelCache(store)

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

    def backends_known(self) -> list[str]:
        """Every backend the store has telemetry for."""
        return q.telemetry_backends(self.store)

    def _check_backend(self, name: str | None) -> None:
        """ToolError naming the fleet when `name` is not one of its backends."""
        if name is None:
            return
        known = self.backends_known()
        if name not in known:
            raise ToolError(f"unknown backend {name!r}; this fleet has: {', '.join(known)}")

    def _info(self, names: Sequence[str]) -> dict[str, BackendInfo]:
        if self._backends is not None:
            return self._backends
        return _default_fleet_info(names)

    def _picture(self, at: Any = None, tier: str = "standard") -> Picture:
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
        return Picture(
            now, points, forecasts, ejected, shares, costs, capacities, source, model_version, notes
        )

    def _forecast(self, pic: Picture, name: str, sla: float) -> m.Forecast:
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

    def _backend_state(self, pic: Picture, name: str, sla: float) -> m.BackendState:
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
