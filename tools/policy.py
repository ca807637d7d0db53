"""The predictive routing policy: cheapest backends first, kept under their SLA by forecasts.

Once per telemetry tick the policy turns the fleet's cached 5-minute forecasts into a split of
traffic; requests then only read that split (see `tools.schedule`). The split comes from a
per-backend rate cap driven by the forecast, additive-increase / multiplicative-decrease style:

- a backend whose forecast (or its interval's upper edge) passes its latency target has its cap
  cut in proportion to how far over it is forecast to be, before the breach happens;
- a backend forecast comfortably under target may take more, a step at a time (slow start);
- traffic fills the cheapest backends up to their caps (the minimum-cost split for per-request
  prices), and whatever demand is left over is spread in proportion to the caps.

Failing backends (error rate at or above `eject_error_rate`) are ejected for
`base_ejection_s` times their ejection count, as Envoy's outlier detection does. Hysteresis
keeps traffic from flapping: a backend pulled for SLA risk comes back only once its forecast is
clearly under the SLA, and shares grow by at most `max_share_step` a tick (they may fall at once).

A request is *ambiguous* when the policy's answer is not clear: the chosen backend is a coin
flip for the SLA (its forecast interval straddles it) while another backend is confidently
within it, no backend is forecast within the SLA, the chosen backend is failing but not yet
ejected, an anomaly or drift alarm is active on it, or the request's tier asks for review.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from tools.routing import (
    DEFAULT_SLA_MS,
    TIERS,
    BackendInfo,
    Candidate,
    Decision,
    FleetView,
    RouteRequest,
    Tier,
)
from tools.schedule import DEFAULT_SLOTS, build_schedule


@dataclass(frozen=True, slots=True)
class PredictiveConfig:
    sla_ms: float = DEFAULT_SLA_MS
    headroom: float = 0.8
    """Target forecast as a fraction of the SLA: the margin kept for forecast error."""
    probe_below: float = 0.6
    """A backend forecast under this fraction of the SLA may take more traffic."""
    probe_step: float = 1.2
    probe_add_rps: float = 1.0
    min_decrease: float = 0.5
    """A cap is never cut by more than half in one tick."""
    readmit_below: float = 0.9
    """Hysteresis: a backend pulled for SLA risk returns once its upper forecast < this x SLA."""
    max_share_step: float = 0.25
    eject_error_rate: float = 0.5
    dead_error_rate: float = 0.9
    """A backend failing this often is ejected even past `max_ejection_fraction`."""
    max_ejection_fraction: float = 0.5
    """As Envoy's max_ejection_percent: an overloaded fleet that errors everywhere is not
    ejected wholesale (at least one backend may always be ejected)."""
    warn_error_rate: float = 0.05
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    demand_margin: float = 1.1
    max_utilisation: float = 0.8
    """With capacities known, no backend is planned past this fraction of its capacity."""
    slots: int = DEFAULT_SLOTS


@dataclass(slots=True)
class _BackendState:
    cap_rps: float = math.nan
    ejected_until: float = -math.inf
    ejections: int = 0
    at_risk: bool = False


@dataclass(frozen=True, slots=True)
class _TierPlan:
    schedule: np.ndarray
    decisions: tuple[tuple[str, str, bool, str | None], ...]
    """Per backend index: (backend, reason, ambiguous, ambiguous_reason)."""
    candidates: tuple[Candidate, ...]
    sla_ms: float


class PredictivePolicy:
    """Forecast-driven, cost-minimising routing under a latency SLA. See the module docstring."""

    name = "predictive"

    def __init__(
        self,
        backends: Sequence[BackendInfo],
        config: PredictiveConfig | None = None,
        tiers: Mapping[str, Tier] = TIERS,
        id_prefix: str = "d",
    ) -> None:
        if not backends:
            raise ValueError("a policy needs at least one backend")
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate backend names: {names}")
        self.backends = tuple(backends)
        self.config = config or PredictiveConfig()
        self.tiers = dict(tiers)
        self._index = {b.name: i for i, b in enumerate(self.backends)}
        self._state = [_BackendState() for _ in self.backends]
        self._shares = np.full(len(self.backends), 1.0 / len(self.backends))
        self._plans: dict[str, _TierPlan] = {}
        self._cursor: dict[str, int] = {}
        self._ids = itertools.count()
        self._id_prefix = id_prefix
        self._ts = 0.0
        self._model_version: str | None = None
        self._demand_ewma = math.nan
        self._plan_for_sla: dict[float, _TierPlan] = {}
        caps = [b.capacity_rps for b in self.backends]
        self._capacity = (
            np.array(caps, dtype=float) if all(c is not None and c > 0 for c in caps) else None
        )
        self.on_tick(None)

    # ------------------------------------------------------------------ per tick
    def on_tick(self, view: FleetView | None) -> None:
        """Recompute the traffic split from the tick's forecasts (off the per-request path)."""
        n = len(self.backends)
        self._plan_for_sla = {}
        if view is None:
            self._ts = 0.0
            forecasts = np.full(n, math.nan)
            lo = hi = forecasts
            errors = np.zeros(n)
            alarms: Mapping[str, str] = {}
            rps = np.zeros(n)
            self._model_version = None
        else:
            self._ts = view.ts
            self._model_version = view.model_version
            by_name = {b.name: b for b in view.backends}
            missing = [b.name for b in self.backends if b.name not in by_name]
            if missing:
                raise ValueError(f"fleet view lacks backends {missing}")
            ordered = [by_name[b.name] for b in self.backends]
            forecasts = np.array([b.forecast_ms for b in ordered])
            lo = np.array([b.forecast_lo_ms for b in ordered])
            hi = np.array([b.forecast_hi_ms for b in ordered])
            errors = np.array([b.error_rate for b in ordered])
            rps = np.array([b.rps for b in ordered])
            alarms = view.alarms
            demand = view.arrivals / 10.0
            self._demand_ewma = (
                demand if math.isnan(self._demand_ewma) else 0.7 * self._demand_ewma + 0.3 * demand
            )
            self._update_caps(view.ts, forecasts, hi, errors, rps, demand)

        healthy = np.array([s.ejected_until <= self._ts for s in self._state])
        if self._capacity is not None and not np.isnan(forecasts).any():
            shares = self._solve(forecasts, rps, healthy)
        else:
            shares = self._split(forecasts, healthy)
        self._shares = self._smooth(shares, healthy)

        self._inputs = (forecasts, lo, hi, errors, healthy, alarms)
        self._plans = {}
        for name, tier in self.tiers.items():
            self._plans[name] = self._plan(tier.sla_ms, tier.review, *self._inputs)
            self._cursor.setdefault(name, 0)

    def _update_caps(
        self,
        ts: float,
        forecast: np.ndarray,
        hi: np.ndarray,
        errors: np.ndarray,
        rps: np.ndarray,
        demand: float,
    ) -> None:
        """Set each backend's rate cap from its current rate and its forecast.

        cap = rate x clip(target / forecast, min_decrease, probe_step): a backend forecast at
        twice its target should carry half its load, one comfortably under may take a step
        more. Idle backends are judged on a floor rate so they can be brought in. While a
        backend is at risk (upper forecast past the SLA) it may not grow until its upper
        forecast is back under `readmit_below` x SLA (hysteresis).
        """
        cfg = self.config
        target = cfg.headroom * cfg.sla_ms
        fair = max(demand, 1.0) / len(self.backends)
        max_ejected = max(1, int(len(self.backends) * cfg.max_ejection_fraction))
        ejected = sum(st.ejected_until > ts for st in self._state)
        for i in np.argsort(-errors, kind="stable"):
            st = self._state[i]
            dead = errors[i] >= cfg.dead_error_rate
            if (
                errors[i] >= cfg.eject_error_rate
                and st.ejected_until <= ts
                and (ejected < max_ejected or dead)
            ):
                ejected += 1
                st.ejections += 1
                st.ejected_until = ts + min(cfg.base_ejection_s * st.ejections, cfg.max_ejection_s)
                st.cap_rps = math.nan
                continue
            if st.ejected_until > ts:
                continue
            f, h = forecast[i], hi[i]
            if math.isnan(f):
                st.cap_rps = fair
                continue
            if h > cfg.sla_ms:
                st.at_risk = True
            elif st.at_risk and h < cfg.readmit_below * cfg.sla_ms:
                st.at_risk = False
            ceiling = 0.95 if h > cfg.sla_ms else (1.0 if st.at_risk else cfg.probe_step)
            step = min(ceiling, max(cfg.min_decrease, target / max(f, 1e-9)))
            st.cap_rps = max(rps[i], cfg.probe_add_rps, 0.25 * fair) * step

    def _solve(self, forecast: np.ndarray, rps: np.ndarray, healthy: np.ndarray) -> np.ndarray:
        """The split when capacities are known: forecasts give state, capacity gives slope.

        Each backend's latency is modelled as p(x) = A / (1 - x / c) at load x, with capacity c
        from configuration and the level A read off the forecast at the current load r:
        A = forecast x (1 - r / c). The forecast carries what telemetry knows (a spike, a drift,
        a backlog); the first-order queueing shape says how latency would move if the load
        moved. The rate that keeps a backend at level L is c (1 - A / L).
        If the fleet can carry the demand with every backend at or under its target, the
        cheapest backends are filled first up to their target rates (the minimum-cost split);
        if it can within the SLA, the level is raised until it does (balancing the forecast
        latency) with no backend planned past `max_utilisation` of its capacity; beyond that,
        the excess overflows to a single backend (see below).
        """
        cfg = self.config
        cap = self._capacity
        demand = self._demand_ewma
        if math.isnan(demand) or not healthy.any():
            return self._split(forecast, healthy)
        raw_demand = max(demand, 1e-6)
        demand = raw_demand * cfg.demand_margin
        util = np.clip(rps / cap, 0.0, 0.95)
        level = np.maximum(forecast * (1.0 - util), 1e-3)

        def rates(at: float) -> np.ndarray:
            r = cap * np.clip(1.0 - level / at, 0.0, 1.0)
            r[~healthy] = 0.0
            return r

        target = cfg.headroom * cfg.sla_ms
        at_target = rates(target)
        if at_target.sum() >= demand:
            take = np.zeros_like(at_target)
            left = demand
            for i in sorted(range(len(cap)), key=lambda i: (self.backends[i].cost_per_request, i)):
                take[i] = min(at_target[i], left)
                left -= take[i]
                if left <= 0:
                    break
            return take / take.sum()
        ceiling = cap * cfg.max_utilisation
        ceiling[~healthy] = 0.0
        if ceiling.sum() >= demand:
            # Tight but feasible: raise the level until the fleet carries the demand, which
            # balances forecast latency across backends (minimising the worst one), never
            # loading a backend past `max_utilisation` of its capacity.
            lo, hi = target, target
            while np.minimum(rates(hi), ceiling).sum() < demand and hi < 1e7:
                lo, hi = hi, hi * 2.0
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if np.minimum(rates(mid), ceiling).sum() < demand else (lo, mid)
            take = np.minimum(rates(hi), ceiling)
        else:
            # Overload: more demand than the fleet can carry. Spreading it would saturate every
            # backend; instead each carries up to `max_utilisation` and the excess overflows to
            # the smallest healthy backend, so the violations stay with the excess traffic.
            take = ceiling.copy()
            idx = np.flatnonzero(healthy)
            spill = idx[np.argmin(ceiling[idx])]
            take[spill] += raw_demand - ceiling.sum()
        if take.sum() <= 0:
            return self._split(forecast, healthy)
        return take / take.sum()

    def _split(self, forecast: np.ndarray, healthy: np.ndarray) -> np.ndarray:
        """Fill the cheapest healthy backends up to their caps; spread any excess by cap."""
        n = len(self.backends)
        caps = np.array([0.0 if math.isnan(s.cap_rps) else s.cap_rps for s in self._state])
        caps[~healthy] = 0.0
        if not healthy.any():
            # Everything is ejected: the least-recently ejected backend is the least bad bet.
            shares = np.zeros(n)
            shares[int(np.argmin([s.ejected_until for s in self._state]))] = 1.0
            return shares
        demand = self._demand_ewma
        if math.isnan(demand) or caps.sum() <= 0:
            shares = healthy.astype(float)
            return shares / shares.sum()
        demand = max(demand * self.config.demand_margin, 1e-6)
        take = np.zeros(n)
        left = demand
        order = sorted(range(n), key=lambda i: (self.backends[i].cost_per_request, i))
        for i in order:
            if left <= 0:
                break
            if not healthy[i]:
                continue
            take[i] = min(caps[i], left)
            left -= take[i]
        if left > 0:
            take += left * caps / caps.sum()
        return take / take.sum()

    def _smooth(self, target: np.ndarray, healthy: np.ndarray) -> np.ndarray:
        """Move shares toward the target by at most `max_share_step` a tick.

        A backend that is ejected or forecast at risk drops to its target at once; the traffic
        it sheds must go somewhere, so only then may other shares rise faster than the step.
        """
        step = self.config.max_share_step
        prev = self._shares
        forced = ~healthy | np.array([s.at_risk for s in self._state])
        shares = np.where(forced, target, prev + np.clip(target - prev, -step, step))
        shares[~healthy] = 0.0
        if shares.sum() <= 0:
            return target
        return shares / shares.sum()

    def _plan(
        self,
        sla_ms: float,
        review: bool,
        forecast: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        errors: np.ndarray,
        healthy: np.ndarray,
        alarms: Mapping[str, str],
    ) -> _TierPlan:
        cfg = self.config
        known = ~np.isnan(forecast)
        within = healthy & (~known | (forecast <= sla_ms))
        shares = self._shares.copy()
        if sla_ms < cfg.sla_ms:
            # A stricter tier keeps the split but only over backends forecast within its SLA.
            masked = np.where(within, shares, 0.0)
            if masked.sum() <= 0 and within.any():
                # None of the current split qualifies: use the qualifying backends' caps.
                caps = np.array([0.0 if math.isnan(s.cap_rps) else s.cap_rps for s in self._state])
                masked = np.where(within, np.maximum(caps, 1e-3), 0.0)
            if masked.sum() > 0:
                shares = masked / masked.sum()
        none_within = not within.any()
        if none_within and healthy.any() and sla_ms < cfg.sla_ms:
            # Nobody meets this stricter tier's SLA: it goes to the best forecast among the
            # healthy (a small tier cannot swamp one backend; the main split is kept as is).
            best = int(np.nanargmin(np.where(healthy, forecast, np.inf)))
            shares = np.zeros_like(shares)
            shares[best] = 1.0
        if shares.sum() <= 0:
            shares = np.where(healthy, 1.0, 0.0) if healthy.any() else np.ones_like(shares)
        shares = shares / shares.sum()

        cheapest_within = None
        for i in sorted(range(len(self.backends)), key=lambda i: self.backends[i].cost_per_request):
            if within[i]:
                cheapest_within = i
                break
        # Probability that each backend's p95 will be past the SLA, reading the forecast
        # interval as Gaussian (its half-width is 1.645 sigma for the nominal 90%).
        sigma = np.maximum((hi - lo) / (2.0 * 1.6448536269514722), 1e-6)
        p_breach = np.where(known, ndtr((forecast - sla_ms) / sigma), 0.5)
        clear = healthy & known & (p_breach < 0.25)
        idx = np.arange(len(self.backends))
        decisions = []
        for i, b in enumerate(self.backends):
            if not healthy.any():
                reason = "all_ejected"
            elif none_within:
                reason = "none_within_sla"
            elif i == cheapest_within:
                reason = "cheapest_within_sla"
            elif within[i]:
                reason = "spillover_within_sla"
            else:
                reason = "over_sla_spillover"
            amb_reason = None
            if review:
                amb_reason = "tier_review"
            elif not healthy.any():
                amb_reason = "all_ejected"
            elif none_within:
                amb_reason = "no_backend_within_sla"
            elif b.name in alarms:
                amb_reason = f"alarm:{alarms[b.name]}"
            elif cfg.warn_error_rate <= errors[i] < cfg.eject_error_rate:
                amb_reason = "failing_backend"
            elif known[i] and 0.25 <= p_breach[i] <= 0.75 and (clear & (idx != i)).any():
                # A coin flip whether this backend stays within the SLA while another is
                # confidently within it: cost against risk, worth a second look. (When every
                # backend is a coin flip the fleet is short of capacity: that is the capacity
                # monitor's alert to raise, not a per-request routing question.)
                amb_reason = "interval_straddles_sla"
            decisions.append((b.name, reason, amb_reason is not None, amb_reason))
        candidates = tuple(
            Candidate(
                backend=b.name,
                forecast_ms=float(forecast[i]),
                lo_ms=float(lo[i]),
                hi_ms=float(hi[i]),
                cost_per_request=b.cost_per_request,
                share=float(shares[i]),
                ejected=not bool(healthy[i]),
            )
            for i, b in enumerate(self.backends)
        )
        return _TierPlan(build_schedule(shares, cfg.slots), tuple(decisions), candidates, sla_ms)

    # ------------------------------------------------------------------ per request
    def route(self, request: RouteRequest) -> Decision:
        tier = request.tier
        plan = self._plans.get(tier)
        if plan is None:
            raise ValueError(f"unknown tier {tier!r}; known: {sorted(self._plans)}")
        if request.sla_ms is not None and request.sla_ms != plan.sla_ms:
            plan = self._custom_plan(request.sla_ms, self.tiers[tier].review)
        k = self._cursor[tier]
        self._cursor[tier] = k + 1
        backend, reason, ambiguous, amb_reason = plan.decisions[
            plan.schedule[k % plan.schedule.size]
        ]
        return Decision(
            decision_id=f"{self._id_prefix}{next(self._ids)}",
            request_id=request.request_id,
            ts=self._ts if request.ts is None else request.ts,
            backend=backend,
            policy=self.name,
            reason=reason,
            sla_ms=plan.sla_ms,
            tier=tier,
            ambiguous=ambiguous,
            ambiguous_reason=amb_reason,
            candidates=plan.candidates,
            model_version=self._model_version,
        )

    def route_batch(self, n: int, tier: str = "standard") -> tuple[np.ndarray, np.ndarray]:
        """Route `n` requests of one tier at once: (backend indices, ambiguous flags).

        The same choices, in the same order, as `n` calls to `route` (the batch reads the same
        slot table), for replaying traffic at millions of decisions a second.
        """
        plan = self._plans.get(tier)
        if plan is None:
            raise ValueError(f"unknown tier {tier!r}; known: {sorted(self._plans)}")
        if n < 0:
            raise ValueError("n must be non-negative")
        k = self._cursor[tier]
        self._cursor[tier] = k + n
        idx = plan.schedule[np.arange(k, k + n) % plan.schedule.size]
        amb = np.array([d[2] for d in plan.decisions], dtype=bool)
        return idx, amb[idx]

    def observe(self, backend: str, latency_ms: float, ok: bool) -> None:
        """Per-request outcomes are not needed: the policy acts on forecasts, not on replies."""

    def _custom_plan(self, sla_ms: float, review: bool) -> _TierPlan:
        plan = self._plan_for_sla.get(sla_ms)
        if plan is None:
            plan = self._plan(sla_ms, review, *self._inputs)
            self._plan_for_sla[sla_ms] = plan
        return plan

    @property
    def shares(self) -> dict[str, float]:
        return {b.name: float(s) for b, s in zip(self.backends, self._shares, strict=True)}
