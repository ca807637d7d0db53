"""Advisory escalations, asked off the request path.

In advisory mode (the default) the router agent's answer never changes where a request goes: it
is recorded next to the decision and scored. So nothing is gained by making the request wait
for it: `/v1/route` answers at once with the policy's pick and `escalated: true`, and this
queue asks the agent afterwards on a thread of its own (the Escalator's hook, with its deadline,
shared answers and traces, including the shared-answer traces, all built here rather than on
the event loop). When the answer, or the reason there is none, is known, `on_done(policy,
advised)` runs on the event loop: the service counts the escalation and queues the decision's
new reason for the decision writer, which updates the stored row (`GET /v1/decisions/{id}`
shows it from then on).

One worker, in arrival order: a request whose tick already has an answer reuses it at once,
and the first of a tick waits for the agent (at most its deadline) while the others queue
behind it and then reuse its answer. Bounded: at most `max_pending` escalations wait; past that
an escalation is settled at once as the fallback `agent_busy`, counted like any other, never
queued without limit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable

from agents.escalation import FALLBACK_MARK
from tools.routing import Decision, RouteRequest

log = logging.getLogger(__name__)

DoneHook = Callable[[Decision, Decision], None]
"""`on_done(policy_decision, advised_decision)`, called on the event loop."""


def settled_as(decision: Decision, why: str) -> Decision:
    """The decision with the fallback `why` recorded (the policy's pick stands)."""
    return dataclasses.replace(decision, reason=f"{decision.reason}{FALLBACK_MARK}{why}")


class AdviceQueue:
    """See the module docstring. `submit` is called on the event loop's thread."""

    def __init__(
        self,
        escalate: Callable[[RouteRequest, Decision], Decision],
        on_done: DoneHook,
        loop: asyncio.AbstractEventLoop,
        *,
        max_pending: int = 10_000,
        name: str = "arcpoint-advice",
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self._escalate = escalate
        self._on_done = on_done
        self._loop = loop
        self.max_pending = max_pending
        self._queue: deque[tuple[RouteRequest, Decision]] = deque()
        self._wake = threading.Event()
        self._closed = False
        self.overflowed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, request: RouteRequest, decision: Decision) -> None:
        """Ask the agent about `decision` later; when the queue is full (or closed), settle it
        now as `agent_busy`."""
        if self._closed or len(self._queue) >= self.max_pending:
            self.overflowed += 1
            self._on_done(decision, settled_as(decision, "agent_busy"))
            return
        self._queue.append((request, decision))
        self._wake.set()

    def close(self, timeout: float = 2.0) -> bool:
        """Stop intake, let the worker finish what is queued, join. False if some were left
        (their decisions stay stored with the policy's reason)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("advice queue: %d escalations not asked at shutdown", len(self._queue))
            return False
        return True

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait()
            self._wake.clear()
            while queue:
                request, decision = queue.popleft()
                try:
                    advised = self._escalate(request, decision)
                except Exception:  # the escalator does not raise; if it did, say so and go on
                    log.exception("advisory escalation of %s failed", decision.decision_id)
                    advised = settled_as(decision, "error")
                try:
                    self._loop.call_soon_threadsafe(self._on_done, decision, advised)
                except RuntimeError:  # the loop is closed: the service is gone
                    return
            if self._closed:
                return
