"""`outlier_ejection`: Envoy's outlier detection (passive health) over its load balancer.

Source: Envoy `source/common/upstream/outlier_detection_impl.cc` (`DetectorImpl`,
`DetectorHostMonitorImpl`, `SuccessRateAccumulator`) and the `config.cluster.v3.OutlierDetection`
proto docs. Defaults are Envoy's:

* consecutive 5xx: the 5th consecutive 5xx from a host (`consecutive_5xx` 5, enforced 100%)
  ejects it at once; any non-5xx response resets the count. Timeouts and resets are local-origin
  errors that Envoy maps to 5xx when `split_external_local_origin_errors` is false (its default),
  so a `timeout` counts as a 5xx here; a 429 (`rejected`) does not;
* every `interval` (10 s) a sweep: returns to service each host ejected for at least
  `min(base_ejection_time * backoff, max_ejection_time)` (30 s * backoff, at most 300 s), then
  runs success-rate ejection on the last interval's counts (hosts with at least
  `success_rate_request_volume` 100 requests, only if at least `success_rate_minimum_hosts` 5 such
  hosts; eject below `mean - success_rate_stdev_factor / 1000 * stdev`, factor 1900) and
  failure-percentage ejection (threshold 85%, enforced 0% by default, so off), then lowers the
  backoff of each host that stayed in service for a whole interval;
* an ejection is allowed only while `100 * (ejected + 1) / hosts <= max_ejection_percent` (10),
  or, with `always_eject_one_host`, when no host is ejected yet.

Note the consequence of Envoy's defaults on a small fleet: with fewer than 10 hosts, 10% never
admits a single ejection, so the detector does nothing unless `always_eject_one_host` is set (an
Envoy option, off by default). `tools.routers.registry` turns it on for that reason.

The load balancer runs over the hosts in service, as Envoy's does over its healthy set, and over
all hosts in panic mode (fewer than `healthy_panic_threshold` 50% in service): `least_request`
(P2C, see `least_request.py`) by default, or `round_robin` (Envoy's cluster default).
Envoy's timer is replaced by sweeps run lazily, in order, before each event they precede.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from tools.routers.base import BackendProfile, Completion, PolicyBase, RequestInfo, RouterView
from tools.routers.least_request import DEFAULT_CHOICE_COUNT, p2c_pick

FIVE_XX = frozenset({"error", "timeout"})
LBS = ("least_request", "round_robin")


class _HostMonitor:
    __slots__ = (
        "backoff",
        "cur_ok",
        "cur_total",
        "ejected",
        "ejected_at",
        "n_5xx",
        "num_ejections",
        "prev_ok",
        "prev_total",
        "unejected_at",
    )

    def __init__(self) -> None:
        self.n_5xx = 0
        self.ejected = False
        self.ejected_at = 0.0
        self.unejected_at: float | None = None
        self.backoff = 0
        self.num_ejections = 0
        self.cur_ok = self.cur_total = 0
        self.prev_ok = self.prev_total = 0


class OutlierEjectionPolicy(PolicyBase):
    name = "outlier_ejection"

    def __init__(
        self,
        backends: Sequence[BackendProfile],
        seed: int = 0,
        lb: str = "least_request",
        choice_count: int = DEFAULT_CHOICE_COUNT,
        consecutive_5xx: int = 5,
        interval_s: float = 10.0,
        base_ejection_time_s: float = 30.0,
        max_ejection_time_s: float = 300.0,
        max_ejection_percent: float = 10.0,
        always_eject_one_host: bool = False,
        enforcing_consecutive_5xx: float = 100.0,
        enforcing_success_rate: float = 100.0,
        success_rate_minimum_hosts: int = 5,
        success_rate_request_volume: int = 100,
        success_rate_stdev_factor: int = 1900,
        failure_percentage_threshold: float = 85.0,
        enforcing_failure_percentage: float = 0.0,
        failure_percentage_minimum_hosts: int = 5,
        failure_percentage_request_volume: int = 50,
        healthy_panic_threshold: float = 50.0,
    ) -> None:
        n = len(backends)
        if n == 0:
            raise ValueError("outlier_ejection needs at least one backend")
        if lb not in LBS:
            raise ValueError(f"outlier_ejection: lb must be one of {LBS}, not {lb!r}")
        if consecutive_5xx < 1 or interval_s <= 0 or base_ejection_time_s <= 0:
            raise ValueError("outlier_ejection: consecutive_5xx, interval and ejection time > 0")
        if max_ejection_time_s < base_ejection_time_s:
            raise ValueError("outlier_ejection: max_ejection_time cannot be below base time")
        self._n = n
        self._rng = random.Random(seed)
        self.lb = lb
        self.choice_count = choice_count
        self.consecutive_5xx = consecutive_5xx
        self.interval_s = float(interval_s)
        self.base_s = float(base_ejection_time_s)
        self.max_s = float(max_ejection_time_s)
        self.max_ejection_percent = float(max_ejection_percent)
        self.always_eject_one_host = always_eject_one_host
        self.enf_5xx = enforcing_consecutive_5xx
        self.enf_sr = enforcing_success_rate
        self.sr_min_hosts = success_rate_minimum_hosts
        self.sr_volume = success_rate_request_volume
        self.sr_factor = success_rate_stdev_factor / 1000.0
        self.fp_threshold = failure_percentage_threshold
        self.enf_fp = enforcing_failure_percentage
        self.fp_min_hosts = failure_percentage_minimum_hosts
        self.fp_volume = failure_percentage_request_volume
        self.panic_threshold = healthy_panic_threshold
        self.hosts = [_HostMonitor() for _ in range(n)]
        self.ejections = 0
        """Ejections enforced so far (all kinds)."""
        self._active = 0
        self._all = tuple(range(n))
        self._healthy: tuple[int, ...] = self._all
        self._rr = self._rng.randrange(n)
        self._next_sweep: float | None = None

    # -- the load balancer over the hosts in service -------------------------------------------

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        self._advance(view.now_s)
        hosts = self._healthy
        if not hosts or 100.0 * len(hosts) / self._n < self.panic_threshold:
            hosts = self._all
        if self.lb == "round_robin":
            i = hosts[self._rr % len(hosts)]
            self._rr += 1
            return i
        return p2c_pick(self._rng.random, hosts, view.in_flight, self.choice_count)

    def is_ejected(self, backend: int) -> bool:
        return self.hosts[backend].ejected

    # -- passive health -------------------------------------------------------------------------

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        now = completion.finished_at_s
        self._advance(now)
        h = self.hosts[completion.backend]
        h.cur_total += 1
        if completion.status in FIVE_XX:
            h.n_5xx += 1
            if h.n_5xx == self.consecutive_5xx and not h.ejected:
                # Envoy resets the count after handling it, but not for a host already ejected
                # (its count then runs on until a non-5xx or the uneject resets it).
                self._eject(completion.backend, now, self.enf_5xx)
                h.n_5xx = 0
        else:
            h.cur_ok += 1
            h.n_5xx = 0

    def _enforced(self, percent: float) -> bool:
        return percent >= 100.0 or self._rng.random() * 100.0 < percent

    def _eject(self, i: int, now: float, enforcing: float) -> None:
        allowed = 100.0 * (self._active + 1) / self._n <= self.max_ejection_percent
        if self.always_eject_one_host and self._active == 0:
            allowed = True
        if not allowed or not self._enforced(enforcing):
            return
        h = self.hosts[i]
        h.ejected = True
        h.ejected_at = now
        h.num_ejections += 1
        if h.backoff * self.base_s < self.max_s + self.base_s:
            h.backoff += 1
        self._active += 1
        self.ejections += 1
        self._refresh()

    def _uneject(self, i: int, now: float) -> None:
        h = self.hosts[i]
        h.ejected = False
        h.n_5xx = 0
        h.unejected_at = now
        self._active -= 1
        self._refresh()

    def _refresh(self) -> None:
        self._healthy = tuple(i for i, h in enumerate(self.hosts) if not h.ejected)

    def _advance(self, now: float) -> None:
        if self._next_sweep is None:
            self._next_sweep = now + self.interval_s
            return
        while now >= self._next_sweep:
            self._sweep(self._next_sweep)
            self._next_sweep += self.interval_s

    def _sweep(self, now: float) -> None:
        """Envoy's `onIntervalTimer`: uneject, rotate the buckets, rate ejections, backoff."""
        for i, h in enumerate(self.hosts):
            if h.ejected and now - h.ejected_at >= min(self.base_s * h.backoff, self.max_s):
                self._uneject(i, now)
            h.prev_ok, h.prev_total = h.cur_ok, h.cur_total
            h.cur_ok = h.cur_total = 0
        self._rate_ejections(now)
        for h in self.hosts:
            if (
                not h.ejected
                and h.unejected_at is not None
                and now - h.unejected_at >= self.interval_s
                and h.backoff > 0
            ):
                h.backoff -= 1

    def _rate_ejections(self, now: float) -> None:
        if self._n < self.sr_min_hosts and self._n < self.fp_min_hosts:
            return
        sr_hosts: list[tuple[int, float]] = []
        fp_hosts: list[tuple[int, float]] = []
        for i, h in enumerate(self.hosts):
            if h.ejected or h.prev_total == 0:
                continue
            rate = 100.0 * h.prev_ok / h.prev_total
            if h.prev_total >= self.sr_volume:
                sr_hosts.append((i, rate))
            if h.prev_total >= self.fp_volume:
                fp_hosts.append((i, rate))
        if sr_hosts and len(sr_hosts) >= self.sr_min_hosts:
            mean = sum(r for _, r in sr_hosts) / len(sr_hosts)
            stdev = math.sqrt(sum((r - mean) ** 2 for _, r in sr_hosts) / len(sr_hosts))
            threshold = mean - self.sr_factor * stdev
            for i, r in sr_hosts:
                if r < threshold and not self.hosts[i].ejected:
                    self._eject(i, now, self.enf_sr)
        if fp_hosts and len(fp_hosts) >= self.fp_min_hosts:
            for i, r in fp_hosts:
                if 100.0 - r >= self.fp_threshold and not self.hosts[i].ejected:
                    self._eject(i, now, self.enf_fp)
