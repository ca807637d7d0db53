"""`round_robin`: each backend in turn, as Envoy's ROUND_ROBIN does when weights are equal.

Source: Envoy's `RoundRobinLoadBalancer` (source/extensions/load_balancing_policies/round_robin/,
on `EdfLoadBalancerBase`): with equal weights it picks `hosts[rr_index++ % hosts.size()]`, the index
starting at a random offset so that many proxies do not all start on the first host. It ignores
load and latency entirely.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tools.routers.base import BackendProfile, PolicyBase, RequestInfo, RouterView


class RoundRobinPolicy(PolicyBase):
    name = "round_robin"

    def __init__(self, backends: Sequence[BackendProfile], seed: int = 0) -> None:
        if not backends:
            raise ValueError("round_robin needs at least one backend")
        self._n = len(backends)
        self._next = random.Random(seed).randrange(self._n)

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        i = self._next
        self._next = (i + 1) % self._n
        return i
