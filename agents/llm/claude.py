"""`ClaudeModel`: the `LLMModel` interface on the official `anthropic` SDK (Messages API + tools).

What it adds to the SDK, and why:
- the bounded tool loop (`agents.tool_loop`), shared so Claude and the offline reasoner agree;
- prompt caching: `cache_control: ephemeral` on the system block and on the last tool, so the
  stable prefix (tools, then system) is billed at the cache-read rate on repeat calls;
- explicit timeouts and SDK retries, kept inside the caller's deadline: a small SDK middleware
  shrinks each attempt's timeout to the time left and gives up instead of sleeping past the deadline
  for a retry (the router escalates with 1.5 s and must never wait longer);
- a budget (calls per minute, tokens per hour) checked before every call: past it, the model
  declines without calling the API and the caller falls back;
- usage and cost per turn (input, output, cache read, cache write tokens);
- every API failure mapped to an `LLMError` kind instead of an exception.

The API key is read by the SDK (`api_key=` or `ANTHROPIC_API_KEY`), so is `ANTHROPIC_BASE_URL`
(we pass `base_url` only when given one explicitly). The key never appears in an `LLMRun`, a log
line or a repr.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
from anthropic import Middleware
from pydantic import BaseModel, ConfigDict, Field

from agents.llm.base import (
    ErrorKind,
    LLMError,
    ModelReply,
    TokenUsage,
    TurnRequest,
)
from agents.llm.budget import Budget
from agents.llm.pricing import cost_usd, price_for
from agents.tool_loop import RunsAgentLoop

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "claude-sonnet-4-6"
"""Listed in anthropic 2.12's `ModelParam` and not deprecated there (`claude-sonnet-4-5` warns)."""

CACHE_CONTROL: dict[str, str] = {"type": "ephemeral"}


class ClaudeConfig(BaseModel):
    """Settings for `ClaudeModel`; the project settings build one of these."""

    model_config = ConfigDict(frozen=True)

    model_id: str = Field(default=DEFAULT_MODEL_ID, min_length=1)
    max_tokens: int = Field(default=1024, ge=1, le=64_000)
    timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    """Per HTTP attempt (read/write/pool); a run's `deadline_s` shortens it further."""
    connect_timeout_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    max_retries: int = Field(default=2, ge=0, le=10)
    calls_per_minute: int | None = Field(default=30, ge=1)
    tokens_per_hour: int | None = Field(default=300_000, ge=1)


class ClaudeModel(RunsAgentLoop):
    """Claude behind the `LLMModel` interface. See the module docstring."""

    name = "claude"

    def __init__(
        self,
        config: ClaudeConfig | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        budget: Budget | None = None,
        http_client: httpx2.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or ClaudeConfig()
        self.model_id = self.config.model_id
        self.budget = (
            budget
            if budget is not None
            else Budget(self.config.calls_per_minute, self.config.tokens_per_hour)
        )
        self._clock = clock
        optional: dict[str, Any] = {}
        if api_key is not None:
            optional["api_key"] = api_key
        if base_url is not None:  # otherwise the SDK reads ANTHROPIC_BASE_URL
            scheme = base_url.split("://", 1)[0].lower() if "://" in base_url else ""
            if scheme not in ("http", "https"):
                # httpx would refuse it on every attempt, and the SDK would retry that refusal.
                raise ValueError(
                    f"the model endpoint {base_url!r} must start with http:// or https://"
                )
            optional["base_url"] = base_url
        if http_client is not None:
            optional["http_client"] = http_client
        self._client = anthropic.Anthropic(
            timeout=httpx2.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s),
            max_retries=self.config.max_retries,
            middleware=[_DeadlineGuard()],
            **optional,
        )

    @property
    def base_url(self) -> str:
        url = self._client.base_url
        return f"{url.scheme}://{url.host}{f':{url.port}' if url.port else ''}{url.path}"

    def __repr__(self) -> str:
        return f"ClaudeModel(model_id={self.model_id!r}, base_url={self.base_url!r})"

    @property
    def cost_basis(self) -> str:
        return price_for(self.model_id)[1]

    def loop_clock(self) -> Callable[[], float]:
        return self._clock

    # -- one model turn ----------------------------------------------------------------------

    def next_turn(self, request: TurnRequest) -> ModelReply:
        started = self._clock()
        if request.deadline is not None and request.deadline <= started:
            return self._failed(0, 0.0, LLMError(kind="timeout", message="deadline passed"))
        check = self.budget.try_acquire()
        if not check.allowed:
            log.info("claude call declined: %s", check.reason)
            return self._failed(0, 0.0, LLMError(kind="budget_exhausted", message=check.reason))

        state = _CallState(
            deadline=request.deadline,
            clock=self._clock,
            max_retries=self.config.max_retries,
            connect_timeout_s=self.config.connect_timeout_s,
        )
        extra: dict[str, Any] = {}
        if request.deadline is not None:
            remaining = min(request.deadline - started, self.config.timeout_s)
            extra["timeout"] = _attempt_timeout(remaining, state.connect_timeout_s)

        token = _CALL_STATE.set(state)
        try:
            message = self._client.messages.create(**self._params(request), **extra)
        except Exception as err:
            latency = max(0.0, self._clock() - started)
            error = self._error_from(err)
            log.warning(
                "claude call failed after %d attempt(s): %s: %s",
                state.attempts,
                error.kind,
                error.message,
            )
            return self._failed(state.attempts, latency, error)
        finally:
            _CALL_STATE.reset(token)

        latency = max(0.0, self._clock() - started)
        try:
            return self._reply_from(message, latency, state.attempts)
        except Exception as err:  # a response that is not a well-formed Message
            log.warning("claude returned an unreadable message: %s: %s", type(err).__name__, err)
            error = LLMError(
                kind="api_error", message=f"malformed API response: {type(err).__name__}"
            )
            return self._failed(state.attempts, latency, error)

    def _reply_from(self, message: Any, latency: float, attempts: int) -> ModelReply:
        usage = _usage(message.usage)
        self.budget.record_tokens(usage.budgeted_tokens)
        model_id = (
            message.model if isinstance(message.model, str) and message.model else self.model_id
        )
        content = [_block_param(block) for block in message.content]
        log.info(
            "claude turn model=%s stop=%s in=%d out=%d cache_read=%d cache_write=%d"
            " latency=%.3fs attempts=%d",
            model_id,
            message.stop_reason,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            latency,
            attempts,
        )
        return ModelReply(
            model_id=model_id,
            content=content,
            stop_reason=message.stop_reason,
            stop_details=_stop_details(message),
            usage=usage,
            cost_usd=cost_usd(model_id, usage),
            latency_s=latency,
            attempts=attempts,
            message_id=message.id,
        )

    def _params(self, request: TurnRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": self.config.max_tokens,
            "messages": request.messages,
        }
        if request.system:
            params["system"] = [
                {"type": "text", "text": request.system, "cache_control": CACHE_CONTROL}
            ]
        if request.tools:
            tools = [tool.to_api() for tool in request.tools]
            tools[-1]["cache_control"] = CACHE_CONTROL
            params["tools"] = tools
            if request.tool_choice is not None:
                params["tool_choice"] = request.tool_choice
        return params

    def _failed(self, attempts: int, latency: float, error: LLMError) -> ModelReply:
        return ModelReply(model_id=self.model_id, attempts=attempts, latency_s=latency, error=error)

    def _error_from(self, err: Exception) -> LLMError:
        if isinstance(err, _DeadlineExceeded):
            return LLMError(
                kind=err.kind, message=self._scrub(err.message), status_code=err.status_code
            )
        if isinstance(err, anthropic.APITimeoutError):
            return LLMError(kind="timeout", message="the request timed out")
        if isinstance(err, anthropic.APIStatusError):
            detail = self._scrub(str(err.api_message or err.message))[:500]
            return LLMError(
                kind=_kind_for_status(err.status_code, err.type),
                message=f"HTTP {err.status_code}: {detail}",
                status_code=err.status_code,
            )
        if isinstance(err, anthropic.APIConnectionError):
            cause = err.__cause__
            reason = f"{type(cause).__name__}: {cause}" if cause else str(err)
            return LLMError(
                kind="api_error", message=self._scrub(f"connection failed: {reason}")[:500]
            )
        return LLMError(kind="api_error", message=self._scrub(f"{type(err).__name__}: {err}")[:500])

    def _scrub(self, text: str) -> str:
        for secret in (self._client.api_key, self._client.auth_token):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


# --- keeping the SDK's retries inside the deadline --------------------------------------------


@dataclass
class _CallState:
    deadline: float | None
    clock: Callable[[], float]
    max_retries: int
    connect_timeout_s: float
    attempts: int = 0


_CALL_STATE: ContextVar[_CallState | None] = ContextVar("arcpoint_claude_call", default=None)


class _DeadlineExceeded(Exception):
    """Raised by the middleware to stop the SDK's retry loop (it is not a retryable type)."""

    def __init__(self, kind: ErrorKind, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status_code = status_code


class _DeadlineGuard(Middleware):
    """Runs once per HTTP attempt inside the SDK's retry loop.

    Counts attempts; with a deadline, gives each attempt only the time left, and stops the retry
    loop when the SDK would otherwise sleep (retry-after or backoff) past the deadline.
    """

    def handle(self, request: anthropic.APIRequest, call_next: Any) -> Any:
        state = _CALL_STATE.get()
        if state is None:
            return call_next(request)
        state.attempts += 1
        if state.deadline is None:
            return call_next(request)
        remaining = state.deadline - state.clock()
        if remaining <= 0:
            raise _DeadlineExceeded("timeout", f"deadline reached before attempt {state.attempts}")
        request = request.copy(timeout=_attempt_timeout(remaining, state.connect_timeout_s))
        retries_left = request.retries_taken < state.max_retries
        try:
            response = call_next(request)
        except anthropic.APIConnectionError as err:
            if (
                retries_left
                and _backoff_floor(request.retries_taken) >= state.deadline - state.clock()
            ):
                kind: ErrorKind = (
                    "timeout" if isinstance(err, anthropic.APITimeoutError) else "api_error"
                )
                raise _DeadlineExceeded(
                    kind, f"{type(err).__name__}; no time left to retry"
                ) from None
            raise
        http = response.http_response
        if retries_left and _sdk_would_retry(http):
            wait = _retry_wait(http.headers, request.retries_taken)
            if wait >= state.deadline - state.clock():
                http.close()
                raise _DeadlineExceeded(
                    _kind_for_status(http.status_code, None),
                    f"HTTP {http.status_code}; retrying in {wait:.2f}s would pass the deadline",
                    http.status_code,
                )
        return response


def _attempt_timeout(seconds: float, connect_s: float) -> httpx2.Timeout:
    return httpx2.Timeout(seconds, connect=min(seconds, connect_s))


def _sdk_would_retry(response: httpx2.Response) -> bool:
    """Mirrors the SDK's retry policy (anthropic._base_client.BaseClient._should_retry)."""
    flag = response.headers.get("x-should-retry")
    if flag in ("true", "false"):
        return flag == "true"
    return response.status_code in (408, 409, 429) or response.status_code >= 500


def _retry_wait(headers: httpx2.Headers, retries_taken: int) -> float:
    """The shortest time the SDK would sleep before the next attempt."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, "")) * scale
        except ValueError:
            continue
        if value > 0:
            return value
    return _backoff_floor(retries_taken)


def _backoff_floor(retries_taken: int) -> float:
    """The SDK's backoff is min(0.5 * 2**n, 8) seconds with up to 25% jitter taken off."""
    return min(0.5 * 2.0**retries_taken, 8.0) * 0.75


def _kind_for_status(status: int, error_type: str | None) -> ErrorKind:
    if status == 429 or error_type == "rate_limit_error":
        return "rate_limited"
    if status == 529 or error_type == "overloaded_error":
        return "overloaded"
    return "api_error"


# --- response conversion -------------------------------------------------------------------


def _usage(usage: Any) -> TokenUsage:
    return TokenUsage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_read_tokens=usage.cache_read_input_tokens or 0,
        cache_write_tokens=usage.cache_creation_input_tokens or 0,
    )


def _block_param(block: Any) -> dict[str, Any]:
    """A response content block as the param we send back on the next turn."""
    kind = block.type
    if kind == "text":
        return {"type": "text", "text": block.text}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if kind == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.data}
    return block.model_dump(mode="json", exclude_none=True)


def _stop_details(message: Any) -> str | None:
    details = getattr(message, "stop_details", None)
    if details is None:
        return None
    parts = [
        p for p in (getattr(details, "category", None), getattr(details, "explanation", None)) if p
    ]
    return ": ".join(parts) or None
