"""The monitors, on a schedule inside the service.

Every `monitor_interval_s` the service, on its agent thread (never the event loop):

1. expires decisions whose outcome is overdue (`Store.expire_pending`), so pending counts and
   error analysis stay honest;
2. loads the store's active forecaster if it changed (a promotion, or `arcpoint models
   rollback`), so the router serves it from the next tick without a restart;
3. runs one pass of the monitors' graph (`agents.monitor_graph`: drift_monitor, feedback_learner,
   experiment_monitor, as `arcpoint monitor --once` does). A proposed promotion or rollback
   waits at its approval interrupt until an operator answers (`/v1/approvals`, the dashboard or
   `arcpoint approvals`), unless ARCPOINT_AUTO_APPROVE is set; the pass writes a `monitor` trace.

Each step's last run, duration and error are kept for `/v1/monitors` and counted in
`arcpoint_monitor_runs_total{monitor,result}`; a failing step is logged and retried at the next
interval, and never stops the others or the service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arcpoint.serve.service import Service

log = logging.getLogger("arcpoint.serve.monitors")


@dataclass
class MonitorRun:
    name: str
    last_started: float | None = None
    last_finished: float | None = None
    duration_s: float | None = None
    result: str = "never"
    detail: str | None = None
    trace_id: str | None = None
    runs: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _expire(service: Service) -> str:
    assert service.store is not None
    n = service.store.expire_pending(time.time())
    return f"{n} decisions expired"


def _sync_forecaster(service: Service) -> str:
    from agents.feedback_loop import sync_active_forecaster

    assert service.agent_store is not None and service.adapter is not None
    version = sync_active_forecaster(service.agent_store, service.adapter.fleet)
    return f"now serving {version}" if version else "unchanged"


def _monitor_pass(service: Service) -> tuple[str, str | None]:
    assert service.agent_store is not None
    if service.agent_store.active_model_version("forecaster") is None:
        return "skipped: no forecaster to watch yet", None
    run = service.monitor_graph().run()
    if run.waiting and run.proposal is not None:
        summary = f"waiting for approval {run.proposal.get('approval_id')}"
    elif run.applied:
        summary = f"applied: {run.applied.get('status')}"
    else:
        summary = "; ".join(
            f"{r.get('agent')}: {str(r.get('answer', ''))[:80]}" for r in run.reports
        )
    return summary[:500], run.trace_id


STEPS = (
    ("expire_outcomes", _expire),
    ("monitor_pass", _monitor_pass),
    ("sync_forecaster", _sync_forecaster),
)


def run_all(service: Service, state: dict[str, MonitorRun]) -> None:
    """One pass over every step (called on the agent thread)."""
    m = service.metrics
    for name, step in STEPS:
        rec = state.setdefault(name, MonitorRun(name))
        rec.last_started = time.time()
        rec.runs += 1
        t0 = time.perf_counter()
        try:
            out = step(service)
        except Exception as exc:
            rec.result, rec.detail = "error", f"{type(exc).__name__}: {exc}"
            log.exception("monitor step %s failed", name)
        else:
            if isinstance(out, tuple):
                rec.detail, rec.trace_id = out
            else:
                rec.detail = out
            rec.result = "ok"
        rec.duration_s = round(time.perf_counter() - t0, 4)
        rec.last_finished = time.time()
        m.monitor_runs.labels(name, rec.result).inc()
        m.monitor_last.labels(name).set(rec.last_finished)


async def monitor_loop(service: Service) -> None:
    state = service.monitor_state
    while True:
        await asyncio.sleep(service.config.monitor_interval_s)
        await service.on_agent_thread(run_all, service, state)
