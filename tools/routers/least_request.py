"""`least_request`: Envoy's LEAST_REQUEST load balancer on the router's active requests.

Source: Envoy `LeastRequestLoadBalancer`
(source/extensions/load_balancing_policies/least_request/least_request_lb.{h,cc}) and the
`envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest` proto docs:

* all weights equal (the default here): `choice_count` hosts (default 2) are drawn uniformly at
  random *with replacement*; the first drawn is the candidate and a later draw replaces it only if
  it has strictly fewer active requests (`unweightedHostPick`). This is P2C, the power of two
  choices (Mitzenmacher);
* weights differ: an earliest-deadline-first schedule where a host's effective weight is
  `load_balancing_weight / (active_requests + 1) ** active_request_bias` (bias default 1.0),
  recomputed for the picked host each time it is picked and re-queued with deadline
  `now_deadline + 1 / weight`. A loaded host is picked less and less often but never drained.

Active requests are what the proxy itself has outstanding on each host: `RouterView.in_flight`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence

from tools.routers.base import BackendProfile, PolicyBase, RequestInfo, RouterView

DEFAULT_CHOICE_COUNT = 2
DEFAULT_ACTIVE_REQUEST_BIAS = 1.0


def p2c_pick(
    rand: Callable[[], float], hosts: Sequence[int], active: Sequence[int], choice_count: int
) -> int:
    """Envoy's `unweightedHostPick` over `hosts`: draws with replacement, strictly fewer wins."""
    n = len(hosts)
    best = hosts[int(rand() * n)]
    for _ in range(choice_count - 1):
        j = hosts[int(rand() * n)]
        if active[j] < active[best]:
            best = j
    return best


def effective_weight(weight: float, active: int, bias: float) -> float:
    """Envoy's dynamic weight of a host with `active` outstanding requests."""
    if bias == 0.0:
        return weight
    if bias == 1.0:
        return weight / (active + 1)
    return weight / (active + 1) ** bias


class LeastRequestPolicy(PolicyBase):
    name = "least_request"

    def __init__(
        self,
        backends: Sequence[BackendProfile],
        seed: int = 0,
        choice_count: int = DEFAULT_CHOICE_COUNT,
        weights: Sequence[float] | None = None,
        active_request_bias: float = DEFAULT_ACTIVE_REQUEST_BIAS,
    ) -> None:
        n = len(backends)
        if n == 0:
            raise ValueError("least_request needs at least one backend")
        if choice_count < 2:
            raise ValueError("least_request: choice_count must be at least 2 (Envoy's minimum)")
        if active_request_bias < 0:
            raise ValueError("least_request: active_request_bias must be >= 0")
        if weights is not None and (len(weights) != n or any(w <= 0 for w in weights)):
            raise ValueError("least_request: weights must be one positive number per backend")
        self._n = n
        self._all = tuple(range(n))
        self._rng = random.Random(seed)
        self.choice_count = choice_count
        self.bias = float(active_request_bias)
        self.weights = tuple(float(w) for w in weights) if weights is not None else None
        self._weighted = self.weights is not None and len(set(self.weights)) > 1
        # EDF schedule: (deadline, insertion order, backend), built with the static weights as
        # Envoy builds it when the host set changes (no request is active yet).
        self._edf: list[tuple[float, int, int]] = []
        self._order = 0
        if self._weighted:
            assert self.weights is not None
            for i, w in enumerate(self.weights):
                self._push(1.0 / w, i)

    def _push(self, deadline: float, backend: int) -> None:
        heapq.heappush(self._edf, (deadline, self._order, backend))
        self._order += 1

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        active = view.in_flight
        if self._weighted:
            assert self.weights is not None
            deadline, _, i = heapq.heappop(self._edf)
            w = effective_weight(self.weights[i], active[i], self.bias)
            self._push(deadline + 1.0 / w, i)
            return i
        return p2c_pick(self._rng.random, self._all, active, self.choice_count)
