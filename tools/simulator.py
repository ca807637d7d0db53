"""Fleet simulator: backends as time-varying queues, driven by the caller's routing.

How a backend is modelled (`tools.fleet` holds the stationary G/G/c curve, Allen-Cunneen):

* **Time.** Load changes every 10 s tick and a queue does not jump to its steady state, so the
  mean number in system x(t) follows the *pointwise stationary fluid flow approximation*
  (PSFFA; Rothkopf & Oren 1979, Wang, Chen & Georganas 1996): dx/dt = lambda - c·mu·rho(x),
  where rho(x) inverts the stationary curve x = G(rho) = c·rho + Lq(rho). One implicit Euler
  step per tick (stable in the stiff low-load case), solved exactly on a precomputed grid of G.
  Below capacity x settles to the stationary value at the queue's relaxation speed (about a
  minute at 95% on the primary); above it x grows by (lambda - c·mu)·10 s per tick and drains
  at the spare capacity afterwards: queues have memory.
* **Offered rate.** The queues respond to the offered rate. A tick's arrival count carries
  Poisson noise that the stationary curve already contains, so when the caller routes exactly
  the tick's arrivals each backend's share is applied to the *expected* count of the tick
  (bursts and surges included); otherwise the assigned counts are taken as the rate.
* **Latency.** A request's latency is overhead + service + wait in queue + the drain time of any
  backlog beyond the grid (rho > 0.995), spread uniformly when the backlog moves within the tick.
  The wait's mean is Allen-Cunneen's; its squared CV about the mean, 2/C - 1 (zero with
  probability 1 - Erlang C, else exponential), is split into a between-tick part (the queue's
  level this tick, a gamma variable with mean 1, AR(1) across ticks) and a within-tick part. The
  between share is the variance of a 10 s average of a process with the queue's integrated
  correlation time, 2(x - 1 + e^-x)/x² with x = 10 s / (TAU_K · relaxation time), relaxation
  time 1 / (c·mu·(1 - sqrt(rho))²). The tick's per-request latency is the lognormal matched to
  the resulting mean and variance (`BackendTick.mu`, `.sigma`).
* **Calibration.** TAU_K and PHI_K were fitted against a discrete-event M/G/c simulation of each
  default backend (12 h of requests at 50-95% utilisation, lognormal service). Across the 20
  cases, per-tick p50 medians agree within 5% RMS, per-tick p95 medians within 11%, per-tick p95
  means within 9%, lag-1 autocorrelation within 0.06; the model's per-tick p95 is *noisier*
  than the discrete-event one at 90-95% (CV 0.65-0.95 against 0.42-0.67). tests/test_simulator.py
  keeps an M/G/1 discrete-event check.
* **Overload.** Every request is capped at the backend's timeout (30 s by default) and a timed
  out request is an error. Admission control sheds arrivals (fast errors) once the backlog would
  take QUEUE_LIMIT (half) of the timeout to drain, so the state stays bounded: no NaN or inf.
* **Other noise.** A slow AR(1) wander of service speed (1.5% sd, 5 min correlation). Telemetry
  p50/p95 are *measured* quantiles of the tick's requests: lognormal quantiles plus the
  sample-quantile error sqrt(p(1-p)/n)/phi(z_p) (log-sd units), correlated as order statistics
  are, so fewer requests mean noisier quantiles; the error rate is a binomial count. A tick with
  no traffic reports one health-probe request, so a dead backend stays visible after traffic
  leaves it.
* **Failure.** A failed backend hangs: every request times out (error rate 1, p50 = p95 = the
  timeout) and its queue is lost; it restarts empty.

Routing feeds back: `step(assigned)` takes how many requests the caller sent to each backend
this tick, and that load is what the queues serve. Arrivals and noise draw from separate seeded
streams with a fixed number of draws per tick, so runs of one scenario under different routing
policies see the same arrivals and the same noise (common random numbers).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tools.chaos import (
    ANOMALY_ERROR_RATE,
    CASCADE_SUSTAIN_S,
    CHAOS_KINDS,
    ChaosEvent,
    Scenario,
)
from tools.fleet import DEFAULT_FLEET, Z95, BackendSpec, erlang_c
from tools.telemetry import TICK_SECONDS, TelemetryPoint
from tools.traffic import TrafficModel

RHO_MAX = 0.995
"""Top of the stationary grid; load beyond it accumulates as a fluid backlog."""
_GRID_POINTS = 400
ENV_SD = 0.015
_ENV_PHI = math.exp(-TICK_SECONDS / 300.0)
_SQRT2 = math.sqrt(2.0)
# Sample-quantile standard errors for n = 1, in standard-normal units: sqrt(p(1-p)) / phi(z_p).
_SE50 = math.sqrt(0.25) / (1.0 / math.sqrt(2.0 * math.pi))
_SE95 = math.sqrt(0.05 * 0.95) / (math.exp(-(Z95**2) / 2.0) / math.sqrt(2.0 * math.pi))
# Asymptotic correlation of the sample median and 95th percentile.
_RHO_Q = math.sqrt(0.5 * 0.05 / (0.95 * 0.5))
_RHO_Q_C = math.sqrt(1.0 - _RHO_Q**2)
_SURGE_RAMP_S = 60.0
TAU_K = 0.2
"""Integrated correlation time of the wait, in relaxation times (calibrated, see above)."""
PHI_K = 0.33
"""Tick-to-tick persistence of the queue level: phi = exp(-PHI_K · x) (calibrated)."""
_NZ = 5
"""Standard normals drawn per backend per tick: speed, queue level, p50, p95, errors."""
QUEUE_LIMIT = 0.5
"""Arrivals are shed once the backlog would take this share of the timeout to drain."""
X_EMPTY = 1e-9
"""Mean number in system below which a queue is empty. The implicit step only shrinks an idle
queue geometrically (by 1 + k/c per tick, k = 10 s of capacity), never to zero, so without this
floor an idle backend's level sinks into subnormal floats within a few hundred ticks."""
CW_MIN = 1e-12
"""Probability of waiting below which the wait is zero. The wait's squared CV about its mean,
2/C - 1, overflows as C underflows (inf - inf is NaN downstream); the mean and variance the wait
would add here are below 1e-12 of a service time."""


def _binomial(n: int, p: float, z: float) -> int:
    """A Binomial(n, p) draw driven by one standard normal `z` (so draws stay aligned).

    Exact inversion of the CDF at Phi(z) when the expected minority count is under 10,
    the normal approximation otherwise.
    """
    if p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    flip = p > 0.5
    if flip:
        p = 1.0 - p
    m = n * p
    if m < 10.0:
        u = 0.5 * math.erfc(-z / _SQRT2)
        q = 1.0 - p
        pmf = q**n
        cdf = pmf
        ratio = p / q
        k = 0
        while u > cdf and k < n:
            pmf *= ratio * (n - k) / (k + 1)
            k += 1
            cdf += pmf
    else:
        k = min(n, max(0, round(m + math.sqrt(m * (1.0 - p)) * z)))
    return n - k if flip else k


@dataclass(frozen=True, slots=True)
class BackendTick:
    """One backend over one tick: measured telemetry plus the true latency distribution.

    `p50_ms`, `p95_ms`, `error_rate` are what monitoring measured (noisy). `mu`, `sigma`
    describe the lognormal latency (ms) of a request admitted during the tick, capped at
    `timeout_ms`; `error_prob` is the true probability that a request routed here failed
    (shed, timed out, or an ordinary error). `chaos` lists the chaos kinds acting on the
    backend this tick (an anomaly burst only on the ticks where a burst is present).
    """

    name: str
    rps: float
    p50_ms: float
    p95_ms: float
    error_rate: float
    in_flight: float
    failed: bool
    mu: float
    sigma: float
    error_prob: float
    utilisation: float
    """Offered load / effective capacity (can exceed 1)."""
    requests: float
    shed_frac: float
    other_error_prob: float
    """Probability that an admitted request fails for reasons other than a timeout."""
    timeout_ms: float
    chaos: tuple[str, ...] = ()

    def frac_above(self, sla_ms: float) -> float:
        """Probability that an admitted request's latency exceeds `sla_ms`."""
        if sla_ms >= self.timeout_ms:
            return 0.0
        if sla_ms <= 0.0:
            return 1.0
        z = math.log(sla_ms) - self.mu
        if self.sigma <= 0.0:
            return 1.0 if z < 0.0 else 0.0
        return 0.5 * math.erfc(z / (self.sigma * _SQRT2))

    def violation_prob(self, sla_ms: float) -> float:
        """Probability that a request routed here errs or exceeds `sla_ms`."""
        q = self.frac_above(sla_ms)
        ok = (1.0 - q) * (1.0 - self.other_error_prob)
        return self.shed_frac + (1.0 - self.shed_frac) * (1.0 - ok)

    def quantile(self, q: float) -> float:
        """The q-quantile (0 < q < 1) of the true latency distribution, ms."""
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {q!r}")
        from statistics import NormalDist

        return min(math.exp(self.mu + self.sigma * NormalDist().inv_cdf(q)), self.timeout_ms)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Latencies (ms) of `n` requests admitted during the tick, capped at the timeout."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if self.sigma <= 0.0:
            return np.full(n, min(math.exp(self.mu), self.timeout_ms))
        return np.minimum(rng.lognormal(self.mu, self.sigma, n), self.timeout_ms)


@dataclass(slots=True)
class TickResult:
    ts: float
    """Unix seconds at the end of the tick."""
    t_s: float
    """Seconds from the scenario start to the start of the tick."""
    arrivals: int
    telemetry: list[TelemetryPoint]
    backends: dict[str, BackendTick] = field(default_factory=dict)


@functools.lru_cache(maxsize=64)
def _stationary_grid(servers: int, k_ac: float) -> tuple[list[float], list[float], list[float]]:
    """rho, Erlang C and G(rho) = c·rho + Lq(rho) on a grid dense near rho = 1."""
    u = np.linspace(0.0, -math.log(1.0 - RHO_MAX), _GRID_POINTS)
    rho = -np.expm1(-u)
    rho[-1] = RHO_MAX
    cw = np.array([erlang_c(servers, float(r)) for r in rho])
    g = servers * rho + cw * rho / (1.0 - rho) * k_ac
    return rho.tolist(), cw.tolist(), g.tolist()


class _Queue:
    """A backend's precomputed stationary curve and its dynamic state."""

    __slots__ = (
        "C",
        "G",
        "R",
        "cap",
        "eps_env",
        "eps_q",
        "es_ms",
        "g_last",
        "k_ac",
        "last",
        "oh_ms",
        "seg",
        "spec",
        "timeout_ms",
        "timeout_s",
        "vs_ms2",
        "wb_prev",
        "x",
    )

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        c = spec.servers
        self.k_ac = (1.0 + spec.service_scv) / 2.0
        self.R, self.C, self.G = _stationary_grid(c, self.k_ac)
        self.last = len(self.G) - 1
        self.seg = 0
        self.g_last = self.G[-1]
        self.cap = spec.capacity_rps
        self.es_ms = spec.mean_service_ms
        self.vs_ms2 = spec.service_var_ms2
        self.oh_ms = spec.overhead_ms
        self.timeout_ms = spec.timeout_ms
        self.timeout_s = spec.timeout_ms / 1000.0
        self.x = 0.0
        self.eps_q = 0.0
        self.eps_env = 0.0
        self.wb_prev = 0.0

    def solve(self, b: float, k: float) -> tuple[float, float, float]:
        """Solve x + k·rho(x) = b for x >= 0; return (x, rho, Erlang C at rho).

        A level below X_EMPTY comes back as exactly empty, so the state is 0 or a normal float.
        """
        G, R = self.G, self.R
        last = self.last
        if b <= X_EMPTY:
            return 0.0, 0.0, 0.0
        f_last = G[last] + k * R[last]
        if b >= f_last:
            return b - k * R[last], R[last], self.C[last]
        # Warm start: the root is usually in or next to last tick's segment.
        lo = self.seg
        if G[lo] + k * R[lo] <= b:
            hi = lo + 1
            if G[hi] + k * R[hi] <= b:
                lo, hi = hi, last
        else:
            lo, hi = 0, lo
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if G[mid] + k * R[mid] <= b:
                lo = mid
            else:
                hi = mid
        self.seg = lo
        f_lo = G[lo] + k * R[lo]
        f_hi = G[hi] + k * R[hi]
        t = (b - f_lo) / (f_hi - f_lo)
        x = G[lo] + t * (G[hi] - G[lo])
        if x < X_EMPTY:
            return 0.0, 0.0, 0.0
        C = self.C
        return x, R[lo] + t * (R[hi] - R[lo]), C[lo] + t * (C[hi] - C[lo])


class _Chaos:
    """Per-tick effects of a scenario's chaos events, with the state cascades need."""

    def __init__(self, events: Sequence[ChaosEvent], names: Sequence[str], seed: int) -> None:
        self.events = list(events)
        self.index = {n: i for i, n in enumerate(names)}
        self.nb = len(names)
        self.over_ticks: list[list[int]] = [[0] * self.nb for _ in self.events]
        self.cascaded: list[set[int]] = [set() for _ in self.events]
        self.bursts: list[dict[int, str]] = []
        for j, ev in enumerate(self.events):
            self.bursts.append(self._burst_ticks(ev, seed, j) if ev.kind == "anomaly_burst" else {})
        self.sustain_ticks = max(1, math.ceil(CASCADE_SUSTAIN_S / TICK_SECONDS - 1e-9))

    @staticmethod
    def _burst_ticks(ev: ChaosEvent, seed: int, j: int) -> dict[int, str]:
        rng = np.random.default_rng([abs(seed), 7, j, int(seed < 0)])
        first = math.ceil(ev.start_s / TICK_SECONDS - 1e-9)
        end = math.ceil(ev.end_s / TICK_SECONDS - 1e-9)  # first tick not in the window
        out: dict[int, str] = {}
        k = first + int(rng.integers(0, 3))
        while k < end:
            kind = ("latency", "errors", "both")[int(rng.integers(0, 3))]
            for i in range(int(rng.integers(1, 4))):
                if k + i < end:
                    out[k + i] = kind
            k += 3 + int(rng.integers(2, 9))
        return out

    def surge(self, t0: float) -> float:
        m = 1.0
        for ev in self.events:
            if ev.kind == "traffic_surge" and ev.active(t0):
                ramp_s = min(_SURGE_RAMP_S, ev.duration_s / 4.0)
                mid = t0 + TICK_SECONDS / 2.0
                ramp = min(1.0, (mid - ev.start_s) / ramp_s, (ev.end_s - mid) / ramp_s)
                m *= 1.0 + (ev.magnitude - 1.0) * max(0.0, ramp)
        return m

    def effects(self, tick: int, t0: float) -> list[list]:
        """Per backend: [failed, capacity_lost, latency_factor, service_factor, err_add, kinds]."""
        out = [[False, 0.0, 1.0, 1.0, 0.0, []] for _ in range(self.nb)]
        for j, ev in enumerate(self.events):
            if not ev.active(t0):
                continue
            kind = ev.kind
            targets = range(self.nb) if ev.backend is None else (self.index[ev.backend],)
            if kind == "traffic_surge":
                continue
            if kind == "latency_spike":
                for i in targets:
                    out[i][2] *= ev.magnitude
                    out[i][5].append(kind)
            elif kind == "backend_failure":
                for i in targets:
                    if ev.magnitude >= 1.0:
                        out[i][0] = True
                    else:
                        out[i][1] = 1.0 - (1.0 - out[i][1]) * (1.0 - ev.magnitude)
                    out[i][5].append(kind)
            elif kind == "cascading_failure":
                for i in (*targets, *self.cascaded[j]):
                    out[i][0] = True
                    out[i][5].append(kind)
            elif kind == "gradual_drift":
                progress = min(1.0, max(0.0, (t0 + TICK_SECONDS - ev.start_s) / ev.duration_s))
                for i in targets:
                    out[i][3] *= 1.0 + (ev.magnitude - 1.0) * progress
                    out[i][5].append(kind)
            elif kind == "anomaly_burst":
                burst = self.bursts[j].get(tick)
                if burst is not None:
                    for i in targets:
                        if burst in ("latency", "both"):
                            out[i][2] *= ev.magnitude
                        if burst in ("errors", "both"):
                            out[i][4] += ANOMALY_ERROR_RATE
                        out[i][5].append(kind)
        return out

    def observe_load(self, t0: float, utilisation: Sequence[float], failed: Sequence[bool]):
        """Cascades: a neighbour that stays over the threshold long enough fails next tick."""
        for j, ev in enumerate(self.events):
            if ev.kind != "cascading_failure" or not ev.active(t0):
                continue
            origin = self.index[ev.backend]  # type: ignore[index]
            counts = self.over_ticks[j]
            for i in range(self.nb):
                if i == origin or i in self.cascaded[j] or failed[i]:
                    counts[i] = 0
                    continue
                counts[i] = counts[i] + 1 if utilisation[i] > ev.magnitude else 0
                if counts[i] >= self.sustain_ticks:
                    self.cascaded[j].add(i)


def _check_fleet(fleet: Sequence[BackendSpec]) -> tuple[BackendSpec, ...]:
    specs = tuple(fleet)
    if not specs:
        raise ValueError("fleet is empty")
    for s in specs:
        if not isinstance(s, BackendSpec):
            raise ValueError(f"fleet entries must be BackendSpec, got {type(s).__name__}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate backend names in fleet: {names}")
    return specs


class FleetSimulator:
    """Simulates a fleet tick by tick. Per tick: `arrivals()`, route them, `step(assigned)`.

    With a scenario, its fleet (if set), seed, traffic, duration and chaos apply; `seed`
    overrides the scenario's seed when given. Without one, the default traffic runs forever
    on `fleet` with no chaos. `noise=False` turns off every random perturbation except the
    arrivals (for tests and for reading the model's mean behaviour).
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        fleet: Sequence[BackendSpec] = DEFAULT_FLEET,
        seed: int | None = None,
        start_ts: float = 1_700_000_000.0,
        noise: bool = True,
    ) -> None:
        if not math.isfinite(start_ts):
            raise ValueError(f"start_ts must be finite, got {start_ts!r}")
        if scenario is None:
            self.fleet = _check_fleet(fleet)
            traffic, events, duration = TrafficModel(), (), math.inf
            seed = 0 if seed is None else seed
            self.name = "default"
        else:
            self.fleet = _check_fleet(scenario.backends() if scenario.fleet else fleet)
            names = {s.name for s in self.fleet}
            for ev in scenario.chaos:
                if ev.backend is not None and ev.backend not in names:
                    raise ValueError(
                        f"chaos event {ev.kind} targets unknown backend {ev.backend!r}"
                    )
            traffic, events = scenario.traffic, scenario.chaos
            duration = scenario.effective_duration_s
            seed = scenario.seed if seed is None else seed
            self.name = scenario.name
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.scenario = scenario
        self.seed = int(seed)
        self.duration_s = duration
        self.start_ts = float(start_ts)
        self.noise = noise
        self.names = tuple(s.name for s in self.fleet)
        self._index = {n: i for i, n in enumerate(self.names)}
        ss = np.random.SeedSequence([abs(self.seed), int(self.seed < 0)])
        arr_ss, noise_ss = ss.spawn(2)
        self._arrivals = traffic.process(np.random.default_rng(arr_ss))
        self._noise_rng = np.random.default_rng(noise_ss)
        self._queues = [_Queue(s) for s in self.fleet]
        self._chaos = _Chaos(events, self.names, self.seed)
        self._has_chaos = bool(events)
        self.tick = 0
        self._pending: int | None = None
        self._calm = [(False, 0.0, 1.0, 1.0, 0.0, ())] * len(self.names)
        self._zeros = [0.0] * (_NZ * len(self.names))

    # -- time -------------------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        """Seconds from the start to the beginning of the next tick."""
        return self.tick * TICK_SECONDS

    @property
    def ts(self) -> float:
        """Unix time now (the end of the last simulated tick)."""
        return self.start_ts + self.t_s

    @property
    def done(self) -> bool:
        return self.t_s >= self.duration_s - 1e-9

    @property
    def expected_arrivals(self) -> float:
        """Mean of the count `arrivals()` drew for this tick (its rate before Poisson noise)."""
        self.arrivals()
        return self._arrivals.expected

    # -- the loop ---------------------------------------------------------------------------
    def arrivals(self) -> int:
        """Requests arriving during the next tick. Repeated calls within a tick agree."""
        if self._pending is None:
            if self.done:
                raise RuntimeError(f"scenario {self.name!r} is finished ({self.duration_s} s)")
            mult = self._chaos.surge(self.t_s) if self._has_chaos else 1.0
            self._pending = self._arrivals.next_count(mult)
        return self._pending

    def _loads(self, assigned: Mapping[str, int | float]) -> list[float]:
        loads = [0.0] * len(self.names)
        for name, value in assigned.items():
            i = self._index.get(name)
            if i is None:
                raise ValueError(f"unknown backend {name!r}; fleet: {', '.join(self.names)}")
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ValueError(f"requests for {name} must be a number, got {value!r}")
            v = float(value)
            if not math.isfinite(v) or v < 0.0:
                raise ValueError(f"requests for {name} must be finite and >= 0, got {value!r}")
            loads[i] = v
        return loads

    def step(self, assigned: Mapping[str, int | float]) -> TickResult:
        """Serve `assigned[name]` requests on each backend during this tick; advance 10 s."""
        loads = self._loads(assigned)
        arrivals = self.arrivals()  # keeps the arrival stream aligned even if not asked for
        self._pending = None
        tick = self.tick
        t0 = tick * TICK_SECONDS
        nb = len(self._queues)
        T = TICK_SECONDS
        effects = self._chaos.effects(tick, t0) if self._has_chaos else self._calm
        z = self._noise_rng.standard_normal(_NZ * nb).tolist() if self.noise else self._zeros

        # The queues respond to the offered rate. A tick's arrival count carries Poisson noise
        # that the stationary curve already accounts for, so when the caller routed exactly the
        # tick's arrivals, each backend's share is applied to the expected count instead.
        total = sum(loads)
        if arrivals > 0 and abs(total - arrivals) < 1e-6:
            offered_scale = self._arrivals.expected / arrivals
        else:
            offered_scale = 1.0
        exp, log, sqrt, erfc = math.exp, math.log, math.sqrt, math.erfc
        noisy = self.noise
        rows = []
        utils = [0.0] * nb
        failed_now = [False] * nb
        for i, q in enumerate(self._queues):
            hard, lost, lat_mult, svc_mult, err_add, kinds = effects[i]
            n = loads[i]
            lam = n / T
            # Service speed: slow environmental wander, divided by any drift of service time.
            q.eps_env = _ENV_PHI * q.eps_env + sqrt(1.0 - _ENV_PHI**2) * z[_NZ * i]
            speed = exp(ENV_SD * q.eps_env) / svc_mult
            cap_eff = q.cap * speed * (1.0 - lost)
            utils[i] = lam / cap_eff if cap_eff > 0.0 else math.inf
            if hard or cap_eff <= 0.0:
                failed_now[i] = True
                q.x = 0.0
                q.eps_q = 0.0
                q.wb_prev = 0.0
                rows.append((n, log(q.timeout_ms), 0.0, 0.0, 1.0, 1.0, lam * q.timeout_s, kinds))
                continue
            x, r, cw = q.solve(q.x + n * offered_scale, T * cap_eff)
            x_max = q.g_last + QUEUE_LIMIT * q.timeout_s * cap_eff
            shed = 0.0
            if x > x_max:
                shed = x - x_max
                x = x_max
            q.x = x
            # Squared CV of a request's wait about the mean (zero/exponential mixture), split
            # into a between-tick part (the level of the queue during this tick, which moves
            # with the queue's relaxation time) and a within-tick part.
            if cw >= CW_MIN:
                wq = cw / (cap_eff * (1.0 - r)) * q.k_ac
                within = 2.0 / cw - 1.0
            else:
                wq = within = 0.0
            if noisy and wq > 0.0:
                xr = T * cap_eff * (1.0 - sqrt(r)) ** 2 / TAU_K
                share = min(1.0, 2.0 * (xr - 1.0 + exp(-xr)) / (xr * xr)) if xr > 1e-6 else 1.0
                cv2 = share * within
                within *= 1.0 - share
                phi = exp(-xr * PHI_K)
                q.eps_q = phi * q.eps_q + sqrt(1.0 - phi * phi) * z[_NZ * i + 1]
                # Gamma-distributed level with mean 1 (Wilson-Hilferty approximation).
                base = 1.0 - cv2 / 9.0 + q.eps_q * sqrt(cv2) / 3.0
                wq *= base * base * base if base > 0.0 else 0.0
            else:
                q.eps_q = 0.0
            wb1 = (x - q.g_last) / cap_eff if x > q.g_last else 0.0
            wb0 = q.wb_prev
            q.wb_prev = wb1
            wq_ms = 1000.0 * wq
            wb_ms = 500.0 * (wb0 + wb1)
            spread_ms = 1000.0 * (wb1 - wb0)
            mean = q.oh_ms + q.es_ms / speed + wq_ms + wb_ms
            var = q.vs_ms2 / (speed * speed) + spread_ms * spread_ms / 12.0 + wq_ms * wq_ms * within
            mean *= lat_mult
            var *= lat_mult * lat_mult
            s2 = log(1.0 + var / (mean * mean))
            sigma = sqrt(s2)
            mu = log(mean) - s2 / 2.0
            p_to = 0.5 * erfc((log(q.timeout_ms) - mu) / (sigma * _SQRT2))
            p_other = min(1.0, q.spec.base_error_rate + err_add)
            shed_frac = min(1.0, shed / n) if n > 0.0 else 0.0
            p_err = shed_frac + (1.0 - shed_frac) * (p_to + (1.0 - p_to) * p_other)
            in_flight = lam * (1.0 - shed_frac) * min(mean, q.timeout_ms) / 1000.0
            rows.append((n, mu, sigma, shed_frac, p_other, p_err, in_flight, kinds))

        if self._has_chaos:
            self._chaos.observe_load(t0, utils, failed_now)

        counts = [max(1, round(r[0])) for r in rows]
        ts = self.start_ts + t0 + T
        telemetry = []
        backends = {}
        for i, (n, mu, sigma, shed_frac, p_other, p_err, in_flight, kinds) in enumerate(rows):
            q = self._queues[i]
            cnt = counts[i]
            cap = q.timeout_ms
            if sigma > 0.0:
                inv = 1.0 / sqrt(cnt)
                d50 = _SE50 * inv * z[_NZ * i + 2]
                d95 = _SE95 * inv * (_RHO_Q * z[_NZ * i + 2] + _RHO_Q_C * z[_NZ * i + 3])
                p50 = min(exp(mu + sigma * d50), cap)
                p95 = min(max(exp(mu + sigma * (Z95 + d95)), p50), cap)
            else:
                p50 = p95 = min(exp(mu), cap)
            err_rate = _binomial(cnt, p_err, z[_NZ * i + 4]) / cnt if noisy else p_err
            name = self.names[i]
            rps = n / T
            telemetry.append(TelemetryPoint(ts, name, rps, p50, p95, err_rate, in_flight))
            backends[name] = BackendTick(  # positional: this runs 4 times a tick
                name,
                rps,
                p50,
                p95,
                err_rate,
                in_flight,
                failed_now[i],
                mu,
                sigma,
                p_err,
                utils[i],
                n,
                shed_frac,
                p_other,
                cap,
                tuple(kinds),
            )
        self.tick += 1
        return TickResult(ts=ts, t_s=t0, arrivals=arrivals, telemetry=telemetry, backends=backends)


# -- training history ---------------------------------------------------------------------------

_HISTORY_KINDS = CHAOS_KINDS
HISTORY_EXPLORE_SD = 0.4
HISTORY_EXPLORE_TAU_S = 1200.0
HISTORY_DIURNAL_AMPLITUDE = 0.45


def random_chaos(
    duration_s: float,
    names: Sequence[str],
    rng: np.random.Generator,
    chaos_per_hour: float = 1.0,
) -> list[ChaosEvent]:
    """Chaos events at Poisson times over `duration_s`, of uniformly drawn kinds and targets."""
    if not math.isfinite(chaos_per_hour) or chaos_per_hour < 0:
        raise ValueError(f"chaos_per_hour must be finite and >= 0, got {chaos_per_hour!r}")
    n = int(rng.poisson(chaos_per_hour * duration_s / 3600.0))
    starts = np.sort(rng.uniform(0.0, duration_s, n))
    events = []
    for start in starts:
        kind = _HISTORY_KINDS[int(rng.integers(len(_HISTORY_KINDS)))]
        backend = None if kind == "traffic_surge" else names[int(rng.integers(len(names)))]
        events.append(ChaosEvent(kind=kind, start_s=float(start), backend=backend))
    return events


def simulate_history(
    duration_s: float,
    *,
    fleet: Sequence[BackendSpec] = DEFAULT_FLEET,
    seed: int = 0,
    chaos_per_hour: float = 1.0,
    start_ts: float = 1_700_000_000.0,
) -> list[TelemetryPoint]:
    """Telemetry for training: random chaos, and a routing that explores.

    Routing weights are capacity-proportional times exp(z), z an Ornstein-Uhlenbeck process per
    backend (time constant 20 min, sd 0.4 / (1 - capacity share)), so each backend drifts
    between light load and overload: with the default fleet each spends a few percent of the
    time above 90% utilisation. Traffic is the default model with a deeper diurnal swing
    (amplitude 0.45) at a random phase, and chaos events arrive at `chaos_per_hour` with kinds
    and targets drawn uniformly. The routing ignores failures: the history shows them in full.
    Points come tick by tick, in fleet order within a tick.
    """
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise ValueError(f"duration_s must be finite and > 0, got {duration_s!r}")
    specs = _check_fleet(fleet)
    names = [s.name for s in specs]
    rng = np.random.default_rng([abs(seed), 11, int(seed < 0)])
    events = random_chaos(duration_s, names, rng, chaos_per_hour)
    traffic = TrafficModel(
        mean_rps=0.4 * sum(s.capacity_rps for s in specs),
        diurnal_amplitude=HISTORY_DIURNAL_AMPLITUDE,
        phase_s=float(rng.uniform(0.0, 86_400.0)),
    )
    scen = Scenario(
        name="history", seed=seed, duration_s=duration_s, fleet=specs, traffic=traffic, chaos=events
    )
    sim = FleetSimulator(scen, start_ts=start_ts)
    nb = len(specs)
    caps = np.array([s.capacity_rps for s in specs])
    # A backend with a large share moves its own utilisation less per unit of z (the shares are
    # normalised), so its z wanders more: every backend's utilisation then spans a similar range.
    share = caps / caps.sum()
    sd = HISTORY_EXPLORE_SD / (1.0 - np.minimum(share, 0.8))
    a = math.exp(-TICK_SECONDS / HISTORY_EXPLORE_TAU_S)
    b = sd * math.sqrt(1.0 - a * a)
    z = rng.normal(0.0, sd, nb)
    n_ticks = math.ceil(duration_s / TICK_SECONDS - 1e-9)
    shocks = rng.standard_normal((n_ticks, nb))
    out: list[TelemetryPoint] = []
    for k in range(n_ticks):
        z = a * z + b * shocks[k]
        w = caps * np.exp(z)
        w /= w.sum()
        n = sim.arrivals()
        counts = rng.multinomial(n, w).tolist()
        res = sim.step(dict(zip(names, counts, strict=True)))
        out.extend(res.telemetry)
    return out
