"""`prequal`: Prequal (Wydrowski, Kleinberg, Rumble, Archer, "Load is not what you should
balance: Introducing Prequal", NSDI 2024): asynchronous probing, a reusable probe pool, and the
hot-cold lexicographic (HCL) rule on requests in flight (RIF) and latency.

What is implemented, with the paper's operating points as defaults:

* **Asynchronous probing**: each query triggers `r_probe` probes (3; fractional rates are
  carried over between queries) to distinct replicas drawn uniformly at random. Probes never
  block the query: their replies (the replica's own RIF and its recent latency) arrive later and
  route later queries.
* **Probe pool**: at most `m` = 16 replies, the newest per replica; replies older than
  the age limit (1 s) are dropped; when full, the oldest goes. Each query removes `r_remove` = 1
  more, alternating the oldest and the *worst* (the hottest entry with the highest RIF, else the
  cold entry with the highest latency), so the pool does not drift towards describing the fleet
  as busier than it is (selection consumes the good probes first).
* **Reuse budget**: a reply may route up to `b_reuse = max(1, (1 + δ) / ((1 - m/n) r_probe -
  r_remove))` queries (δ = 1; randomly rounded). Each use adds one to the entry's RIF (the client
  compensates for the load it just added). When the formula has no positive denominator (a fleet
  no larger than the pool, n <= m, as in a fleet of 4 to 8 LLM servers) the paper leaves it
  undefined; we then allow `max_reuse` (16) uses, bounded anyway by the age limit and the RIF
  compensation.
* **HCL rule**: a pooled replica is *hot* when its RIF exceeds the `Q_RIF` quantile
  (2^-0.25 ≈ 0.84) of the RIF distribution across replicas, estimated from recent probe replies
  (the last `rif_window` = 64 here; the paper does not give the window). If any pooled replica is
  cold, the cold one with the lowest latency is chosen; otherwise the hot one with the lowest RIF.
* **Fallback**: with fewer than 2 usable replies pooled, a replica uniformly at random (the
  paper's fallback when pool occupancy drops below 2).

Left out, as the paper gives no details: its heuristics against sinkholing (a replica that fails
fast reports low RIF and latency and attracts traffic) and server-side latency estimation (the
probe's latency is whatever the replica reports; `None`, no recent completion, counts as 0).
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from collections.abc import Sequence

from tools.routers.base import BackendProfile, PolicyBase, ProbeReply, RequestInfo, RouterView

DEFAULT_Q_RIF = 2**-0.25


class PrequalPolicy(PolicyBase):
    name = "prequal"

    def __init__(
        self,
        backends: Sequence[BackendProfile],
        seed: int = 0,
        probes_per_query: float = 3.0,
        pool_size: int = 16,
        max_age_s: float = 1.0,
        removes_per_query: float = 1.0,
        reuse_delta: float = 1.0,
        max_reuse: int = 16,
        q_rif: float = DEFAULT_Q_RIF,
        rif_window: int = 64,
        min_pool: int = 2,
    ) -> None:
        n = len(backends)
        if n == 0:
            raise ValueError("prequal needs at least one backend")
        if probes_per_query < 0 or removes_per_query < 0 or reuse_delta < 0:
            raise ValueError("prequal: probe, removal and reuse rates must be >= 0")
        if pool_size < 1 or max_reuse < 1 or rif_window < 1 or max_age_s <= 0:
            raise ValueError("prequal: pool_size, max_reuse, rif_window, max_age_s must be > 0")
        if not 0.0 <= q_rif <= 1.0:
            raise ValueError("prequal: q_rif is a quantile in [0, 1]")
        self._n = n
        self._rng = random.Random(seed)
        self.r_probe = float(probes_per_query)
        self.pool_size = pool_size
        self.max_age_s = float(max_age_s)
        self.r_remove = float(removes_per_query)
        self.q_rif = float(q_rif)
        self.min_pool = min_pool
        self.b_reuse = reuse_budget(
            n, pool_size, self.r_probe, self.r_remove, reuse_delta, max_reuse
        )
        self.pool: dict[int, list[float]] = {}
        """Backend -> [received_at_s, rif, latency_ms, uses_left]: one entry per replica."""
        self._rif_window = rif_window
        self._rifs: deque[int] = deque()
        """Recent probe replies' RIF, oldest first; `_rifs_sorted` holds the same, sorted."""
        self._rifs_sorted: list[int] = []
        self._targets = list(range(n))
        self._probe_credit = 0.0
        self._remove_credit = 0.0
        self._remove_oldest_next = True
        self.probes_sent = 0
        self.pool_picks = 0
        """Queries routed from the probe pool (the rest fell back to a random replica)."""
        self.fallback_picks = 0

    # -- probing --------------------------------------------------------------------------------

    def _send_probes(self, view: RouterView) -> None:
        self._probe_credit += self.r_probe
        k = int(self._probe_credit)
        if k <= 0:
            return
        self._probe_credit -= k
        # distinct targets uniformly at random: a partial Fisher-Yates shuffle
        targets = self._targets
        n = self._n
        rand = self._rng.random
        for j in range(min(k, n)):
            r = j + int(rand() * (n - j))
            targets[j], targets[r] = targets[r], targets[j]
            view.send_probe(targets[j])
            self.probes_sent += 1

    def on_probe(self, reply: ProbeReply, view: RouterView) -> None:
        b = reply.backend
        if not 0 <= b < self._n:
            return
        rif = reply.in_flight
        self._rifs.append(rif)
        bisect.insort(self._rifs_sorted, rif)
        if len(self._rifs) > self._rif_window:
            old = self._rifs.popleft()
            del self._rifs_sorted[bisect.bisect_left(self._rifs_sorted, old)]
        uses = self.b_reuse
        whole = math.floor(uses)
        uses_left = whole + (1 if self._rng.random() < uses - whole else 0)
        latency = reply.latency_ms if reply.latency_ms is not None else 0.0
        pool = self.pool
        pool.pop(b, None)
        pool[b] = [reply.received_at_s, float(reply.in_flight), latency, float(max(uses_left, 1))]
        if len(pool) > self.pool_size:
            self._remove_oldest()

    # -- selection ------------------------------------------------------------------------------

    def hot_threshold(self) -> float | None:
        """The Q_RIF quantile of recent probe replies' RIF (`None` before any reply)."""
        rifs = self._rifs_sorted
        if not rifs:
            return None
        return float(rifs[int(self.q_rif * (len(rifs) - 1))])

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        self._send_probes(view)
        now = view.now_s
        pool = self.pool
        oldest_allowed = now - self.max_age_s
        for b in [b for b, e in pool.items() if e[0] < oldest_allowed]:
            del pool[b]
        if len(pool) < self.min_pool:
            self.fallback_picks += 1
            return self._rng.randrange(self._n)
        threshold = self.hot_threshold()
        best = hcl_pick(pool, threshold)
        entry = pool[best]
        entry[1] += 1.0
        entry[3] -= 1.0
        if entry[3] <= 0.0:
            del pool[best]
        self.pool_picks += 1
        self._remove_credit += self.r_remove
        while self._remove_credit >= 1.0:
            self._remove_credit -= 1.0
            if self._remove_oldest_next:
                self._remove_oldest()
            else:
                self._remove_worst(threshold)
            self._remove_oldest_next = not self._remove_oldest_next
        return best

    def _remove_oldest(self) -> None:
        if self.pool:
            del self.pool[min(self.pool, key=lambda b: self.pool[b][0])]

    def _remove_worst(self, threshold: float | None) -> None:
        pool = self.pool
        if not pool:
            return
        hot = [b for b, e in pool.items() if threshold is not None and e[1] > threshold]
        if hot:
            del pool[max(hot, key=lambda b: pool[b][1])]
        else:
            del pool[max(pool, key=lambda b: pool[b][2])]


def hcl_pick(pool: dict[int, list[float]], threshold: float | None) -> int:
    """The HCL rule: the coldest-latency cold replica, else the lowest-RIF hot one.

    Ties go to the lower RIF, then to the lower backend index.
    """
    best_cold = -1
    best_cold_key = (math.inf, math.inf)
    best_hot = -1
    best_hot_key = (math.inf, math.inf)
    for b, (_, rif, latency, _) in pool.items():
        if threshold is None or rif <= threshold:
            key = (latency, rif)
            if key < best_cold_key or (key == best_cold_key and b < best_cold):
                best_cold, best_cold_key = b, key
        else:
            key = (rif, latency)
            if key < best_hot_key or (key == best_hot_key and b < best_hot):
                best_hot, best_hot_key = b, key
    return best_cold if best_cold >= 0 else best_hot


def reuse_budget(
    n: int, pool_size: int, r_probe: float, r_remove: float, delta: float, max_reuse: int
) -> float:
    """`max(1, (1 + δ) / ((1 - m/n) r_probe - r_remove))`, capped at `max_reuse`.

    Derivation: a new reply adds an entry unless its replica is already pooled (share m/n), so
    entries arrive at `(1 - m/n) r_probe` per query and leave at `r_remove + 1 / b_reuse`; the
    pool holds its size when `b_reuse >= 1 / ((1 - m/n) r_probe - r_remove)`, with margin 1 + δ.
    """
    m = min(pool_size, n)
    denominator = (1.0 - m / n) * r_probe - r_remove
    if denominator <= 0.0:
        return float(max_reuse)
    return min(float(max_reuse), max(1.0, (1.0 + delta) / denominator))
