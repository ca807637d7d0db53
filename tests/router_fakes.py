"""A hand-driven RouterView and record builders for the routing-policy tests."""

from __future__ import annotations

from tools.routers.base import (
    BackendProfile,
    Completion,
    EngineMetrics,
    ProbeReply,
    RequestInfo,
)


class FakeView:
    """The signals a policy may read, set by hand: clock, in-flight counts, scrapes, probes."""

    def __init__(self, n: int, now_s: float = 0.0) -> None:
        self.now_s = now_s
        self.backends = [BackendProfile(f"b{i}", 0.001, 0.002) for i in range(n)]
        self.in_flight = [0] * n
        self.scrapes: dict[int, EngineMetrics] = {}
        self.probes: list[int] = []

    def last_scrape(self, backend: int) -> EngineMetrics | None:
        return self.scrapes.get(backend)

    def send_probe(self, backend: int) -> None:
        self.probes.append(backend)


def backends(n: int) -> list[BackendProfile]:
    return [BackendProfile(f"b{i}", 0.001, 0.002) for i in range(n)]


def request(rid: int = 0, now: float = 0.0, hashes: tuple[int, ...] = ()) -> RequestInfo:
    return RequestInfo(
        request_id=rid,
        arrival_s=now,
        input_tokens=512,
        tier="standard",
        ttft_slo_ms=1000.0,
        e2e_slo_ms=10000.0,
        prefix_hashes=hashes,
    )


def completion(
    backend: int,
    at: float,
    e2e_ms: float = 100.0,
    ttft_ms: float | None = 50.0,
    status: str = "ok",
    rid: int = 0,
) -> Completion:
    return Completion(
        request_id=rid,
        backend=backend,
        arrival_s=at - e2e_ms / 1000.0,
        finished_at_s=at,
        status=status,
        ttft_ms=ttft_ms if status == "ok" else None,
        e2e_ms=e2e_ms,
        input_tokens=512,
        output_tokens=100,
    )


def scrape(backend: int, at: float, waiting: int = 0, kv: float = 0.0, running: int = 0):
    return EngineMetrics(
        backend=backend,
        scraped_at_s=at,
        num_requests_running=running,
        num_requests_waiting=waiting,
        kv_cache_usage_perc=kv,
    )


def probe(backend: int, at: float, in_flight: int, latency_ms: float | None) -> ProbeReply:
    return ProbeReply(
        backend=backend,
        sent_at_s=at - 0.005,
        received_at_s=at,
        in_flight=in_flight,
        latency_ms=latency_ms,
    )


class FixedRandom:
    """Stands in for `random.Random` where a test must fix the draws."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def run_toy_fleet(
    policy,
    base_s: list[float],
    rate_per_s: float,
    requests: int,
    seed: int = 0,
    probe_delay_s: float = 0.005,
    scrape_every_s: float = 1.0,
) -> list[int]:
    """Drives `policy` through a small event loop; returns the requests sent to each backend.

    Each backend serves a request in `base_s[i] * (1 + 0.5 * active)` seconds, fixed when it
    arrives (a crude shared server); probes answer after `probe_delay_s` with the backend's
    requests in flight and its last latency; scrapes land every `scrape_every_s`.
    """
    import heapq
    import random

    rng = random.Random(seed)
    n = len(base_s)
    view = FakeView(n)
    events: list[tuple[float, int, str, tuple]] = []
    seq = 0

    def push(t: float, kind: str, data: tuple) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, data))
        seq += 1

    last_latency: list[float | None] = [None] * n
    sent = [0] * n
    view.send_probe = lambda b: push(view.now_s + probe_delay_s, "probe", (b, view.now_s))
    t = 0.0
    for rid in range(requests):
        t += rng.expovariate(rate_per_s)
        push(t, "arrival", (rid,))
    k = 1
    while k * scrape_every_s < t:
        push(k * scrape_every_s, "scrape", ())
        k += 1
    while events:
        now, _, kind, data = heapq.heappop(events)
        view.now_s = now
        if kind == "arrival":
            req = request(data[0], now)
            b = policy.choose(req, view)
            assert 0 <= b < n
            sent[b] += 1
            latency = base_s[b] * (1.0 + 0.5 * view.in_flight[b])
            view.in_flight[b] += 1
            push(now + latency, "done", (b, data[0], now))
        elif kind == "done":
            b, rid, start = data
            view.in_flight[b] -= 1
            e2e = (now - start) * 1000.0
            last_latency[b] = e2e
            policy.on_complete(completion(b, at=now, e2e_ms=e2e, ttft_ms=e2e / 5, rid=rid), view)
        elif kind == "probe":
            b, sent_at = data
            reply = ProbeReply(b, sent_at, now, view.in_flight[b], last_latency[b])
            policy.on_probe(reply, view)
        else:
            for b in range(n):
                active = view.in_flight[b]
                m = scrape(
                    b,
                    now,
                    waiting=max(0, active - 4),
                    kv=min(1.0, active / 16),
                    running=min(active, 4),
                )
                view.scrapes[b] = m
                policy.on_scrape(m, view)
    return sent
