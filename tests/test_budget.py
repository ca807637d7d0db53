"""The LLM budget: sliding windows over an injected clock (no sleeps), thread-safe reservations."""

from __future__ import annotations

import math
import threading

import pytest

from agents.llm.budget import Budget


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_calls_per_minute_slide_with_the_clock() -> None:
    clock = FakeClock()
    budget = Budget(calls_per_minute=2, tokens_per_hour=None, clock=clock)
    assert budget.try_acquire().allowed
    clock.now = 30.0
    assert budget.try_acquire().allowed
    check = budget.try_acquire()
    assert not check.allowed and "2/2 calls" in check.reason

    clock.now = 59.9
    assert not budget.try_acquire().allowed
    clock.now = 60.0  # the first call left the window
    assert budget.try_acquire().allowed
    assert not budget.try_acquire().allowed
    assert budget.usage().calls_last_minute == 2


def test_declined_calls_do_not_use_up_the_budget() -> None:
    clock = FakeClock()
    budget = Budget(calls_per_minute=1, tokens_per_hour=None, clock=clock)
    budget.try_acquire()
    for _ in range(5):
        assert not budget.try_acquire().allowed
    clock.now = 60.0
    assert budget.try_acquire().allowed


def test_tokens_per_hour() -> None:
    clock = FakeClock()
    budget = Budget(calls_per_minute=None, tokens_per_hour=1000, clock=clock)
    assert budget.try_acquire().allowed
    budget.record_tokens(600)
    clock.now = 1800.0
    assert budget.try_acquire().allowed
    budget.record_tokens(500)
    check = budget.try_acquire()
    assert not check.allowed and "1100/1000 tokens" in check.reason

    clock.now = 3600.0  # the first 600 tokens left the window
    assert budget.usage().tokens_last_hour == 500
    assert budget.try_acquire().allowed


def test_no_limits_means_unlimited() -> None:
    budget = Budget(calls_per_minute=None, tokens_per_hour=None, clock=FakeClock())
    for _ in range(1000):
        assert budget.try_acquire().allowed
    budget.record_tokens(10**9)
    assert budget.try_acquire().allowed


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_nonsense_limits_are_rejected(limit: object) -> None:
    with pytest.raises(ValueError):
        Budget(calls_per_minute=limit)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Budget(tokens_per_hour=limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("tokens", [-1, 1.5, math.nan, True])
def test_nonsense_token_counts_are_rejected(tokens: object) -> None:
    budget = Budget(clock=FakeClock())
    with pytest.raises(ValueError):
        budget.record_tokens(tokens)  # type: ignore[arg-type]
    assert budget.usage().tokens_last_hour == 0


def test_a_broken_clock_is_a_clear_error() -> None:
    budget = Budget(clock=lambda: math.nan)
    with pytest.raises(ValueError, match="non-finite"):
        budget.try_acquire()


def test_concurrent_callers_never_exceed_the_limit() -> None:
    budget = Budget(calls_per_minute=25, tokens_per_hour=None, clock=FakeClock())
    allowed: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(10):
            ok = budget.try_acquire().allowed
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 25 and len(allowed) == 80
