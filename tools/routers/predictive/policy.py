"""`predictive`: route each request to the cheapest backend likely enough to meet its SLO.

For every request and every backend the router reads, from the refresh grid
(`tools.routers.predictive.table`), the probability that the request meets both its TTFT and its
end-to-end SLO there and does not fail: the latency model's calibrated distributions at the
backend's live state, with the requests this router has sent or seen return since the last
refresh counted exactly (so a burst does not herd onto the backend that looked idle at the last
scrape). Then, among `choices` live backends drawn at random for this request (the power of d
choices: the model's view of a backend lags its load by a scrape and by its latency averages,
and deciding among all of them on that view sent every request to one backend until it
overloaded, then away for tens of seconds; a few random candidates keep every backend fed and its
averages fresh):

* among backends whose probability is at least `target`, the one with the lowest expected cost
  (its prices x the request's prompt and the mean output seen so far); a price tie (identical
  replicas) to the one with fewer requests in flight;
* when none reaches the target, the likeliest (the request is then *at risk*); candidates within
  `tie_p` of it count as equally likely and the one with fewer requests in flight wins (the
  probabilities lag, the in-flight count does not: a strict maximum made the shares flap); or with
  `at_risk="hotcold"` Prequal's hot-cold rule; with `stick_p`/`stick_cost` > 0 a tier's previous
  backend keeps the request unless the pick beats it by that margin (both off: measured worse);
* failing backends are ejected as Envoy's outlier detection does (error share over a threshold,
  ejection time growing with each ejection, at most half the fleet at once), and a backend that
  holds requests but has said nothing (no completion, no scrape) for `silent_s` is treated as hung
  and ejected too; back from ejection, a backend takes one request at a time until one succeeds;
* a backend left without traffic for `explore_s` gets the next request whose SLO is the loosest
  seen, so its latency averages do not go stale and the monitors keep evidence on it;
* online, each backend's mean log TTFT and log e2e are corrected by a running average of the
  residuals of its completed requests (the model learnt a fleet; this one drifts), and an
  optional 5-minute prior (`tools.routers.predictive.prior`) shifts a backend forecast to degrade
  before its live signals show it.

A decision is *ambiguous* when its best candidates are a near tie short of the target, when every
backend is at risk, or when an alarm is active on the pick (`alarms`, set by the monitors); the
Router (`agents.router`) escalates at most a hard-capped share of those.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial

from tools.routers.base import (
    BackendProfile,
    Completion,
    EngineMetrics,
    PolicyBase,
    RequestInfo,
    RouterView,
)
from tools.routers.llmd import DEFAULT_LRU_CAPACITY_PER_SERVER, PrefixIndex
from tools.routers.predictive.features import FleetTracker
from tools.routers.predictive.model import LatencyModel
from tools.routers.predictive.table import (
    D_MAX,
    D_MIN,
    DELTA_POSITION,
    ND,
    GridSnapshot,
    PredictionTable,
    interpolate,
    token_position,
)
from tools.routers.prequal import DEFAULT_Q_RIF, hcl_pick

AT_RISK_RULES = ("likeliest", "hotcold")
REASONS = (
    "cheapest_likely",
    "likeliest_at_risk",
    "hotcold_at_risk",
    "kept",
    "lost_everywhere",
    "explore",
    "only_candidate",
    "all_ejected",
)

AMBIGUITY_CHECKED = frozenset(
    ("likeliest_at_risk", "hotcold_at_risk", "cheapest_likely", "lost_everywhere", "kept")
)


@dataclass(frozen=True)
class PredictiveSettings:
    """Every knob of the router. Defaults are the values chosen on held-out runs (README)."""

    target: float = 0.95
    """Probability of meeting the SLO a backend needs to be chosen on price."""
    risk_ratio: float = 2.0
    """...and its probability of missing the SLO may be at most this many times the best
    backend's: price decides between backends about as safe as the safest, never trades a
    request's SLO for a cheaper token while a much safer backend is free."""
    lost_p: float = 0.4
    """Below this probability on every backend the request is lost whatever the choice; it then
    goes where it takes capacity from no request that can still be served (the backend it is
    least likely to meet its SLO on). 0: off."""
    refresh_s: float = 1.0
    """The grid is re-evaluated at least this often (and on every scrape)."""
    alpha: float = 0.1
    """Weight of the newest completion in a backend's latency averages."""
    correction_rate: float = 0.05
    """Weight of the newest residual in a backend's online correction (0: off). The residuals
    arrive a request's latency after the state they describe, and the correction shifts the
    whole backend: at 0.05 it drove a feedback oscillation (a backend overloads, its correction
    climbs, traffic leaves, few completions bring it back, traffic returns). Chosen on the dev
    seeds (README): 0.01 against 0.05 and 0 (off), geometric-mean violation ratio to the best
    anchor 0.711 / 0.820 / 0.768 and flaps 192 / 243 / 146 an hour (20 runs each). Not the
    default yet: at 0.01 the agents' fixture history (tests/test_context_api.py,
    test_offline_model.py) no longer shows the quality drop on b0 that its answers explain, and
    that needs looking at before the default moves."""
    eject_error_rate: float = 0.5
    eject_min_observed: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_fraction: float = 0.5
    silent_s: float = 5.0
    explore_s: float = 1.0
    """A live backend sent nothing for this long gets the next request whose SLO is the loosest
    seen: every backend keeps producing outcomes (at least one a second), so its latency
    averages stay fresh and the monitors (anomaly, drift) keep seeing it. Chosen on the dev
    seeds with 50 ms polls: 1 s against 2 s and 10 s, geometric-mean ratio 1.05 / 1.09 / 1.10."""
    close_p: float = 0.02
    """Two best probabilities this close, short of the target: ambiguous."""
    tie_p: float = 0.0
    """Probabilities this close to the best drawn candidate's count as equal, and equals are
    told apart by the router's exact requests in flight (then price): the probabilities read
    latency averages that move only as a backend's own requests complete, so a strict maximum
    over them sends a tick's traffic to whichever backend last looked a little better and
    starves the other until its averages catch up; the in-flight count moves with every request
    sent. At the price rule it breaks exact price ties (identical replicas) the same way.
    0: strict maximum (off). Chosen on the dev seeds (README): with the correction off, 0.05
    against 0 and 0.10, geometric-mean ratio 0.793 / 0.768 / 0.829 and flaps 93 / 146 / 82 an
    hour (20 runs each); with `correction_rate` 0.01, README. Off by default: with 0.05 the
    closed loop no longer detected its drift (tests/test_feedback_loop.py's end-to-end test),
    since the traffic the tie-break moves off the drifting backend was the drift monitor's
    evidence; it is kept as a setting for fleets that do not rely on that monitor."""
    low_p: float = 0.5
    """Every backend below this: ambiguous (all at risk)."""
    block_tokens: int = 16
    """Tokens per prefix block hash, for the prefill a prefix hit saves."""
    prefix_capacity_blocks: int = DEFAULT_LRU_CAPACITY_PER_SERVER
    use_model: bool = True
    """False: the ablation without the per-request predictor (see `LiveOnly`)."""
    scrape_interval_s: float | None = 0.05
    """This router's own metrics cadence (None: the environment's), as llm-d polls at 50 ms.
    Chosen on the dev seeds (README): with `explore_s` 1, geometric-mean violation ratio to the
    best anchor 1.05 against 1.14 with the environment's 1 s scrapes (20 runs). It needs the
    exploration floor: with fresh signals traffic leaves a degrading backend within a tick or
    two, and without a floor the closed loop's monitors lose their evidence on it (the CI eval
    missed the anomaly in ci_latency_spike with `explore_s` 10)."""
    stick_p: float = 0.0
    """Hysteresis: a request keeps its tier's previous backend unless the rule's pick is likelier
    to meet the SLO there by more than this (0: off)."""
    stick_cost: float = 0.0
    """...or, both likely enough, cheaper by more than this share of the previous one's cost."""
    at_risk: str = "likeliest"
    """When no backend reaches `target`: "likeliest" (the highest probability) or "hotcold"
    (Prequal's hot-cold rule on the router's requests in flight and each backend's recent TTFT,
    for when the predictions are short of the target everywhere and least to be trusted)."""
    choices: int = 3
    """Decide among this many live backends drawn at random per request (0: all), the power of
    d choices: with stale information, choosing the best of a few random candidates herds less
    than choosing the best of all (Mitzenmacher, "How useful is old information?", 2000). Chosen
    on the dev seeds (README): with 1 s scrapes 2 beat all (geometric-mean violation ratio to the
    best anchor 1.10 against 1.60); with 50 ms polls 3 beats 2 (0.82 against 1.05 on 20 runs,
    0.93 against 1.15 on 10 more) and all (0.83), at about twice the flaps of 2."""
    scrape_refresh_s: float = 0.25
    """A scrape re-evaluates its backend's grid only if the last evaluation is at least this old
    (the scrape always updates the live state): a forest walk per backend per 50 ms poll would
    cost ~12 ms of CPU a second per backend; at 0.25 s it is ~2.3 ms."""

    def __post_init__(self) -> None:
        for name in (
            "target",
            "lost_p",
            "close_p",
            "tie_p",
            "low_p",
            "max_ejection_fraction",
            "eject_error_rate",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v!r}")
        for name in (
            "refresh_s",
            "silent_s",
            "explore_s",
            "base_ejection_s",
            "max_ejection_s",
            "scrape_refresh_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.choices < 0 or self.choices == 1:
            raise ValueError("choices must be 0 (all backends) or at least 2")
        if not self.risk_ratio >= 1.0:
            raise ValueError("risk_ratio must be >= 1")
        if not 0.0 <= self.correction_rate < 1.0:
            raise ValueError("correction_rate must lie in [0, 1)")
        if not (0.0 <= self.stick_p <= 1.0 and 0.0 <= self.stick_cost < 1.0):
            raise ValueError("stick_p must lie in [0, 1] and stick_cost in [0, 1)")
        if self.at_risk not in AT_RISK_RULES:
            raise ValueError(f"at_risk must be one of {AT_RISK_RULES}, got {self.at_risk!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class Choice:
    """The last decision's reasoning, kept for the Router to turn into a `Decision`."""

    __slots__ = ("ambiguous", "backend", "cost", "drawn", "ejected", "p", "reason")

    def __init__(
        self,
        backend: int = -1,
        reason: str = "",
        ambiguous: str | None = None,
        p: list[float] | None = None,
        cost: list[float] | None = None,
        ejected: list[bool] | None = None,
        drawn: list[int] | None = None,
    ) -> None:
        self.backend = backend
        self.drawn = drawn
        """The backends the rule chose between (None: all of them)."""
        self.reason = reason
        self.ambiguous = ambiguous
        self.p = p or []
        self.cost = cost or []
        self.ejected = ejected or []


class PredictiveRouter(PolicyBase):
    name = "predictive"

    def __init__(
        self,
        backends: Sequence[BackendProfile],
        seed: int = 0,
        model: LatencyModel | None = None,
        settings: PredictiveSettings | None = None,
        prior: object | None = None,
        **overrides: object,
    ) -> None:
        n = len(backends)
        if n == 0:
            raise ValueError("predictive needs at least one backend")
        s = settings or PredictiveSettings()
        if overrides:
            unknown = sorted(set(overrides) - set(PredictiveSettings.names()))
            if unknown:
                raise ValueError(f"predictive: unknown setting(s) {unknown}")
            s = PredictiveSettings(**{**s.__dict__, **overrides})
        if model is None and s.use_model:
            from tools.routers.predictive.artifact import load_default

            model = load_default()
        self.settings = s
        self.scrape_interval_s = s.scrape_interval_s
        self.model = model
        self.backends = tuple(backends)
        self.n = n
        self.seed = seed
        self.prior = prior
        self.tracker = FleetTracker(n, alpha=s.alpha)
        self.table = PredictionTable(model, n) if model is not None and s.use_model else None
        self.cin = [b.cost_per_1k_input / 1000.0 for b in backends]
        self.cout = [b.cost_per_1k_output / 1000.0 for b in backends]
        self.corr_t = [0.0] * n
        self.corr_e = [0.0] * n
        self.ejected_until = [-math.inf] * n
        self.ejections = [0] * n
        self._readmit = [False] * n
        self.probation = [False] * n
        self.last_sent = [0.0] * n
        self.alarms: Mapping[str, str] = {}
        self.prefix = PrefixIndex(n, s.prefix_capacity_blocks)
        self._due = [0.0] * n
        self._refreshed = [-math.inf] * n
        """When each backend's grid is due for a refresh."""
        self._next_check = -math.inf
        self._first = True
        self._pending: dict[int, tuple[int, float, int, list[float], list[float]]] = {}
        """request id -> (backend, prefill tokens, in-flight change, the grids of mean log TTFT
        and log e2e it was routed on), for the correction."""
        self._resid = [[0, 0.0, 0.0] for _ in range(n)]
        """Per backend since the last `take_residuals`: completions, sums of raw residuals."""
        self._loosest = 0.0
        self._matched: dict[int, int] | None = None
        """Prefix blocks each backend held for the last request, as its pick saw them."""
        self.refreshes = 0
        self.last = Choice()
        self.live = LiveOnly(n) if not s.use_model else None
        self.counts = {r: 0 for r in REASONS}
        self.ambiguous = 0
        self._rng = random.Random(seed)
        self._getrandbits = self._rng.getrandbits  # what `random.sample` draws with (`_draw`)
        self._ejected: list[bool] = [False] * n
        """`[u > now for u in ejected_until]`, valid for `now` in `_ejected_valid` (the list is
        never edited once made: a decision keeps it)."""
        self._ejected_valid = (math.inf, -math.inf)
        self._drawn: list[int] | None = None
        self._live_of: tuple[list[bool], list[int]] = ([], [])
        self.pref: dict[str, int] = {}
        """Each tier's last routed backend (the hysteresis' incumbent)."""

    # -- signals ----------------------------------------------------------------------------------
    def on_tick(self, tick: object) -> None:
        """A telemetry tick (`tools.sim.run.SimTick` or anything with `.telemetry`): the
        forecast prior, when there is one, re-forecasts; grids pick its shifts up as they
        refresh."""
        if self.prior is not None:
            self.prior.on_tick(getattr(tick, "telemetry", ()))  # type: ignore[attr-defined]

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        self.tracker.on_scrape(metrics)
        b = metrics.backend
        if 0 <= b < self.n and view.now_s >= self._refreshed[b] + self.settings.scrape_refresh_s:
            self._refresh(view, (b,))

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        c = completion
        self.tracker.on_complete(c)
        if self.live is not None:
            self.live.on_complete(c)
        b = c.backend
        if c.status == "ok":
            self.probation[b] = False
        pend = self._pending.pop(c.request_id, None)
        rate = self.settings.correction_rate
        if pend is not None and c.status == "ok" and c.ttft_ms:
            # The model's own residuals (predictions stored before any correction): the routing
            # drift monitor's evidence, and, when on, a running average of them corrects the
            # backend's means.
            _, tok, d, grid_t, grid_e = pend
            mt, me = interpolate(grid_t, tok, d), interpolate(grid_e, tok, d)
            rt = math.log(c.ttft_ms) - mt
            re = math.log(max(c.e2e_ms, 1.0)) - me
            if rate > 0.0:
                self.corr_t[b] += rate * (rt - self.corr_t[b])
                self.corr_e[b] += rate * (re - self.corr_e[b])
            acc = self._resid[b]
            acc[0] += 1
            acc[1] += rt
            acc[2] += re
        s = self.settings
        t = self.tracker
        if (
            c.status in ("error", "rejected")
            and t.observed[b] >= s.eject_min_observed
            and t.hard_err[b] >= s.eject_error_rate
        ):
            self._eject(b, view.now_s)
        now = view.now_s
        due = self._due
        if now >= self._next_check:
            # backends whose grid is older than refresh_s (no scrape: a hung backend's scrapes
            # time out) are refreshed here, off the request path
            self._next_check = now + 0.1 * s.refresh_s
            stale = [k for k in range(self.n) if now >= due[k]]
            if stale:
                self._refresh(view, stale)

    def take_residuals(self) -> list[tuple[int, float, float]]:
        """Per backend, the completions since the last call and the sums of their raw residuals
        (log TTFT and log e2e less the model's mean before any online correction), then starts
        afresh: the routing model's own drift signal, load accounted for. Only successful
        requests count, whether the online correction is on or not."""
        out = [(int(a[0]), a[1], a[2]) for a in self._resid]
        self._resid = [[0, 0.0, 0.0] for _ in range(self.n)]
        return out

    def _eject(self, b: int, now: float) -> None:
        if self.ejected_until[b] > now:
            return
        s = self.settings
        out = sum(1 for u in self.ejected_until if u > now)
        if out >= max(1, int(s.max_ejection_fraction * self.n)):
            return
        self.ejections[b] += 1
        self.ejected_until[b] = now + min(s.max_ejection_s, s.base_ejection_s * self.ejections[b])
        self._readmit[b] = True
        self._ejected_valid = (math.inf, -math.inf)

    def _ejected_at(self, now: float) -> list[bool]:
        """Which backends are ejected at `now`, kept until the next ejection ends (or starts:
        `_eject` drops it), so a request reads a list instead of building one."""
        ej = self.ejected_until
        self._ejected = [u > now for u in ej]
        ahead = [u for u in ej if u > now]
        self._ejected_valid = (now, min(ahead) if ahead else math.inf)
        return self._ejected

    def _probation(self, view: RouterView, ejected: list[bool]) -> None:
        """Backends back from ejection come back with a clean error record, as Envoy's hosts
        do, but on probation (a half-open circuit breaker): one request at a time until one
        succeeds, so a backend that is still hung swallows one request, not a flood."""
        inflight = view.in_flight
        tracker = self.tracker
        for b in range(self.n):
            if self._readmit[b] and not ejected[b]:
                self._readmit[b] = False
                self.probation[b] = True
                tracker.err[b] = tracker.hard_err[b] = 0.0
                self._refresh(view, (b,))
            if self.probation[b] and inflight[b] > 0:
                ejected[b] = True

    def shadow(self) -> PredictiveRouter | None:
        """A copy that decides as this router would now, for rehearsing the request path
        (`agents.router.Router.rehearse`): it shares what a decision only reads (grids, model,
        settings, prefix index) and holds its own copy of everything a decision writes, so
        deciding on it leaves this router exactly as it was. None when a decision would do
        more than decide (the first one builds the grids; a readmitted backend refreshes)."""
        if self._first or True in self._readmit or True in self.probation:
            return None
        sh = copy.copy(self)
        t = sh.tracker = copy.copy(self.tracker)
        t.in_flight_tokens = t.in_flight_tokens[:]
        t.recent_tokens = t.recent_tokens[:]
        t.recent_t = t.recent_t[:]
        t.routed_since_scrape = t.routed_since_scrape[:]
        sh.last_sent = self.last_sent[:]
        sh.pref = dict(self.pref)
        sh.counts = dict(self.counts)
        sh._due = self._due[:]
        sh._pending = {}
        sh.ejected_until = self.ejected_until[:]
        sh.ejections = self.ejections[:]
        sh._readmit = self._readmit[:]
        sh.probation = self.probation[:]
        sh._rng = random.Random(self.seed)
        sh._getrandbits = sh._rng.getrandbits
        sh.prefix = _ReadOnlyPrefix(self.prefix)  # type: ignore[assignment]
        return sh

    # -- the hot path -----------------------------------------------------------------------------
    def choose(self, request: RequestInfo, view: RouterView) -> int:
        now = view.now_s
        s = self.settings
        n = self.n
        inflight = view.in_flight
        if self._first:
            self._first = False
            self._refresh(view, range(n))
        lo, hi = self._ejected_valid
        ejected = self._ejected if lo <= now < hi else self._ejected_at(now)
        if True in self._readmit or True in self.probation:
            ejected = ejected[:]
            self._probation(view, ejected)
        heard = self.tracker.heard_s
        silent_s = s.silent_s
        if now - min(heard) > silent_s:  # some backend has been silent that long
            ejected = ejected[:]
            ej = self.ejected_until
            for b in range(n):
                if inflight[b] and not ejected[b] and now - heard[b] > silent_s:
                    self._eject(b, now)
                    ejected[b] = ej[b] > now
        inp = request.input_tokens
        hashes = request.prefix_hashes
        matched = self.prefix.match(hashes[:256]) if hashes else None
        self._matched = matched
        mo = self.tracker.mean_output
        cost = [ci * inp + co * mo for ci, co in zip(self.cin, self.cout)]  # noqa: B905 (same n)
        if self.table is not None:
            p = self._p_model(request, inflight, matched, ejected)
        else:
            p = self.live.p(request, inflight, ejected)  # type: ignore[union-attr]
        self._drawn = None
        pick, reason = self._pick(p, cost, ejected, now, request, inflight)
        amb = None
        if reason in AMBIGUITY_CHECKED:
            amb = self._ambiguity(p, pick, ejected)
        if amb is not None:
            self.ambiguous += 1
        self.counts[reason] += 1
        self.last = Choice(pick, reason, amb, p, cost, ejected, self._drawn)
        self._sent(request, pick, now, inflight, matched)
        return pick

    def _sent(
        self,
        request: RequestInfo,
        b: int,
        now: float,
        inflight: Sequence[int],
        matched: dict[int, int] | None,
    ) -> None:
        """Bookkeeping of a request sent to `b`: in flight, prefix index, hysteresis, pending
        prediction for the online correction."""
        self.tracker.on_route(b, request.input_tokens, now)
        self.last_sent[b] = now
        self.pref[request.tier] = b
        hashes = request.prefix_hashes
        if hashes:
            self.prefix.add(hashes[:256], b)
        table = self.table
        if table is not None:
            # the grids this pick read (a refresh replaces them, never edits them): the means
            # are interpolated when the completion arrives, off the request path
            self._pending[request.request_id] = (
                b,
                prefill_tokens(request.input_tokens, matched, b, self.settings.block_tokens),
                inflight[b] - table.base_in_flight[b],
                table.mt_raw[b],
                table.me_raw[b],
            )

    def reroute(self, request: RequestInfo, view: RouterView, new: int) -> None:
        """The request `choose` just sent to `self.last.backend` went to `new` instead (the
        router agent overrode the pick): count it where it went (in flight, hysteresis, the
        correction's pending prediction). The old backend's prefix index keeps the request's
        blocks, as an approximate index may."""
        old = self.last.backend
        if new == old or not 0 <= new < self.n:
            return
        now = view.now_s
        self.tracker.unroute(old, request.input_tokens, now)
        self._pending.pop(request.request_id, None)
        hashes = request.prefix_hashes
        matched = self.prefix.match(hashes[:256]) if hashes else None
        self.last.backend = new
        self._sent(request, new, now, view.in_flight, matched)

    def _tokens(self, inp: int, matched: dict[int, int] | None, b: int) -> float:
        return prefill_tokens(inp, matched, b, self.settings.block_tokens)

    def _p_model(
        self,
        request: RequestInfo,
        inflight: Sequence[int],
        matched: dict[int, int] | None,
        ejected: list[bool],
    ) -> list[float]:
        table = self.table
        assert table is not None
        tabs = table.p_table(request.ttft_slo_ms, request.e2e_slo_ms)
        base = table.base_in_flight
        out: list[float] = []
        put = out.append
        inp = request.input_tokens
        i, f = token_position(inp)
        b = -1
        for row, x, x0, out_b in zip(tabs, inflight, base, ejected):  # noqa: B905 (hot path)
            b += 1
            if out_b:
                put(0.0)
                continue
            if matched:
                i, f = token_position(self._tokens(inp, matched, b))
            d = x - x0
            if d > D_MAX or d < D_MIN:
                self._due[b] = 0.0  # off the grid: refreshed at the next completion
                d = D_MAX if d > D_MAX else D_MIN
            # bilinear in (log tokens, in-flight change), as `table.interpolate`, inlined
            j, g = DELTA_POSITION[d - D_MIN]
            a = i * ND + j
            c = a + ND
            lo = row[a] + (row[a + 1] - row[a]) * g
            hi = row[c] + (row[c + 1] - row[c]) * g
            put(lo + (hi - lo) * f)
        return out

    def _pick(
        self,
        p: list[float],
        cost: list[float],
        ejected: list[bool],
        now: float,
        request: RequestInfo,
        inflight: Sequence[int],
    ) -> tuple[int, str]:
        s = self.settings
        n = self.n
        live = self._live(ejected)
        if not live:
            # Everything ejected (cannot happen past max_ejection_fraction, but a silent fleet
            # can): the backend heard from most recently.
            heard = self.tracker.heard_s
            return max(range(n), key=lambda b: heard[b]), "all_ejected"
        if len(live) == 1:
            return live[0], "only_candidate"
        slo = request.ttft_slo_ms
        if slo >= self._loosest:
            self._loosest = slo
            last_sent = self.last_sent
            if now - min(last_sent) > s.explore_s:  # else no backend is due
                for b in live:
                    if now - last_sent[b] > s.explore_s:
                        return b, "explore"
        if s.choices and len(live) > s.choices:
            live = self._draw(live, s.choices)
            self._drawn = live
        top = likeliest(live, p, cost)
        p_top = p[top]
        if p_top < s.lost_p:
            return min(live, key=lambda b: (p[b], cost[b])), "lost_everywhere"
        prev = self.pref.get(request.tier, -1)
        if prev >= 0 and ejected[prev]:
            prev = -1
        if p_top < s.target:
            if s.stick_p > 0.0 and prev >= 0 and p[prev] >= p_top - s.stick_p:
                return prev, "kept"
            if s.at_risk == "hotcold":
                return self._hotcold(live, inflight), "hotcold_at_risk"
            if s.tie_p > 0.0:
                top = least_loaded(live, p, p_top - s.tie_p, inflight, cost)
            return top, "likeliest_at_risk"
        # cheapest among the backends nearly as safe as the safest
        limit = (1.0 - p_top) * s.risk_ratio
        tie = s.tie_p > 0.0
        best, best_key = top, (cost[top], inflight[top] if tie else 0, -p_top)
        for b in live:
            if 1.0 - p[b] <= limit and p[b] >= s.target:
                key = (cost[b], inflight[b] if tie else 0, -p[b])
                if key < best_key:
                    best, best_key = b, key
        if (
            prev >= 0
            and prev != best
            and (s.stick_p > 0.0 or s.stick_cost > 0.0)
            and p[prev] >= s.target
            and p[prev] >= p[best] - s.stick_p
            and cost[best] >= cost[prev] * (1.0 - s.stick_cost)
        ):
            return prev, "kept"
        return best, "cheapest_likely"

    def _live(self, ejected: list[bool]) -> list[int]:
        """The backends not ejected (kept with the `_ejected` list it was made from)."""
        if ejected is self._ejected:
            cached = self._live_of
            if cached[0] is ejected:
                return cached[1]
            live = [b for b in range(self.n) if not ejected[b]]
            self._live_of = (ejected, live)
            return live
        return [b for b in range(self.n) if not ejected[b]]

    def _draw(self, live: list[int], k: int) -> list[int]:
        """`self._rng.sample(live, k)`, draw for draw, without its generality's cost on the
        request path: for up to 21 live backends the partial Fisher-Yates shuffle
        `random.sample` uses there; larger fleets call it (tests check it draw for draw)."""
        n = len(live)
        if n > 21:
            return self._rng.sample(live, k)
        bits = self._getrandbits
        pool = live[:]
        out = []
        for m in range(n, n - k, -1):
            # `Random._randbelow(m)` inlined: draws of m's bit length until one is below m
            w = m.bit_length()
            j = bits(w)
            while j >= m:
                j = bits(w)
            out.append(pool[j])
            pool[j] = pool[m - 1]
        return out

    def _hotcold(self, live: list[int], rif: Sequence[int]) -> int:
        """Prequal's hot-cold lexicographic rule (`tools.routers.prequal.hcl_pick`) on what this
        router knows without probes: its requests in flight per backend (RIF) and each backend's
        running average TTFT; hot is above the fleet's `DEFAULT_Q_RIF` quantile of RIF."""
        tracker = self.tracker
        pool = {b: [0.0, float(rif[b]), math.exp(tracker.log_ttft[b]), 1.0] for b in live}
        rifs = sorted(v[1] for v in pool.values())
        return hcl_pick(pool, rifs[int(DEFAULT_Q_RIF * (len(rifs) - 1))])

    def _ambiguity(self, p: list[float], pick: int, ejected: list[bool]) -> str | None:
        s = self.settings
        name = self.backends[pick].name
        if self.alarms and name in self.alarms:
            return "alarm_on_pick"
        pp = p[pick]
        if pp < s.low_p and max(p) < s.low_p:
            return "all_at_risk"
        if pp < s.target:
            close = s.close_p
            for b, x in enumerate(p):
                if abs(x - pp) <= close and b != pick and not ejected[b]:
                    return "close_call"
        return None

    def _refresh(self, view: RouterView, backends: Sequence[int]) -> None:
        now = view.now_s
        for b in backends:
            self._due[b] = now + self.settings.refresh_s
            self._refreshed[b] = now
        if self.table is None:
            return
        shift_t = list(self.corr_t)
        shift_e = list(self.corr_e)
        prior = self.prior
        if prior is not None:
            extra = prior.shift(now)  # type: ignore[attr-defined]
            shift_t = [a + x for a, x in zip(shift_t, extra, strict=True)]
            shift_e = [a + x for a, x in zip(shift_e, extra, strict=True)]
        self.refreshes += 1
        self.table.refresh(list(backends), self.tracker, view, shift_t, shift_e, self.tracker.err)

    # -- for decisions and logs ------------------------------------------------------------------
    def predictions(self, request: RequestInfo, view: RouterView) -> list[dict[str, float]]:
        """Per backend, the predicted TTFT and e2e medians and 80% intervals (ms) for `request`,
        as the last refresh sees the fleet now."""
        hashes = request.prefix_hashes
        matched = self.prefix.match(hashes[:256]) if hashes else None
        return self._predictions(request.input_tokens, matched, view)()

    def deferred_predictions(
        self, request: RequestInfo, view: RouterView
    ) -> Callable[[], list[dict[str, float]]]:
        """`predictions` for the request just chosen, as its pick saw the fleet (grid, requests
        in flight, prefix blocks held), computed when the returned function is called: the
        request path only copies a few lists."""
        return self._predictions(request.input_tokens, self._matched, view)

    def _predictions(
        self, input_tokens: int, matched: dict[int, int] | None, view: RouterView
    ) -> Callable[[], list[dict[str, float]]]:
        if self.table is None:
            return partial(_no_predictions, self.n)
        return partial(
            _predicted,
            self.table.quantiles,
            self.table.snapshot(),
            input_tokens,
            matched,
            self.settings.block_tokens,
            list(view.in_flight),
        )


class _ReadOnlyPrefix:
    """A prefix index a shadow router reads (`match`) but never writes (`add` does nothing)."""

    __slots__ = ("match",)

    def __init__(self, index: PrefixIndex) -> None:
        self.match = index.match

    def add(self, hashes: Sequence[int], server: int) -> None:
        return None


def likeliest(live: Sequence[int], p: Sequence[float], cost: Sequence[float]) -> int:
    """`max(live, key=lambda b: (p[b], -cost[b]))`: the likeliest, the cheaper on a tie, the
    first on a full tie; a loop, without a tuple and a call per backend."""
    it = iter(live)
    top = next(it)
    pt, ct = p[top], cost[top]
    for b in it:
        pb = p[b]
        if pb > pt or (pb == pt and cost[b] < ct):
            top, pt, ct = b, pb, cost[b]
    return top


def least_loaded(
    live: Sequence[int],
    p: Sequence[float],
    floor: float,
    inflight: Sequence[int],
    cost: Sequence[float],
) -> int:
    """Of the backends in `live` whose probability is at least `floor`, the one with the fewest
    requests in flight, the cheaper on a tie, the first on a full tie."""
    best, bk = -1, (0, 0.0)
    for b in live:
        if p[b] >= floor:
            k = (inflight[b], cost[b])
            if best < 0 or k < bk:
                best, bk = b, k
    return best


def prefill_tokens(inp: int, matched: dict[int, int] | None, b: int, block_tokens: int) -> float:
    """Prompt tokens backend b must prefill, less the leading blocks it holds (`matched`)."""
    if not matched:
        return float(inp)
    return float(max(1, inp - matched.get(b, 0) * block_tokens))


def _no_predictions(n: int) -> list[dict[str, float]]:
    return [{} for _ in range(n)]


def _predicted(
    quantiles: tuple[tuple[float, ...], ...],
    grid: GridSnapshot,
    input_tokens: int,
    matched: dict[int, int] | None,
    block_tokens: int,
    inflight: list[int],
) -> list[dict[str, float]]:
    zt, ze = quantiles
    out = []
    for b, in_flight in enumerate(inflight):
        tok = prefill_tokens(input_tokens, matched, b, block_tokens)
        mt, st, me, se = grid.moments(b, tok, in_flight - grid.base_in_flight[b])
        out.append(
            {
                "ttft_lo_ms": math.exp(mt + st * zt[0]),
                "ttft_ms": math.exp(mt + st * zt[1]),
                "ttft_hi_ms": math.exp(mt + st * zt[2]),
                "e2e_lo_ms": math.exp(me + se * ze[0]),
                "e2e_ms": math.exp(me + se * ze[1]),
                "e2e_hi_ms": math.exp(me + se * ze[2]),
            }
        )
    return out


class LiveOnly:
    """The ablation without the per-request predictor: P(meet SLO) on a backend is the share of
    its last `window` completions that met this SLO (live signals only), the in-flight count
    breaking ties; same policy, ejection and exploration around it."""

    def __init__(self, n: int, window: int = 64) -> None:
        from collections import deque

        self.recent: list[deque[tuple[float, float, bool]]] = [
            deque(maxlen=window) for _ in range(n)
        ]

    def on_complete(self, c: Completion) -> None:
        ttft = c.ttft_ms if c.ttft_ms is not None else math.inf
        self.recent[c.backend].append((ttft, c.e2e_ms, c.status == "ok"))

    def p(self, request: RequestInfo, inflight: Sequence[int], ejected: list[bool]) -> list[float]:
        out = []
        for b, rec in enumerate(self.recent):
            if ejected[b]:
                out.append(0.0)
                continue
            if not rec:
                out.append(1.0 - 1e-3 * inflight[b])
                continue
            ok = sum(
                1
                for t, e, good in rec
                if good and t <= request.ttft_slo_ms and e <= request.e2e_slo_ms
            )
            out.append(ok / len(rec) - 1e-3 * inflight[b])
        return out
