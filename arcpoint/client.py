"""A client for calling services: route a request, report how it ended, ask a question.

    from arcpoint.client import Client

    with Client("http://127.0.0.1:8787", token=os.environ.get("ARCPOINT_TOKEN")) as arc:
        d = arc.route(tier="premium", input_tokens=812)
        ...                                   # send the request to d.backend, time it
        arc.record_outcomes([{"decision_id": d.decision_id, "e2e_ms": 840.0,
                              "ttft_ms": 95.0, "status": "ok"}])

Errors come back as `ArcpointError` with the HTTP status and the service's `{field, reason}`
list; a call that gets no answer in time raises `ArcpointTimeout` (an `ArcpointError`) naming
the endpoint and the limit. Every call has a finite timeout: `route()` 2 s by default, more than
the router agent's escalation deadline (1.5 s with Claude) so an escalated request is answered,
short enough that a stuck router is bypassed, never waited on; other calls 5 s, `ask()` 120 s.
`record_outcomes()` retries connection failures, timeouts and 5xx with backoff, which is safe
because a repeated outcome is idempotent on the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = [
    "ArcpointError",
    "ArcpointTimeout",
    "AskAnswer",
    "Client",
    "OutcomeReport",
    "RouteDecision",
]


class ArcpointError(RuntimeError):
    def __init__(self, status: int, error: str, detail: list[dict[str, str]]) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        reasons = "; ".join(f"{d.get('field', '-')}: {d.get('reason', '')}" for d in detail)
        super().__init__(f"HTTP {status} {error}: {reasons}")


class ArcpointTimeout(ArcpointError):
    """No answer within the call's timeout (`status` 0: no HTTP answer came)."""

    def __init__(self, method: str, url: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        reason = f"{method} {url}: no answer within {timeout_s:g} s"
        super().__init__(0, "timeout", [{"field": "-", "reason": reason}])


@dataclass(frozen=True)
class RouteDecision:
    decision_id: str
    backend: str
    reason: str
    ambiguous: bool
    p_meet_slo: float | None
    escalated: bool
    recorded: bool
    sla_ms: float
    model_version: str | None


@dataclass(frozen=True)
class OutcomeReport:
    accepted: int
    duplicate: int
    rejected: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class AskAnswer:
    answer: str
    trace_id: str | None
    llm: str
    agent: str | None = None
    thread_id: str | None = None
    tools_called: list[str] = field(default_factory=list)


class Client:
    """Synchronous client over one pooled `httpx.Client` (thread-safe; reuse it)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout_s: float = 5.0,
        route_timeout_s: float = 2.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        for name, value in (("timeout_s", timeout_s), ("route_timeout_s", route_timeout_s)):
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive finite number of seconds")
        self._timeout = float(timeout_s)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            transport=transport,
        )
        self._route_timeout = route_timeout_s
        self._retries = retries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls --------------------------------------------------------------------------------

    def route(
        self,
        tier: str = "standard",
        *,
        sla_ms: float | None = None,
        input_tokens: int | None = None,
        request_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> RouteDecision:
        body: dict[str, Any] = {"tier": tier}
        for key, value in (
            ("sla_ms", sla_ms),
            ("input_tokens", input_tokens),
            ("request_id", request_id),
            ("metadata", dict(metadata) if metadata else None),
        ):
            if value is not None:
                body[key] = value
        data = self._call("POST", "/v1/route", body, timeout=self._route_timeout, retries=0)
        return RouteDecision(**{k: data.get(k) for k in RouteDecision.__dataclass_fields__})

    def record_outcomes(self, outcomes: Iterable[Mapping[str, Any]]) -> OutcomeReport:
        """Report outcomes (rows of decision_id, e2e_ms, status, ttft_ms?, observed_at?).
        When this returns, the accepted rows are durable on the server."""
        rows = [dict(o) for o in outcomes]
        data = self._call("POST", "/v1/outcomes", {"outcomes": rows}, retries=self._retries)
        return OutcomeReport(data["accepted"], data["duplicate"], list(data["rejected"]))

    def ask(self, question: str, *, thread_id: str | None = None) -> AskAnswer:
        body: dict[str, Any] = {"question": question}
        if thread_id is not None:
            body["thread_id"] = thread_id
        data = self._call("POST", "/v1/ask", body, timeout=120.0, retries=0)
        return AskAnswer(
            answer=data["answer"],
            trace_id=data.get("trace_id"),
            llm=data.get("llm", ""),
            agent=data.get("agent"),
            thread_id=data.get("thread_id"),
            tools_called=list(data.get("tools_called") or []),
        )

    def fleet(self) -> dict[str, Any]:
        return self._call("GET", "/v1/fleet", None, retries=self._retries)

    # -- transport ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        timeout: float | None = None,
        retries: int = 0,
    ) -> dict[str, Any]:
        attempt = 0
        limit = timeout if timeout is not None else self._timeout
        while True:
            try:
                resp = self._http.request(method, path, json=body, timeout=limit)
            except httpx.TimeoutException:
                if attempt >= retries:
                    raise ArcpointTimeout(method, f"{self._http.base_url}{path}", limit) from None
            except httpx.TransportError:
                if attempt >= retries:
                    raise
            else:
                if resp.status_code < 400:
                    return resp.json()
                if resp.status_code < 500 or attempt >= retries:
                    raise _error(resp)
            attempt += 1
            time.sleep(min(2.0, 0.1 * 2**attempt))


def _error(resp: httpx.Response) -> ArcpointError:
    try:
        data = resp.json()
        return ArcpointError(resp.status_code, data.get("error", "error"), data.get("detail", []))
    except ValueError:
        return ArcpointError(resp.status_code, "error", [{"field": "-", "reason": resp.text[:200]}])
