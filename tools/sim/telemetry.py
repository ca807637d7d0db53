"""What a router sees during a run, and what each tick reports (the run loop's signals).

A policy reads a `RouterView` (`_View`): the router's own requests in flight, engine metrics
scraped every interval (vLLM's names) and delivered `scrape_staleness_s` late, a hung backend's
scrape timing out (the last one stays, its age growing), and probe replies one probe delay after
sending (a hung backend never answers). Every tick the run reports a `SimTick`: per backend the
telemetry a router computes from its own observations (requests sent per second, p50/p95 of the
time to first token, or to failure, of the requests that finished; their error rate; requests
in flight), with a health probe's answer when nothing finished (the age of the oldest request
still out, the timeout for a hung backend, the idle TTFT otherwise); the chaos acting on each
backend; and what the tick's requests met. Cascading failures are judged at the ticks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tools.routers.base import BackendProfile, EngineMetrics, ProbeReply
from tools.sim.chaos import CASCADE_SUSTAIN_S, ERROR_RATE, FACTOR, FAIL, RECOVER, ChaosPlan
from tools.sim.engine import OK, TIMEOUT
from tools.sim.spec import EngineSpec
from tools.telemetry import TelemetryPoint

if TYPE_CHECKING:
    from tools.sim.run import _Run

PS = 1_000_000_000_000
"""Picoseconds per second."""
_INF = 1 << 200
_CHAOS, _ARRIVE, _TIMEOUT, _DELIVER, _PROBE, _SCRAPE, _TICK, _ENGINE = range(8)
_SCRAPE_TAKE, _SCRAPE_SHOW = 0, 1


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


class _View:
    """The `RouterView` a policy reads (live, maintained by the run loop)."""

    __slots__ = ("_run", "backends", "in_flight", "now_s")

    def __init__(self, run: _Run, backends: tuple[BackendProfile, ...]) -> None:
        self._run = run
        self.backends = backends
        self.in_flight = [0] * len(backends)
        self.now_s = 0.0

    def last_scrape(self, backend: int) -> EngineMetrics | None:
        m = self._run.scrapes[backend]
        if m.__class__ is tuple:  # taken but not read yet (`Signals._show`)
            m = self._run.scrapes[backend] = _metrics(self._run, *m)
        return m

    def send_probe(self, backend: int) -> None:
        self._run.send_probe(backend)


def profiles(fleet: Sequence[EngineSpec]) -> tuple[BackendProfile, ...]:
    return tuple(
        BackendProfile(s.name, s.cost_per_1k_input, s.cost_per_1k_output, s.gpu) for s in fleet
    )


def _metrics(
    run: _Run, b: int, t: int, running: int, waiting: int, kv: float, fin: list[int]
) -> EngineMetrics:
    """A scrape of backend b taken at t (`fin`: the requests finished since the previous one,
    -1 for a failure)."""
    first, done, arr = run.req.first_ps, run.req.done_ps, run.arr_ps
    ok = [r for r in fin if r >= 0]
    t50 = t95 = e50 = e95 = None
    if ok:
        t50, t95 = _quantiles([(first[r] - arr[r]) / 1e9 for r in ok])
        e50, e95 = _quantiles([(done[r] - arr[r]) / 1e9 for r in ok])
    n, errors = len(fin), len(fin) - len(ok)
    return EngineMetrics(b, t / PS, running, waiting, kv, t50, t95, e50, e95, n, errors)


def _quantiles(xs: list[float]) -> tuple[float, float]:
    s = sorted(xs)
    n = len(s)
    return s[(n - 1) // 2], s[min(n - 1, math.ceil(0.95 * n) - 1)]


class Signals:
    """The run loop's scrapes, probes, chaos actions, ticks and cascades (mixed into `_Run`)."""

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
        self._push(t << 3 | _PROBE, self.probe_no, b, self.probe_no)

    def _probe(self, b: int, no: int, t: int) -> None:
        in_flight, lat, sent = self.probes.pop(no)
        self.policy.on_probe(ProbeReply(b, sent, t / PS, in_flight, lat), self.view)

    def _scrape(self, stage: int, b: int, t: int) -> None:
        if stage == _SCRAPE_TAKE:
            stale = round(self.cfg.scrape_staleness_s * PS)
            for i, eng in enumerate(self.engines):
                if self.failed_mode[i] == 0:
                    continue  # the scrape of a hung backend times out: the last one stays
                fin = self.scr_fin[i]
                m = (i, t, *eng.snapshot(), fin[:])
                fin.clear()
                if stale == 0:
                    self._show(m)
                else:
                    self.pending_scrapes.append(m)
                    self._push((t + stale) << 3 | _SCRAPE, 1 + i, _SCRAPE_SHOW, i)
            nxt = t + self.scrape_ps
            if nxt <= self.end_time_ps:
                self._push(nxt << 3 | _SCRAPE, 0, _SCRAPE_TAKE)
            return
        self._show(self.pending_scrapes.popleft())

    def _show(self, m: tuple) -> None:
        """Deliver a scrape; its metrics are built when first read (most policies read none)."""
        if self.scrape_hook is None:
            self.scrapes[m[0]] = m
            return
        metrics = self.scrapes[m[0]] = _metrics(self, *m)
        self.scrape_hook(metrics, self.view)

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

    def _outcome(self, r: int) -> tuple[int, int, float | None, float, bool]:
        """(backend, status, TTFT ms or None, end-to-end ms, violated) of request r, whose
        outcome the router has learnt."""
        b = self.backend[r]
        status = self.status[r]
        t = self.end_ps[r]
        arr = self.arr_ps[r]
        first = self.req.first_ps[r]
        if status == TIMEOUT and first >= t:
            # Dated ahead by the engine (`EventEngine._plan_head`) or finished after the
            # router gave up: not out when the router timed it out.
            first = -1
        e2e = (t - arr) / 1e9
        if status == OK:
            ttft = (first - arr + self.rtt[b]) / 1e9
            return b, status, ttft, e2e, ttft > self.ttft_slo[r] or e2e > self.e2e_slo[r]
        ttft = (first - arr + self.rtt[b]) / 1e9 if first >= 0 else None
        return b, status, ttft, e2e, True

    def _fold(self) -> None:
        """The tick's per-backend telemetry from the outcomes learnt since the last one."""
        fin, bad, failed, lat, ok_ttft = self.fin, self.bad, self.failed, self.lat, self.ok_ttft
        outcomes = self.outcomes
        outcome = self._outcome
        for r in self.learnt:
            b, status, ttft, e2e, violated = outcome(r)
            fin[b] += 1
            if status == OK:
                ok_ttft[b].append(ttft)
                lat[b].append(ttft)
            else:
                failed[b] += 1
                lat[b].append(ttft if ttft is not None else e2e)
            if violated:
                bad[b] += 1
            outcomes.append((r, status, ttft, e2e, violated))
        self.learnt.clear()

    def _tick(self, t: int) -> None:
        self._fold()
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
            self._push(nxt << 3 | _TICK, 0)

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
        self._push(t << 3 | _CHAOS, i, i)
