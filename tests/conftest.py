from __future__ import annotations

import ipaddress
import math
import socket

import pytest

from tools.routing import BackendInfo, BackendView, FleetView

_connect = socket.socket.connect


def _local_only(sock: socket.socket, address: object) -> object:
    """socket.connect that refuses anything but loopback and Unix sockets: nothing in the
    suite reaches the internet, even with a key or a proxy in the environment."""
    if isinstance(address, tuple):
        host = str(address[0])
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local:
            raise ConnectionRefusedError(f"tests may not reach the network ({host})")
    return _connect(sock, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ARCPOINT_ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket.socket, "connect", _local_only)


FLEET = (
    BackendInfo("b0", 1.0),
    BackendInfo("b1", 0.5),
    BackendInfo("b2", 2.0),
    BackendInfo("b3", 1.2),
)


def make_view(
    ts: float,
    forecasts: dict[str, float | tuple[float, float, float]],
    *,
    errors: dict[str, float] | None = None,
    rps: dict[str, float] | None = None,
    arrivals: int = 400,
    alarms: dict[str, str] | None = None,
    backends: tuple[BackendInfo, ...] = FLEET,
) -> FleetView:
    """A fleet view with given forecasts: a number means a tight interval of +-10 ms."""
    errors = errors or {}
    rps = rps or {}
    views = []
    for b in backends:
        f = forecasts.get(b.name, math.nan)
        mean, lo, hi = f if isinstance(f, tuple) else (f, f - 10.0, f + 10.0)
        r = rps.get(b.name, arrivals / 10.0 / len(backends))
        views.append(
            BackendView(
                name=b.name,
                cost_per_request=b.cost_per_request,
                rps=r,
                p95_ms=mean,
                error_rate=errors.get(b.name, 0.0),
                in_flight=r * 0.1,
                forecast_ms=mean,
                forecast_lo_ms=lo,
                forecast_hi_ms=hi,
            )
        )
    return FleetView(ts=ts, backends=tuple(views), arrivals=arrivals, alarms=alarms or {})


@pytest.fixture
def fleet() -> tuple[BackendInfo, ...]:
    return FLEET
