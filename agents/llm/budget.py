"""A spending guard: calls per minute and tokens per hour, past which the model declines.

Declining is cheap and immediate (no API call), and the caller falls back to the deterministic
policy, so a burst of ambiguous requests can never run up the bill or stall the router behind
rate limits. Windows slide over an injectable monotonic clock, so tests need no sleeps.
Thread-safe: one `Budget` may be shared by every model instance in the process.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

CALL_WINDOW_S = 60.0
TOKEN_WINDOW_S = 3600.0


@dataclass(frozen=True)
class BudgetCheck:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class BudgetUsage:
    calls_last_minute: int
    tokens_last_hour: int
    calls_per_minute: int | None
    tokens_per_hour: int | None


class Budget:
    """Sliding-window limits. `None` for a limit means unlimited."""

    def __init__(
        self,
        calls_per_minute: int | None = 30,
        tokens_per_hour: int | None = 300_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for label, limit in (
            ("calls_per_minute", calls_per_minute),
            ("tokens_per_hour", tokens_per_hour),
        ):
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
            ):
                raise ValueError(f"{label} must be a positive integer or None, got {limit!r}")
        self.calls_per_minute = calls_per_minute
        self.tokens_per_hour = tokens_per_hour
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._tokens_in_window = 0

    def try_acquire(self) -> BudgetCheck:
        """Reserve one call if both limits allow it; otherwise say which limit is hit."""
        with self._lock:
            now = self._now()
            self._prune(now)
            if self.calls_per_minute is not None and len(self._calls) >= self.calls_per_minute:
                return BudgetCheck(
                    False,
                    f"call budget exhausted: {len(self._calls)}/{self.calls_per_minute} calls"
                    " in the last minute",
                )
            used, limit = self._tokens_in_window, self.tokens_per_hour
            if limit is not None and used >= limit:
                return BudgetCheck(
                    False, f"token budget exhausted: {used}/{limit} tokens in the last hour"
                )
            self._calls.append(now)
            return BudgetCheck(True)

    def record_tokens(self, tokens: int) -> None:
        """Count tokens a call used (known only after it returns)."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"tokens must be a non-negative integer, got {tokens!r}")
        if tokens == 0:
            return
        with self._lock:
            now = self._now()
            self._tokens.append((now, tokens))
            self._tokens_in_window += tokens
            self._prune(now)

    def usage(self) -> BudgetUsage:
        with self._lock:
            self._prune(self._now())
            return BudgetUsage(
                calls_last_minute=len(self._calls),
                tokens_last_hour=self._tokens_in_window,
                calls_per_minute=self.calls_per_minute,
                tokens_per_hour=self.tokens_per_hour,
            )

    def _now(self) -> float:
        now = self._clock()
        if not math.isfinite(now):
            raise ValueError(f"budget clock returned a non-finite time: {now!r}")
        return now

    def _prune(self, now: float) -> None:
        while self._calls and self._calls[0] <= now - CALL_WINDOW_S:
            self._calls.popleft()
        while self._tokens and self._tokens[0][0] <= now - TOKEN_WINDOW_S:
            self._tokens_in_window -= self._tokens.popleft()[1]
