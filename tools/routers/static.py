"""`static`: every request to one configured backend, whatever happens.

The floor of any comparison: what a fleet gets from a hard-coded upstream (an Envoy cluster with
one host, a client pinned to one URL). It never reacts to load, latency or failures.
"""

from __future__ import annotations

from collections.abc import Sequence

from tools.routers.base import BackendProfile, PolicyBase, RequestInfo, RouterView


class StaticPolicy(PolicyBase):
    """Routes everything to `backend` (an index or a backend's name; the first by default)."""

    name = "static"

    def __init__(self, backends: Sequence[BackendProfile], backend: int | str = 0) -> None:
        if not backends:
            raise ValueError("static needs at least one backend")
        if isinstance(backend, str):
            names = [b.name for b in backends]
            if backend not in names:
                raise ValueError(f"static: unknown backend {backend!r}; known: {names}")
            backend = names.index(backend)
        if not 0 <= backend < len(backends):
            raise ValueError(f"static: backend index {backend} outside 0..{len(backends) - 1}")
        self.target = backend

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        return self.target
