"""`llmd`: the llm-d / Gateway API Inference Extension endpoint picker (EPP) with its default
scorers.

Sources (kubernetes-sigs/gateway-api-inference-extension):
* `pkg/epp/scheduling/framework/plugins/scorer/queue.go` (queue-scorer): min-max normalised
  waiting queue, `(max - q) / (max - min)`, 1.0 for all when every queue is the same length;
* `.../scorer/kvcache_utilization.go` (kv-cache-utilization-scorer): `1 - KVCacheUsagePercent`;
* `.../plugins/multi/prefix/plugin.go` and `indexer.go` (prefix-cache-scorer, the approximate
  "estimate" mode): the router keeps, per endpoint, an LRU set of the prompt block hashes it has
  routed there (31,250 blocks per server by default, at most 256 blocks matched); a request's score
  on an endpoint is the number of its leading blocks found there over its block count, matching
  stopping at the first block no endpoint holds; the chosen endpoint's index is updated with the
  request's blocks when the request is sent;
* the inferencepool chart's `default-plugins.yaml`: weights queue 2, KV cache 2, prefix 3, and
  `max-score-picker`: the highest weighted sum wins, ties broken uniformly at random.

The queue and KV-cache figures are the endpoint's last scraped `num_requests_waiting` and
`kv_cache_usage_perc` (stale by the scrape's age, as the EPP's are); an endpoint never scraped
reads as zeros, as the EPP's empty metrics do. The EPP polls every endpoint every 50 ms
(`--refresh-metrics-interval`); the policy says so in `scrape_interval_s` for an environment that
honours it. That cadence matters: between two polls every request sees the same scores and goes
to the same endpoint, so with 1 s scrapes the picker herds.

Requests without prefix hashes score 0 on every endpoint for prefix, so the prefix scorer then
has no effect. The prompt's block hashes come from the request (`RequestInfo.prefix_hashes`, the
trace's block hashes) instead of the EPP hashing the prompt text; the EPP also prepends a hash of
the model name, which adds the same one block to every endpoint that served the model and is left
out here (one model per fleet).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence

from tools.routers.base import (
    BackendProfile,
    EngineMetrics,
    PolicyBase,
    RequestInfo,
    RouterView,
)

DEFAULT_WEIGHTS = {"queue": 2.0, "kv_cache": 2.0, "prefix": 3.0}
DEFAULT_LRU_CAPACITY_PER_SERVER = 31_250
DEFAULT_MAX_PREFIX_BLOCKS = 256
DEFAULT_REFRESH_METRICS_INTERVAL_S = 0.05
"""The EPP's `--refresh-metrics-interval` default (50 ms): how often it polls each endpoint."""


class PrefixIndex:
    """The EPP's approximate prefix index: per-server LRU sets of block hashes, hash -> servers."""

    def __init__(self, n: int, capacity_per_server: int) -> None:
        if capacity_per_server < 1:
            raise ValueError("prefix index capacity must be positive")
        self.capacity = capacity_per_server
        self._lru: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(n)]
        self._servers: dict[int, set[int]] = {}

    def add(self, hashes: Sequence[int], server: int) -> None:
        lru = self._lru[server]
        servers = self._servers
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
                continue
            lru[h] = None
            servers.setdefault(h, set()).add(server)
            if len(lru) > self.capacity:
                old, _ = lru.popitem(last=False)
                holders = servers[old]
                holders.discard(server)
                if not holders:
                    del servers[old]

    def match(self, hashes: Sequence[int]) -> dict[int, int]:
        """Server -> number of the leading blocks it holds (the EPP's `matchLongestPrefix`)."""
        res: dict[int, int] = {}
        servers = self._servers
        for h in hashes:
            holders = servers.get(h)
            if not holders:
                break
            for s in holders:
                res[s] = res.get(s, 0) + 1
        return res


class LlmdPolicy(PolicyBase):
    name = "llmd"

    def __init__(
        self,
        backends: Sequence[BackendProfile],
        seed: int = 0,
        weights: dict[str, float] | None = None,
        lru_capacity_per_server: int = DEFAULT_LRU_CAPACITY_PER_SERVER,
        max_prefix_blocks: int = DEFAULT_MAX_PREFIX_BLOCKS,
        refresh_metrics_interval_s: float = DEFAULT_REFRESH_METRICS_INTERVAL_S,
    ) -> None:
        n = len(backends)
        if n == 0:
            raise ValueError("llmd needs at least one backend")
        w = dict(DEFAULT_WEIGHTS)
        if weights:
            unknown = set(weights) - set(w)
            if unknown:
                raise ValueError(f"llmd: unknown scorer(s) {sorted(unknown)}; known: {sorted(w)}")
            w.update(weights)
        if max_prefix_blocks < 1:
            raise ValueError("llmd: max_prefix_blocks must be positive")
        if not refresh_metrics_interval_s > 0:
            raise ValueError("llmd: refresh_metrics_interval_s must be positive")
        self.scrape_interval_s = float(refresh_metrics_interval_s)
        self._n = n
        self._rng = random.Random(seed)
        self.w_queue, self.w_kv, self.w_prefix = w["queue"], w["kv_cache"], w["prefix"]
        self.max_prefix_blocks = max_prefix_blocks
        self.index = PrefixIndex(n, lru_capacity_per_server)
        self._waiting = [0] * n
        self._kv = [0.0] * n
        self.prefix_hits = 0
        """Blocks of routed requests found on the chosen endpoint by the index."""
        self.prefix_blocks = 0

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        i = metrics.backend
        if 0 <= i < self._n:
            self._waiting[i] = metrics.num_requests_waiting
            self._kv[i] = metrics.kv_cache_usage_perc

    def scores(self, request: RequestInfo) -> list[float]:
        """The weighted sum of the three scorers for every endpoint."""
        return self._scores(request)[0]

    def _scores(self, request: RequestInfo) -> tuple[list[float], dict[int, int]]:
        waiting = self._waiting
        q_min, q_max = min(waiting), max(waiting)
        span = q_max - q_min
        hashes = request.prefix_hashes[: self.max_prefix_blocks]
        matched = self.index.match(hashes) if hashes else {}
        total = len(hashes)
        out = []
        for i in range(self._n):
            queue = 1.0 if span == 0 else (q_max - waiting[i]) / span
            s = self.w_queue * queue + self.w_kv * (1.0 - self._kv[i])
            if total:
                s += self.w_prefix * matched.get(i, 0) / total
            out.append(s)
        return out, matched

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        scores, matched = self._scores(request)
        top = max(scores)
        best = [i for i, s in enumerate(scores) if s == top]
        pick = best[0] if len(best) == 1 else best[self._rng.randrange(len(best))]
        hashes = request.prefix_hashes[: self.max_prefix_blocks]
        if hashes:
            self.prefix_hits += matched.get(pick, 0)
            self.prefix_blocks += len(hashes)
            self.index.add(hashes, pick)
        return pick
