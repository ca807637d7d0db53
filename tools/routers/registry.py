"""Every routing policy by name, built one way: `make_policy(name, backends, seed, **options)`.

Each policy gets its own seeded `random.Random`, so a run is reproducible and two policies raced on
the same workload do not share random draws. Options are the policy's keyword arguments (see each
module); an unknown name or option is a `ValueError` that lists what is known.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from tools.routers.base import BackendProfile, RoutingPolicy
from tools.routers.c3 import C3Policy
from tools.routers.least_request import LeastRequestPolicy
from tools.routers.llmd import LlmdPolicy
from tools.routers.outlier_ejection import OutlierEjectionPolicy
from tools.routers.peak_ewma import PeakEwmaPolicy
from tools.routers.predictive import PredictiveRouter
from tools.routers.prequal import PrequalPolicy
from tools.routers.round_robin import RoundRobinPolicy
from tools.routers.static import StaticPolicy

_FACTORIES: dict[str, Callable[..., RoutingPolicy]] = {
    "static": StaticPolicy,
    "round_robin": RoundRobinPolicy,
    "least_request": LeastRequestPolicy,
    "peak_ewma": PeakEwmaPolicy,
    "outlier_ejection": OutlierEjectionPolicy,
    "prequal": PrequalPolicy,
    "c3": C3Policy,
    "llmd": LlmdPolicy,
    "predictive": PredictiveRouter,
}

POLICIES: tuple[str, ...] = tuple(_FACTORIES)
"""Names of every policy: the baselines, cheapest and blindest first, then the predictive
router (`tools.routers.predictive`)."""
BASELINES: tuple[str, ...] = tuple(p for p in POLICIES if p != "predictive")

_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    # Envoy's max_ejection_percent 10 admits no ejection at all below 10 hosts; an operator of a
    # 4-8 backend fleet sets always_eject_one_host (an Envoy option) so that one host can go.
    "outlier_ejection": {"always_eject_one_host": True},
}


def make_policy(
    name: str, backends: Sequence[BackendProfile], seed: int = 0, **options: Any
) -> RoutingPolicy:
    """A fresh policy `name` over `backends`, its randomness seeded by `seed`."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown routing policy {name!r}; known: {', '.join(POLICIES)}")
    if not backends:
        raise ValueError(f"{name}: at least one backend is needed")
    params = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(params) - {"backends", "seed"})
    if unknown and name == "predictive":
        # the router's settings arrive as keyword overrides; it names unknown ones itself
        unknown = []
    if unknown:
        allowed = sorted(p for p in params if p not in ("backends", "seed"))
        raise ValueError(f"{name}: unknown option(s) {unknown}; allowed: {allowed}")
    kwargs = {**_DEFAULT_OPTIONS.get(name, {}), **options}
    if "seed" in params:
        kwargs["seed"] = seed
    return factory(backends, **kwargs)
