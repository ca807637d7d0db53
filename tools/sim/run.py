"""Drive a routing policy through a workload on a fleet: the simulation's run loop.

Time is integer picoseconds on one clock. Every event carries a key `time << 3 | class`; at
equal times the classes run in this order: chaos actions, arrivals, router timeouts, responses
reaching the router, probes, scrapes, telemetry ticks, and last the engines' own iteration
boundaries (so an arrival at the very end of an iteration joins the next one). Ties within a
class break on a deterministic id (request, backend, probe number), never on insertion order,
so a run does not depend on which engine implementation produced its events.

What the policy sees (`RouterView`, `tools.routers.base`): its own requests in flight per
backend; each request's outcome when the response reaches it (one RTT after the engine is done,
or at the router's timeout); engine metrics scraped every `scrape_interval_s`, delivered
`scrape_staleness_s` late; probe replies after `probe_delay_ms`. A request is routed the moment
it arrives and reaches its backend at once (the whole RTT is charged on the way back).

Every `tick_s` (10 s) the run also emits a `SimTick`: per backend, the telemetry a router would
compute from its own observations (`TelemetryPoint`: requests sent per second, p50/p95 of the
time to first token, or to failure, of the requests that finished, error rate, requests in
flight), the chaos acting on it (ground truth for the monitors' scores), and what the tick's
requests met. The predictive policy's adapter and the evals hang off these ticks.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from tools.routers.base import (
    STATUSES,
    Completion,
    EngineMetrics,
    PolicyBase,
    RequestInfo,
    RoutingPolicy,
)
from tools.sim.chaos import ChaosPlan
from tools.sim.engine import ERROR, OK, TIMEOUT, EventEngine, Requests
from tools.sim.spec import EngineSpec, idle_ttft_ms
from tools.sim.stepwise import StepEngine
from tools.sim.telemetry import (
    _ARRIVE,
    _CHAOS,
    _DELIVER,
    _ENGINE,
    _INF,
    _PROBE,
    _SCRAPE,
    _SCRAPE_TAKE,
    _TICK,
    _TIMEOUT,
    PS,
    Signals,
    SimTick,
    _View,
    profiles,
)
from tools.sim.workload import TIERS, Workload
from tools.telemetry import TICK_SECONDS

__all__ = ["PS", "SimConfig", "SimResult", "SimTick", "profiles", "simulate"]


@dataclass(frozen=True)
class SimConfig:
    timeout_s: float = 60.0
    """The router gives up on a request after this long (status `timeout`) and aborts it."""
    scrape_interval_s: float = 1.0
    """How often the router scrapes every engine's metrics, unless the policy declares its own
    cadence (`scrape_interval_s` on the policy: the llm-d endpoint picker polls every 50 ms)."""
    scrape_staleness_s: float = 0.0
    probe_delay_ms: float | None = None
    """Round trip of a probe; None: the backend's RTT."""
    tick_s: float = TICK_SECONDS
    engine: Literal["event", "stepwise"] = "event"
    start_ts: float = 1_700_000_000.0
    """Unix time of the run's start (telemetry timestamps)."""
    recent: int = 16
    """Completions a probe's recent latency is the median of."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "scrape_interval_s", "tick_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v!r}")
        if not (math.isfinite(self.scrape_staleness_s) and self.scrape_staleness_s >= 0):
            raise ValueError("scrape_staleness_s must be finite and >= 0")
        if self.probe_delay_ms is not None and not (
            math.isfinite(self.probe_delay_ms) and self.probe_delay_ms >= 0
        ):
            raise ValueError("probe_delay_ms must be finite and >= 0")


@dataclass
class SimResult:
    """Per-request outcomes of a run (arrays in request order) and its ticks."""

    workload: str
    policy: str
    backends: tuple[str, ...]
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    tier: np.ndarray
    backend: np.ndarray
    status: np.ndarray
    """Index into `STATUSES`."""
    ttft_ms: np.ndarray
    """NaN when no token arrived."""
    e2e_ms: np.ndarray
    tpot_ms: np.ndarray
    """NaN for failed requests and single-token outputs."""
    cost: np.ndarray
    """Dollars per request (tokens served by requests that completed)."""
    duration_s: float
    ticks: list[SimTick]
    cascaded: list[tuple[float, str]] = field(default_factory=list)
    """Backends a cascading failure took down, with when."""

    def __len__(self) -> int:
        return int(self.status.size)


class _Run(Signals):
    def __init__(
        self,
        workload: Workload,
        fleet: tuple[EngineSpec, ...],
        policy: RoutingPolicy,
        plan: ChaosPlan,
        config: SimConfig,
        on_tick: Callable[[SimTick], None] | None,
    ) -> None:
        self.w = workload
        self.fleet = fleet
        self.policy = policy
        self.plan = plan
        self.cfg = config
        self.on_tick = on_tick
        self.policy_tick = getattr(policy, "on_tick", None)
        self.names = tuple(s.name for s in fleet)
        nb = len(fleet)
        n = len(workload)
        self.req = Requests(
            workload.input_tokens.tolist(),
            workload.output_tokens.tolist(),
            list(workload.prefix) if workload.prefix is not None else None,
            workload.block_tokens,
        )
        self.rtt = [round(s.rtt_ms * 1e9) for s in fleet]
        self.probe_rtt = [
            round((config.probe_delay_ms if config.probe_delay_ms is not None else s.rtt_ms) * 1e9)
            for s in fleet
        ]
        self.view = _View(self, profiles(fleet))
        self.scrapes: list[EngineMetrics | tuple | None] = [None] * nb
        self.pending_scrapes: deque[tuple] = deque()
        # Callbacks the policy does not override are not called (nor their arguments built).
        hook = getattr(type(policy), "on_scrape", None)
        self.scrape_hook = None if hook is PolicyBase.on_scrape else policy.on_scrape
        hook = getattr(type(policy), "on_complete", None)
        self.complete_hook = None if hook is PolicyBase.on_complete else policy.on_complete
        self.arrival_s: list[float] = workload.arrival_s.tolist()
        self.heap: list[tuple] = []
        self.pushed = [-1] * nb
        # per request (router side)
        self.arr_ps = _to_ps(workload.arrival_s)
        self.backend = [-1] * n
        self.status = [-1] * n
        self.end_ps = [-1] * n
        self.err_u = workload.u.tolist()
        tiers = workload.tier.tolist()
        self.tier = tiers
        self.tier_names = [TIERS[t].name for t in range(len(TIERS))]
        self.ttft_slo = np.array([x.ttft_slo_ms for x in TIERS])[workload.tier].tolist()
        self.e2e_slo = np.array([x.e2e_slo_ms for x in TIERS])[workload.tier].tolist()
        self.extra_err = [0.0] * nb
        self.base_err = [s.base_error_rate for s in fleet]
        self.failed_mode = [-1] * nb
        # per tick / per scrape accumulators
        self.sent = [0] * nb
        self.fin = [0] * nb
        self.bad = [0] * nb
        self.failed = [0] * nb
        self.lat: list[list[float]] = [[] for _ in range(nb)]
        self.ok_ttft: list[list[float]] = [[] for _ in range(nb)]
        self.open: list[deque[int]] = [deque() for _ in range(nb)]
        self.scr_fin: list[list[int]] = [[] for _ in range(nb)]
        """Requests the engine finished since the last scrape (-1: failed)."""
        self.recent: list[deque[int]] = [deque(maxlen=config.recent) for _ in range(nb)]
        self.probe_no = 0
        self.probes: dict[int, tuple[int, float | None, float]] = {}
        self.ticks: list[SimTick] = []
        self.outcomes: list[tuple[int, int, float | None, float, bool]] = []
        self.learnt: list[int] = []
        """Requests whose outcome the router learnt since the last tick, in that order (their
        telemetry is computed at the tick, `Signals._fold`)."""
        self.tick_no = 0
        self.cascade_for = [0.0] * nb
        self.cascade_labels: list[dict[int, str]] = [{} for _ in range(nb)]
        self.cascaded: list[tuple[float, str]] = []
        self.idle_ttft = [idle_ttft_ms(s, int(np.median(workload.input_tokens))) if n else 0.0
                          for s in fleet]  # fmt: skip
        self.end_time_ps = round(workload.duration_s * PS)
        engine_cls = EventEngine if config.engine == "event" else StepEngine
        self.engines = [engine_cls(s, self.req, self._make_done(b)) for b, s in enumerate(fleet)]

    # -- plumbing ------------------------------------------------------------------------------
    def _push(self, key: int, tb: int, a: int = 0, b: int = 0) -> None:
        """An event of the run's own (chaos, probe, scrape, tick): `key` carries its class."""
        heapq.heappush(self.heap, (key, tb, a, b))

    def _sync(self, b: int) -> None:
        """Queue engine b's next boundary if it changed. An engine's entry is `(key, b)`; one
        whose time is no longer the engine's `next_ps` is stale and skipped when popped (the
        boundary moves later once run, so a duplicate of a live time runs once)."""
        nxt = self.engines[b].next_ps
        if nxt != self.pushed[b]:
            self.pushed[b] = nxt
            if nxt >= 0:
                heapq.heappush(self.heap, (nxt << 3 | _ENGINE, b))

    def _make_done(self, b: int) -> Callable[[int, int, int], None]:
        rtt = self.rtt[b]
        heap = self.heap
        push = heapq.heappush
        finished = self.scr_fin[b]
        recent = self.recent[b]

        def done(r: int, t: int, status: int) -> None:
            push(heap, ((t + rtt) << 3 | _DELIVER, r, status))
            # for the backend's own metrics (scrapes, probes)
            finished.append(r if status == OK else -1)
            if status == OK:
                recent.append(r)

        return done

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        for i, action in enumerate(self.plan.actions):
            t_s = action[0]
            self._push(round(t_s * PS) << 3 | _CHAOS, i, i)
        own = getattr(self.policy, "scrape_interval_s", None)
        scrape_ps = round((own if own else cfg.scrape_interval_s) * PS)
        tick_ps = round(cfg.tick_s * PS)
        self._push(scrape_ps << 3 | _SCRAPE, 0, _SCRAPE_TAKE)
        self._push(tick_ps << 3 | _TICK, 0)
        self.scrape_ps = scrape_ps
        self.tick_ps = tick_ps
        timeout_ps = round(cfg.timeout_s * PS)
        arr_ps = self.arr_ps
        if arr_ps and arr_ps[-1] + timeout_ps < _KEYS_IN_INT64:
            a = np.asarray(arr_ps, dtype=np.int64)
            akeys = (a << 3 | _ARRIVE).tolist()
            tkeys = ((a + timeout_ps) << 3 | _TIMEOUT).tolist()
        else:
            akeys = [t << 3 | _ARRIVE for t in arr_ps]
            tkeys = [(t + timeout_ps) << 3 | _TIMEOUT for t in arr_ps]
        n = len(akeys)
        ai = 0
        ti = 0  # the oldest request whose timeout may still fire (timeouts come in arrival order)
        heap = self.heap
        heappop, heappush = heapq.heappop, heapq.heappush
        view = self.view
        in_flight = view.in_flight
        engines = self.engines
        policy = self.policy
        choose = policy.choose
        req_inp = self.req.inp
        state = self.req.state
        w = self.w
        arrival_s = self.arrival_s
        prefix = list(w.prefix) if w.prefix is not None else None
        tier_names = self.tier_names
        tiers = self.tier
        ttft_slo, e2e_slo = self.ttft_slo, self.e2e_slo
        nb = len(engines)
        status = self.status
        backend = self.backend
        sent = self.sent
        opened = self.open
        err_u, base_err, extra_err = self.err_u, self.base_err, self.extra_err
        pushed = self.pushed
        finish = self._finish
        sync = self._sync
        end_ps = self.end_ps
        learnt = self.learnt
        hook = self.complete_hook
        new = object.__new__
        s_id, s_arr, s_inp, s_tier, s_ttft, s_e2e, s_hashes = _REQUEST_SLOTS
        while True:
            ka = akeys[ai] if ai < n else _INF
            while ti < ai and status[ti] >= 0:
                ti += 1
            kt = tkeys[ti] if ti < ai else _INF
            kx = ka if ka < kt else kt
            # The heap's events before the next arrival or timeout (responses only ever move
            # the next timeout later, so `kx` stays a safe bound while they run; the timeout
            # is checked again below).
            while heap and heap[0][0] < kx:
                x = heappop(heap)
                key = x[0]
                kind = key & 7
                t = key >> 3
                if kind == _ENGINE:
                    a = x[1]
                    if t != pushed[a]:
                        continue  # stale (`_sync`)
                    eng = engines[a]
                    eng.boundary(t)
                    nxt = eng.next_ps
                    pushed[a] = nxt
                    if nxt >= 0:
                        heappush(heap, (nxt << 3 | _ENGINE, a))
                    continue
                if kind == _DELIVER:
                    _, a, b = x
                    if status[a] < 0:
                        if hook is not None:
                            view.now_s = t / PS
                            finish(a, t, b)
                            continue
                        # `_finish` inlined: nothing reads the view's clock before the next
                        # event that sets it.
                        status[a] = b
                        end_ps[a] = t
                        in_flight[backend[a]] -= 1
                        learnt.append(a)
                    continue
                view.now_s = t / PS
                _, _, a, b = x
                if kind == _PROBE:
                    self._probe(a, b, t)
                elif kind == _SCRAPE:
                    self._scrape(a, b, t)
                elif kind == _TICK:
                    self._tick(t)
                else:
                    self._chaos(a, t)
            if kx == _INF:
                if heap:
                    continue
                break
            if ka < kt:
                r = ai
                ai += 1
                t = arr_ps[r]
                view.now_s = t / PS
                # RequestInfo(r, arrival_s[r], ...), slot by slot (`_REQUEST_SLOTS`)
                rq = new(RequestInfo)
                s_id(rq, r)
                s_arr(rq, arrival_s[r])
                s_inp(rq, req_inp[r])
                s_tier(rq, tier_names[tiers[r]])
                s_ttft(rq, ttft_slo[r])
                s_e2e(rq, e2e_slo[r])
                s_hashes(rq, prefix[r] if prefix is not None else ())
                b = choose(rq, view)
                if b.__class__ is not int or not 0 <= b < nb:
                    raise ValueError(
                        f"policy {getattr(policy, 'name', policy)!r} chose {b!r}; "
                        f"backends are 0..{nb - 1}"
                    )
                backend[r] = b
                in_flight[b] += 1
                sent[b] += 1
                opened[b].append(r)
                eng = engines[b]
                if err_u[r] < base_err[b] + extra_err[b]:
                    state[r] = 4
                    eng.on_done(r, t, ERROR)
                    continue
                eng.arrive(r, t)
                nxt = eng.next_ps
                if nxt != pushed[b]:  # `_sync` inlined
                    pushed[b] = nxt
                    if nxt >= 0:
                        heappush(heap, (nxt << 3 | _ENGINE, b))
                continue
            r = ti
            if status[r] >= 0:
                continue  # a response the heap delivered above finished it: the next timeout
            t = kt >> 3
            view.now_s = t / PS
            finish(r, t, TIMEOUT)
            b = backend[r]
            eng = engines[b]
            eng.abort(r, t)
            if eng.next_ps != pushed[b]:
                sync(b)

    def _finish(self, r: int, t: int, status: int) -> None:
        """The router learns request r's outcome at t."""
        self.status[r] = status
        self.end_ps[r] = t
        b = self.backend[r]
        self.view.in_flight[b] -= 1
        self.learnt.append(r)
        if self.complete_hook is not None:
            _, _, ttft, e2e, _ = self._outcome(r)
            out = self.req.out[r] if status == OK else 0
            done = Completion(
                r, b, self.arrival_s[r], t / PS, STATUSES[status], ttft, e2e, self.req.inp[r], out
            )
            self.complete_hook(done, self.view)


_REQUEST_SLOTS = tuple(RequestInfo.__dict__[f.name].__set__ for f in fields(RequestInfo))
"""Slot setters of `RequestInfo`, in the order of its fields: the run loop builds each request's
`RequestInfo` slot by slot (a frozen dataclass's `__init__` sets each field through
`object.__setattr__`, about twice the cost); the object is the same (equal, same type)."""

_KEYS_IN_INT64 = 1 << 59
"""Event keys (`time << 3 | class`) of times below this fit in an int64: built by numpy."""


def _to_ps(seconds: np.ndarray) -> list[int]:
    """Seconds as integer picoseconds, `round(float(t) * PS)` for each (numpy's rint rounds
    half to even as `round` does; beyond int64, one by one)."""
    if seconds.size and float(np.max(np.abs(seconds))) * PS >= _KEYS_IN_INT64:
        return [round(float(t) * PS) for t in seconds]
    return np.rint(seconds.astype(np.float64) * float(PS)).astype(np.int64).tolist()


def simulate(
    workload: Workload,
    fleet: Sequence[EngineSpec],
    policy: RoutingPolicy,
    *,
    plan: ChaosPlan | None = None,
    config: SimConfig | None = None,
    on_tick: Callable[[SimTick], None] | None = None,
) -> SimResult:
    """Run `policy` over `workload` on `fleet` with the chaos in `plan`; every request gets an
    outcome (requests still running at the end are served to completion or timed out)."""
    fleet = tuple(fleet)
    cfg = config or SimConfig()
    plan = plan or ChaosPlan.empty(len(fleet))
    if len(plan.labels) != len(fleet):
        raise ValueError("the chaos plan was compiled for another fleet")
    run = _Run(workload, fleet, policy, plan, cfg, on_tick)
    run.run()
    return _result(run, getattr(policy, "name", type(policy).__name__))


def _result(run: _Run, policy_name: str) -> SimResult:
    w = run.w
    n = len(w)
    backend = np.asarray(run.backend, dtype=np.int16)
    status = np.asarray(run.status, dtype=np.int8)
    arr = np.asarray(run.arr_ps, dtype=np.float64)
    first = np.asarray(run.req.first_ps, dtype=np.float64)
    done = np.asarray(run.req.done_ps, dtype=np.float64)
    end = np.asarray(run.end_ps, dtype=np.float64)
    rtt = np.asarray(run.rtt, dtype=np.float64)[backend] if n else np.empty(0)
    has_first = first >= 0
    ttft = np.where(has_first, (first - arr + rtt) / 1e9, np.nan)
    e2e = (end - arr) / 1e9
    ok = status == OK
    out = w.output_tokens.astype(np.float64)
    multi = ok & (out > 1)
    tpot = np.full(n, np.nan)
    tpot[multi] = (done[multi] - first[multi]) / 1e9 / (out[multi] - 1.0)
    cin = np.array([s.cost_per_1k_input for s in run.fleet])[backend] if n else np.empty(0)
    cout = np.array([s.cost_per_1k_output for s in run.fleet])[backend] if n else np.empty(0)
    cost = np.where(ok, (cin * w.input_tokens + cout * w.output_tokens) / 1e3, 0.0)
    return SimResult(
        workload=w.name,
        policy=policy_name,
        backends=run.names,
        arrival_s=w.arrival_s,
        input_tokens=w.input_tokens,
        output_tokens=w.output_tokens,
        tier=w.tier,
        backend=backend,
        status=status,
        ttft_ms=ttft,
        e2e_ms=e2e,
        tpot_ms=tpot,
        cost=cost,
        duration_s=w.duration_s,
        ticks=run.ticks,
        cascaded=run.cascaded,
    )


def describe(result: SimResult) -> dict[str, Any]:
    """Counts by status, for logs."""
    return {s: int((result.status == i).sum()) for i, s in enumerate(STATUSES)}
