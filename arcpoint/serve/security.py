"""Safe defaults at the door: bearer tokens, body size limits, per-client rate limits.

- The token is compared with `hmac.compare_digest` over bytes of equal treatment, so the time a
  wrong token takes does not tell how much of it was right. It is never logged: failures are
  counted, not echoed.
- `BodyLimit` is raw ASGI middleware: a `Content-Length` over the limit gets 413 before the
  body is read, and a chunked body is cut off (413) once it passes the limit, so a client cannot
  make the service buffer more than the limit. It also records each request's route template,
  status and duration for `/metrics`.
- `RateLimiter` is a token bucket per client address, bounded in how many clients it remembers.
"""

from __future__ import annotations

import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException

from arcpoint.serve.metrics import ServeMetrics

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def token_ok(expected: str | None, authorization: str | None) -> bool:
    """True when no token is configured, or the header carries it (`Bearer <token>`)."""
    if expected is None:
        return True
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


class RateLimiter:
    """`rate` requests per second per client with bursts of `burst`; remembers `max_clients`."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_clients

    def take(self, client: str) -> float:
        """0.0 when allowed (a token is spent), else the seconds until the next token."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


def _error_body(status: int, error: str, reason: str) -> bytes:
    return json.dumps({"error": error, "detail": [{"field": "body", "reason": reason}]}).encode()


class BodyLimit:
    """See the module docstring."""

    def __init__(self, app: Any, *, max_bytes: int, metrics: ServeMetrics | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        started = [False]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
            await send(message)

        try:
            length = None
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        length = -1
                    break
            if length is not None and (length < 0 or length > self.max_bytes):
                await self._reject(send_wrapper, length)
                return
            seen = [0]
            limit = self.max_bytes
            reason = f"request body larger than {limit} bytes"

            async def receive_limited() -> dict[str, Any]:
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > limit:
                        # An HTTPException, so the framework's body reader passes it on as a
                        # 413 instead of calling it a parse error.
                        if self.metrics is not None:
                            self.metrics.body_too_large.inc()
                        raise HTTPException(413, detail=[{"field": "body", "reason": reason}])
                return message

            await self.app(scope, receive_limited, send_wrapper)
        finally:
            if self.metrics is not None:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                key = (template, scope.get("method", ""), status[0])
                children = self._children.get(key)
                if children is None:  # labels() takes a lock and builds a key: once per series
                    m = self.metrics
                    children = (
                        m.http.labels(template, key[1], str(status[0])),
                        m.http_latency.labels(template),
                    )
                    if len(self._children) < 4096:  # templates x methods x codes: bounded
                        self._children[key] = children
                children[0].inc()
                children[1].observe(time.perf_counter() - start)

    async def _reject(self, send: Send, length: int) -> None:
        if self.metrics is not None:
            self.metrics.body_too_large.inc()
        reason = (
            f"request body larger than {self.max_bytes} bytes"
            if length >= 0
            else "invalid Content-Length"
        )
        body = _error_body(413, "payload_too_large", reason)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
