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
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tools.routers.base import (
    STATUSES,
    BackendProfile,
    Completion,
    EngineMetrics,
    ProbeReply,
    RequestInfo,
    RoutingPolicy,
)
from tools.sim.chaos import (
    CASCADE_SUSTAIN_S,
    ERROR_RATE,
    FACTOR,
    FAIL,
    RECOVER,
    ChaosPlan,
)
from tools.sim.engine import ERROR, OK, EventEngine, Requests
from tools.sim.spec import EngineSpec, idle_ttft_ms
from tools.sim.stepwise import StepEngine
from tools.sim.workload import TIERS, Workload
from tools.telemetry import TICK_SECONDS, TelemetryPoint

PS = 1_000_000_000_000
"""Picoseconds per second."""
_INF = 1 << 200
_CHAOS, _ARRIVE, _TIMEOUT, _DELIVER, _PROBE, _SCRAPE, _TICK, _ENGINE = range(8)
_SCRAPE_TAKE, _SCRAPE_SHOW = 0, 1


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
class SimTick:
    """One telemetry tick of a run (see the module docstring)."""

    index: int
    ts: float
    """Unix seconds at the end of the tick."""
    t_s: float
    """Seconds from the start to the start of the tick."""
    arrivals: int
    telemetry: list[TelemetryPoint]
    counts: dict[str, int]
    """Requests routed to each backend during the tick."""
    chaos: dict[str, tuple[str, ...]]
    finished: dict[str, int]
    violated: dict[str, int]
    """Of the requests that finished on each backend this tick, those that violated their SLO."""
    ttft_ms: dict[str, list[float]] = field(default_factory=dict)
    """TTFT of the requests that finished OK on each backend this tick (router side)."""
    failed: dict[str, int] = field(default_factory=dict)
    outcomes: list[tuple[int, int, float | None, float, bool]] = field(default_factory=list)
    """(request, status, TTFT ms or None, end-to-end ms, violated) of every request whose
    outcome the router learnt during the tick, in that order."""

    def violation_prob(self, backend: str, ttft_slo_ms: float) -> float:
        """Share of this tick's finished requests on `backend` that failed or whose TTFT was
        over `ttft_slo_ms` (the tick's empirical chance of missing that SLO there)."""
        n = self.finished.get(backend, 0)
        if n == 0:
            return 1.0 if self.failed.get(backend, 0) else 0.0
        slow = sum(1 for x in self.ttft_ms.get(backend, ()) if x > ttft_slo_ms)
        return (slow + self.failed.get(backend, 0)) / n


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


class _View:
    """The `RouterView` a policy reads (live, maintained by the run loop)."""

    __slots__ = ("_run", "backends", "in_flight", "now_s")

    def __init__(self, run: _Run, backends: tuple[BackendProfile, ...]) -> None:
        self._run = run
        self.backends = backends
        self.in_flight = [0] * len(backends)
        self.now_s = 0.0

    def last_scrape(self, backend: int) -> EngineMetrics | None:
        return self._run.scrapes[backend]

    def send_probe(self, backend: int) -> None:
        self._run.send_probe(backend)


def profiles(fleet: Sequence[EngineSpec]) -> tuple[BackendProfile, ...]:
    return tuple(
        BackendProfile(s.name, s.cost_per_1k_input, s.cost_per_1k_output, s.gpu) for s in fleet
    )


def _quantiles(xs: list[float]) -> tuple[float, float]:
    s = sorted(xs)
    n = len(s)
    return s[(n - 1) // 2], s[min(n - 1, math.ceil(0.95 * n) - 1)]


class _Run:
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
        self.scrapes: list[EngineMetrics | None] = [None] * nb
        self.pending_scrapes: deque[EngineMetrics] = deque()
        self.heap: list[tuple] = []
        self.pushed = [-1] * nb
        self.version = [0] * nb
        # per request (router side)
        self.arr_ps = [round(float(t) * PS) for t in workload.arrival_s]
        self.backend = [-1] * n
        self.status = [-1] * n
        self.end_ps = [-1] * n
        self.err_u = workload.u.tolist()
        tiers = workload.tier.tolist()
        self.tier = tiers
        self.tier_names = [TIERS[t].name for t in range(len(TIERS))]
        self.ttft_slo = [TIERS[t].ttft_slo_ms for t in tiers]
        self.e2e_slo = [TIERS[t].e2e_slo_ms for t in tiers]
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
    def _push(self, key: int, tb: int, kind: int, a: int = 0, b: int = 0) -> None:
        heapq.heappush(self.heap, (key, tb, kind, a, b))

    def _sync(self, b: int) -> None:
        nxt = self.engines[b].next_ps
        if nxt != self.pushed[b]:
            self.pushed[b] = nxt
            self.version[b] += 1
            if nxt >= 0:
                self._push(nxt << 3 | _ENGINE, b, _ENGINE, b, self.version[b])

    def _make_done(self, b: int) -> Callable[[int, int, int], None]:
        rtt = self.rtt[b]
        heap = self.heap
        push = heapq.heappush
        finished = self.scr_fin[b]
        recent = self.recent[b]

        def done(r: int, t: int, status: int) -> None:
            push(heap, ((t + rtt) << 3 | _DELIVER, r, _DELIVER, r, status))
            # for the backend's own metrics (scrapes, probes)
            finished.append(r if status == OK else -1)
            if status == OK:
                recent.append(r)

        return done

    def send_probe(self, b: int) -> None:
        """A probe reads the backend's state now and answers one probe delay later (a hung
        backend never answers)."""
        if self.failed_mode[b] == 0:
            return
        self.probe_no += 1
        running, waiting, _ = self.engines[b].snapshot()
        rec = self.recent[b]
        lat = None
        if rec:
            done, arr = self.req.done_ps, self.arr_ps
            lat = sorted((done[r] - arr[r]) / 1e9 for r in rec)[(len(rec) - 1) // 2]
        now = self.view.now_s
        self.probes[self.probe_no] = (running + waiting, lat, now)
        t = round(now * PS) + self.probe_rtt[b]
        self._push(t << 3 | _PROBE, self.probe_no, _PROBE, b, self.probe_no)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.cfg
        for i, action in enumerate(self.plan.actions):
            t_s = action[0]
            self._push(round(t_s * PS) << 3 | _CHAOS, i, _CHAOS, i, 0)
        own = getattr(self.policy, "scrape_interval_s", None)
        scrape_ps = round((own if own else cfg.scrape_interval_s) * PS)
        tick_ps = round(cfg.tick_s * PS)
        self._push(scrape_ps << 3 | _SCRAPE, 0, _SCRAPE, _SCRAPE_TAKE, 0)
        self._push(tick_ps << 3 | _TICK, 0, _TICK, 0, 0)
        self.scrape_ps = scrape_ps
        self.tick_ps = tick_ps
        timeout_ps = round(cfg.timeout_s * PS)
        arr_ps = self.arr_ps
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
        arrival_s = w.arrival_s.tolist()
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
        version, pushed = self.version, self.pushed
        finish = self._finish
        while True:
            ka = akeys[ai] if ai < n else _INF
            while ti < ai and status[ti] >= 0:
                ti += 1
            kt = tkeys[ti] if ti < ai else _INF
            kh = heap[0][0] if heap else _INF
            if ka < kt and ka < kh:
                r = ai
                ai += 1
                t = arr_ps[r]
                view.now_s = t / PS
                b = choose(
                    RequestInfo(
                        r,
                        arrival_s[r],
                        req_inp[r],
                        tier_names[tiers[r]],
                        ttft_slo[r],
                        e2e_slo[r],
                        prefix[r] if prefix is not None else (),
                    ),
                    view,
                )
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
                if nxt != pushed[b]:
                    pushed[b] = nxt
                    version[b] += 1
                    if nxt >= 0:
                        heappush(heap, (nxt << 3 | _ENGINE, b, _ENGINE, b, version[b]))
                continue
            if kt < kh:
                r = ti
                t = kt >> 3
                view.now_s = t / PS
                finish(r, t, 1)
                b = backend[r]
                eng = engines[b]
                eng.abort(r, t)
                nxt = eng.next_ps
                if nxt != pushed[b]:
                    pushed[b] = nxt
                    version[b] += 1
                    if nxt >= 0:
                        heappush(heap, (nxt << 3 | _ENGINE, b, _ENGINE, b, version[b]))
                continue
            if kh == _INF:
                break
            key, _, kind, a, b = heappop(heap)
            if kind == _ENGINE:
                if b != version[a]:
                    continue
                eng = engines[a]
                eng.boundary(key >> 3)
                nxt = eng.next_ps
                pushed[a] = nxt
                version[a] += 1
                if nxt >= 0:
                    heappush(heap, (nxt << 3 | _ENGINE, a, _ENGINE, a, version[a]))
                continue
            t = key >> 3
            view.now_s = t / PS
            if kind == _DELIVER:
                if status[a] < 0:
                    finish(a, t, b)
            elif kind == _PROBE:
                self._probe(a, b, t)
            elif kind == _SCRAPE:
                self._scrape(a, b, t)
            elif kind == _TICK:
                self._tick(t)
            else:
                self._chaos(a, t)

    def _finish(self, r: int, t: int, status: int) -> None:
        """The router learns request r's outcome at t."""
        b = self.backend[r]
        self.status[r] = status
        self.end_ps[r] = t
        view = self.view
        view.in_flight[b] -= 1
        arr = self.arr_ps[r]
        first = self.req.first_ps[r]
        ttft = (first - arr + self.rtt[b]) / 1e9 if first >= 0 else None
        e2e = (t - arr) / 1e9
        self.fin[b] += 1
        violated = status != OK or (ttft is not None and ttft > self.ttft_slo[r])
        violated = violated or e2e > self.e2e_slo[r]
        if violated:
            self.bad[b] += 1
        self.outcomes.append((r, status, ttft, e2e, violated))
        if status == OK:
            self.ok_ttft[b].append(ttft)
            self.lat[b].append(ttft)
        else:
            self.failed[b] += 1
            self.lat[b].append(ttft if ttft is not None else e2e)
        out = self.req.out[r] if status == OK else 0
        done = Completion(
            r, b, self.w.arrival_s[r], t / PS, STATUSES[status], ttft, e2e, self.req.inp[r], out
        )
        self.policy.on_complete(done, view)

    def _probe(self, b: int, no: int, t: int) -> None:
        in_flight, lat, sent = self.probes.pop(no)
        self.policy.on_probe(ProbeReply(b, sent, t / PS, in_flight, lat), self.view)

    def _scrape(self, stage: int, b: int, t: int) -> None:
        if stage == _SCRAPE_TAKE:
            stale = round(self.cfg.scrape_staleness_s * PS)
            for i, eng in enumerate(self.engines):
                if self.failed_mode[i] == 0:
                    continue  # the scrape of a hung backend times out: the last one stays
                running, waiting, kv = eng.snapshot()
                fin = self.scr_fin[i]
                first, done, arr = self.req.first_ps, self.req.done_ps, self.arr_ps
                ok = [r for r in fin if r >= 0]
                t50 = t95 = e50 = e95 = None
                if ok:
                    t50, t95 = _quantiles([(first[r] - arr[r]) / 1e9 for r in ok])
                    e50, e95 = _quantiles([(done[r] - arr[r]) / 1e9 for r in ok])
                n_fin = len(fin)
                m = EngineMetrics(
                    i, t / PS, running, waiting, kv, t50, t95, e50, e95, n_fin, n_fin - len(ok)
                )
                fin.clear()
                if stale == 0:
                    self._show(m)
                else:
                    self.pending_scrapes.append(m)
                    self._push((t + stale) << 3 | _SCRAPE, 1 + i, _SCRAPE, _SCRAPE_SHOW, i)
            nxt = t + self.scrape_ps
            if nxt <= self.end_time_ps:
                self._push(nxt << 3 | _SCRAPE, 0, _SCRAPE, _SCRAPE_TAKE, 0)
            return
        self._show(self.pending_scrapes.popleft())

    def _show(self, m: EngineMetrics) -> None:
        self.scrapes[m.backend] = m
        self.policy.on_scrape(m, self.view)

    def _chaos(self, i: int, t: int) -> None:
        _, b, act, value = self.plan.actions[i]
        eng = self.engines[b]
        if act == FACTOR:
            eng.set_factor(value, t)
        elif act == ERROR_RATE:
            self.extra_err[b] = value
        elif act == FAIL:
            self.failed_mode[b] = int(value)
            eng.fail(int(value), t)
        elif act == RECOVER:
            self.failed_mode[b] = -1
            eng.recover(t)
        self._sync(b)

    def _tick(self, t: int) -> None:
        cfg = self.cfg
        k = self.tick_no
        self.tick_no += 1
        ts = cfg.start_ts + t / PS
        telemetry = []
        counts, finished, violated, chaos, ok_ttft, failed = {}, {}, {}, {}, {}, {}
        arrivals = 0
        for b, name in enumerate(self.names):
            lat = self.lat[b]
            inflight = self.view.in_flight[b]
            if lat:
                p50, p95 = _quantiles(lat)
            else:
                q = self.open[b]
                while q and self.status[q[0]] >= 0:
                    q.popleft()
                if q:
                    p50 = p95 = (t - self.arr_ps[q[0]]) / 1e9
                elif self.failed_mode[b] == 0:
                    p50 = p95 = cfg.timeout_s * 1000.0
                else:
                    p50 = p95 = self.idle_ttft[b]
            fin = self.fin[b]
            # No request finished: a health probe's answer (fails while the backend is down).
            err = self.failed[b] / fin if fin else float(self.failed_mode[b] >= 0)
            telemetry.append(
                TelemetryPoint(ts, name, self.sent[b] / cfg.tick_s, p50, p95, err, float(inflight))
            )
            counts[name] = self.sent[b]
            arrivals += self.sent[b]
            finished[name] = fin
            violated[name] = self.bad[b]
            ok_ttft[name] = self.ok_ttft[b]
            failed[name] = self.failed[b]
            kinds = self.plan.labels[b].get(k, ())
            if k in self.cascade_labels[b]:
                kinds = (*kinds, "cascading_failure")
            chaos[name] = kinds
            self.sent[b] = self.fin[b] = self.bad[b] = self.failed[b] = 0
            self.lat[b] = []
            self.ok_ttft[b] = []
        self._cascade(t, k)
        tick = SimTick(
            k, ts, (t - self.tick_ps) / PS, arrivals, telemetry, counts, chaos, finished,
            violated, ok_ttft, failed, self.outcomes,
        )  # fmt: skip
        self.outcomes = []
        self.ticks.append(tick)
        if self.policy_tick is not None:
            self.policy_tick(tick)
        if self.on_tick is not None:
            self.on_tick(tick)
        nxt = t + self.tick_ps
        if nxt <= self.end_time_ps:
            self._push(nxt << 3 | _TICK, 0, _TICK, 0, 0)

    def _cascade(self, t: int, k: int) -> None:
        """Neighbours saturated for CASCADE_SUSTAIN_S during a cascading failure fail too."""
        t_s = t / PS
        for start, end, threshold, origin, mode in self.plan.cascades:
            if not start <= t_s < end:
                continue
            for b, eng in enumerate(self.engines):
                if b == origin or self.failed_mode[b] >= 0:
                    continue
                _, waiting, kv = eng.snapshot()
                if waiting > 0 or kv >= threshold:
                    self.cascade_for[b] += self.cfg.tick_s
                else:
                    self.cascade_for[b] = 0.0
                if self.cascade_for[b] >= CASCADE_SUSTAIN_S:
                    self.failed_mode[b] = mode
                    eng.fail(mode, t)
                    self._sync(b)
                    self.cascaded.append((t_s, self.names[b]))
                    for j in range(k + 1, math.ceil(end / self.cfg.tick_s - 1e-9)):
                        self.cascade_labels[b][j] = "cascading_failure"
                    end_ps = round(end * PS)
                    if end_ps < self.end_time_ps:
                        self._recover_at(end_ps, b)

    def _recover_at(self, t: int, b: int) -> None:
        self.plan = ChaosPlan(
            (*self.plan.actions, (t / PS, b, RECOVER, float(self.failed_mode[b]))),
            self.plan.labels,
            self.plan.cascades,
        )
        i = len(self.plan.actions) - 1
        self._push(t << 3 | _CHAOS, i, _CHAOS, i, 0)


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
