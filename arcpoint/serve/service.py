"""The running service's parts and their lifecycle: stores, router, writers, ticks, scrapes.

Threads and what they touch:

- the event loop: HTTP handlers, the router (`RouterAdapter`), `LiveFleet`; nothing here blocks;
- the decision writer (`arcpoint.serve.decision_process`): the loop pickles each decision (its
  fields and pending candidates, ~5 us), a sender thread pipes them in batches to a worker
  process that builds the candidates and rows and commits them on a connection of its own (the
  thread writer of `arcpoint.serve.writer` for an in-memory database);
- worker threads (`asyncio.to_thread`): outcome commits, telemetry and anomaly writes;
- the escalator's one worker: the router agent. In advisory mode (the default) no request waits
  for it: `/v1/route` answers with the policy's pick and the advice queue's thread
  (`arcpoint.serve.advice`) asks the agent afterwards and records its answer on the stored
  decision. In override mode `/v1/route` awaits it for at most the escalation deadline (busy:
  the policy's pick at once, counted as an `agent_busy` fallback);
- one agent thread: `/v1/ask` questions and the scheduled monitors, on a read/agent connection of
  their own, so a slow question never holds the lock that outcome commits need.

SQLite connections to one WAL file (the service's two, the decision process's one): readers
never block a writer, and writers wait for each other (busy timeout), never fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import Any

from agents.escalation import ADVICE_MARK, FALLBACK_MARK, Escalator
from agents.fleet_monitor import FleetMonitor
from agents.router import SERVE_REHEARSALS, Router
from arcpoint.serve.adapter import RouteInput, RouterAdapter, p_meet_slo
from arcpoint.serve.advice import AdviceQueue
from arcpoint.serve.config import ServeConfig
from arcpoint.serve.decision_process import DecisionProcess, ReasonUpdate
from arcpoint.serve.engine_metrics import EngineScrape, ScrapeDeltas
from arcpoint.serve.fleet_file import FleetFile, load_fleet
from arcpoint.serve.live import LiveFleet
from arcpoint.serve.metrics import ServeMetrics
from arcpoint.serve.security import RateLimiter
from arcpoint.serve.writer import DecisionWriter
from context_api.alerting import AlertService
from context_api.fleet_state import FleetState
from context_api.outcome_details import LLMOutcome, RowResult, record_llm_outcomes
from context_api.store import Store, decision_row
from context_api.traces import TraceStore, TraceWriter
from tools.routers.base import Completion, RequestInfo
from tools.routers.registry import make_policy
from tools.routing import Decision
from tools.telemetry import TelemetryPoint

log = logging.getLogger("arcpoint.serve")

WARM_WINDOW_S = 3600.0
"""Stored telemetry this recent warms the forecaster's windows at start."""


class Service:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.fleet_file: FleetFile = load_fleet(config.fleet)
        self.names = tuple(b.name for b in self.fleet_file.backends)
        self.metrics = ServeMetrics(self.names)
        self.started_at = time.time()
        self.ready = False
        self.draining = False
        self.store: Store | None = None
        self.agent_store: Store | None = None
        self.writer: DecisionProcess | DecisionWriter | None = None
        self.advice: AdviceQueue | None = None
        """Advisory escalations, asked after the answer (None in override mode)."""
        self.trace_writer: TraceWriter | None = None
        self.adapter: RouterAdapter | None = None
        self.live = LiveFleet(self.fleet_file.profiles())
        self.deltas = ScrapeDeltas(self.live.index)
        self.alarms: dict[str, str] = {}
        self.ask_limiter = RateLimiter(config.ask_rate_per_min / 60.0, config.ask_burst)
        self.agent_pool = ThreadPoolExecutor(1, "arcpoint-agent")
        self.escalations: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task] = []
        self._graph: Any = None
        self._monitor_graph: Any = None
        self.monitor: FleetMonitor | None = None
        self.last_tick: float | None = None
        self.tick_error: str | None = None
        self.monitor_state: dict[str, Any] = {}
        self._routed = 0
        self._decision_counters: dict[tuple[str, str, str | None], tuple[Any, ...]] = {}
        self._observe_route = self.metrics.route_latency.observe
        self.forecast_history: list[dict[str, Any]] = []

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the stores and build the router (synchronous: runs before serving)."""
        cfg = self.config
        self.store = Store(cfg.db, outcome_max_age_s=cfg.outcome_max_age_s)
        self.agent_store = Store(cfg.db, outcome_max_age_s=cfg.outcome_max_age_s)
        # Started first: the writer process imports and opens the file while this one loads
        # the forecaster and compiles the router; it must be ready before anything is served.
        if cfg.db == ":memory:":  # a second process cannot open it: the thread writer
            self.writer = DecisionWriter(self._write_decisions, max_queue=cfg.decision_queue)
        else:
            self.writer = DecisionProcess(
                cfg.db, max_queue=cfg.decision_queue, outcome_max_age_s=cfg.outcome_max_age_s
            )
        infos = self.fleet_file.infos()
        fleet_state = FleetState(infos)
        self._load_forecaster(fleet_state)
        self.trace_writer = TraceWriter(TraceStore(self.store))
        # One agent run at a time, never queued: a request that finds it busy takes the
        # policy's pick at once. Answers are shared within a tick (decisions here are stamped
        # with their own arrival time, so the tick is the service's).
        escalator = Escalator(
            self._llm(),
            deadline_s=cfg.escalation_deadline_s,
            traces=self._trace,
            keep_records=False,
            fleet=fleet_state,
            inline=False,
            workers=1,
            mode=cfg.escalation_mode,
            tick_clock=lambda: self.last_tick or self.started_at,
        )
        profiles = self.fleet_file.profiles()
        policy = make_policy(cfg.policy, profiles)
        # A throwaway copy routes one request first: the predictive router's first decision
        # compiles its forest walk (numba, seconds on a loaded machine), which must not be paid
        # by a caller. The live view is only read.
        make_policy(cfg.policy, profiles).choose(
            RequestInfo(0, time.time(), 512, "standard", 1000.0, 30_000.0), self.live
        )
        self.adapter = RouterAdapter(
            lambda hook: Router(policy, fleet_state, escalate=hook, rehearse=SERVE_REHEARSALS),
            fleet_state,
            self.live,
            escalator=escalator,
        )
        self.monitor = FleetMonitor(self.names, self.store, AlertService(self.store))
        self._warm(fleet_state)
        if isinstance(self.writer, DecisionProcess):
            self.writer.wait_ready()
        self.metrics.watch(self.snapshot_gauges)

    def _llm(self) -> Any:
        cfg = self.config
        key = cfg.anthropic_api_key.get_secret_value().strip() if cfg.anthropic_api_key else ""
        if not key:
            from agents.offline import OfflineModel

            return OfflineModel()
        from agents.llm.claude import ClaudeConfig, ClaudeModel

        return ClaudeModel(
            ClaudeConfig(model_id=cfg.model), api_key=key, base_url=cfg.anthropic_base_url
        )

    def _load_forecaster(self, fleet_state: FleetState) -> None:
        from agents.feedback_loop import sync_active_forecaster

        assert self.store is not None
        try:
            version = sync_active_forecaster(self.store, fleet_state)
        except (ValueError, OSError) as exc:
            log.warning("no forecaster loaded (%s): routing without forecasts", exc)
            return
        if version:
            log.info("serving forecaster %s", version)

    def _warm(self, fleet_state: FleetState) -> None:
        """Recent stored telemetry (last hour) fills the feature windows, so a restart forecasts
        at once instead of after an hour of new ticks."""
        assert self.store is not None and self.adapter is not None
        since = time.time() - WARM_WINDOW_S
        points = [
            p for name in self.names for p in self.store.list_telemetry(backend=name, since=since)
        ]
        if not points:
            return
        points.sort(key=lambda p: p.ts)
        try:
            fleet_state.ingest(points)
            self.adapter.tick([], 0, {})
        except ValueError as exc:
            log.warning("stored telemetry not used to warm the router: %s", exc)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        escalator = self.adapter.escalator if self.adapter is not None else None
        if escalator is not None and escalator.mode == "advisory":
            self.advice = AdviceQueue(escalator, self._advised, loop)
        self._tasks.append(loop.create_task(self._tick_loop(), name="arcpoint-tick"))
        targets = self.fleet_file.scrape_targets()
        if targets:
            from arcpoint.serve.scraper import scrape_loop

            self._tasks.append(loop.create_task(scrape_loop(self, targets), name="arcpoint-scrape"))
        if self.config.run_monitors:
            from arcpoint.serve.monitors import monitor_loop

            self._tasks.append(loop.create_task(monitor_loop(self), name="arcpoint-monitors"))
        self.ready = True

    async def stop(self, timeout_s: float = 2.5) -> None:
        """Stop the loops, flush the decision and trace writers, close the stores."""
        self.ready = False
        self.draining = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.advice is not None:  # its answers reach the writer before the writer closes
            # (bounded at 1 s: an escalation still waiting for the agent then keeps its stored
            # decision without the advice, so SIGTERM still ends within 10 s)
            await asyncio.to_thread(self.advice.close, min(1.0, timeout_s))
            await asyncio.sleep(0)  # run the answers it handed to the loop
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close, timeout_s)
        if self.trace_writer is not None:
            await asyncio.to_thread(self.trace_writer.close, timeout_s)
        if self.adapter is not None and self.adapter.escalator is not None:
            self.adapter.escalator.close()
        self.agent_pool.shutdown(wait=False, cancel_futures=True)
        for graph in (self._graph, self._monitor_graph):
            if graph is not None:
                graph.close()
        for s in (self.store, self.agent_store):
            if s is not None:
                s.close()

    # -- routing ------------------------------------------------------------------------------

    async def route(self, req: RouteInput) -> tuple[Decision, bool, bool]:
        """(decision, escalated, recorded). The decision is queued for the writer, never awaited."""
        adapter, writer = self.adapter, self.writer
        assert adapter is not None and writer is not None
        t0 = perf_counter()
        decision, request, wanted = adapter.route(req)
        if request is not None:
            if self.advice is not None:  # advisory: answer now, record the advice later
                recorded = writer.submit(decision)
                self.advice.submit(request, decision)
            else:  # override mode: the agent's answer may move the request, so it waits
                policy_pick = decision
                decision = await adapter.escalate(request, decision)
                self._count_escalation(policy_pick, decision)
                recorded = writer.submit(decision)
        else:
            recorded = writer.submit(decision)
        if not recorded:
            self.metrics.decisions_dropped.inc()
        self._routed += 1
        backend = decision.backend
        self.live.opened(
            decision.decision_id, backend, decision.ts, adapter.requests, req.input_tokens or 0
        )
        self._observe_route(perf_counter() - t0)
        # labels() costs a lock and a lookup per call: the children are kept per key
        key = (backend, decision.reason, decision.ambiguous_reason)
        counters = self._decision_counters.get(key)
        if counters is None:
            counters = self._route_counters(decision)
            if len(self._decision_counters) < 4096:
                self._decision_counters[key] = counters
        for c in counters:
            c.inc()
        return decision, wanted, recorded

    def _route_counters(self, decision: Decision) -> tuple[Any, ...]:
        """The counters one decision increments: by backend and reason, and why ambiguous."""
        m = self.metrics
        by_reason = m.decisions.labels(decision.backend, decision.reason.split(";", 1)[0])
        if not decision.ambiguous:
            return (by_reason,)
        return (by_reason, m.ambiguous.labels(decision.ambiguous_reason or "unspecified"))

    def _count_escalation(self, before: Decision, after: Decision) -> None:
        if FALLBACK_MARK in after.reason:
            why = after.reason.split(FALLBACK_MARK, 1)[1].split(";", 1)[0]
            self.metrics.escalations.labels("fallback").inc()
            self.metrics.fallbacks.labels(why).inc()
        elif ADVICE_MARK in after.reason:
            self.metrics.escalations.labels("advised").inc()
        else:
            self.metrics.escalations.labels("accepted").inc()
        self.escalations.append(
            {
                "decision_id": after.decision_id,
                "ts": time.time(),
                "tier": after.tier,
                "policy_backend": before.backend,
                "backend": after.backend,
                "reason": after.reason,
                "ambiguous_reason": before.ambiguous_reason,
            }
        )
        del self.escalations[:-200]

    def _advised(self, before: Decision, after: Decision) -> None:
        """On the loop: an advisory escalation is settled (the agent's advice, or why there is
        none). Count it, and have the writer record the new reason on the stored decision."""
        self._count_escalation(before, after)
        if self.writer is not None and not self.writer.submit(
            ReasonUpdate(after.decision_id, after.reason)
        ):
            self.metrics.decisions_dropped.inc()

    def _write_decisions(self, items: list[Decision | ReasonUpdate]) -> None:
        """On the writer's thread: one transaction per batch the writer hands over; reason
        updates (advisory escalations settled) after the inserts, so a decision and its advice
        in one batch land together."""
        store = self.store
        assert store is not None
        updates = [x for x in items if type(x) is ReasonUpdate]
        if not updates:
            store.insert_decisions([decision_row(d) for d in items])
            return
        with store.transaction():
            store.insert_decisions([decision_row(d) for d in items if type(d) is not ReasonUpdate])
            store.set_decision_reasons(updates)

    def _trace(self, record: Any) -> None:
        """The router agent's traces: to the decision process (appended there, off this
        interpreter), or when it says no (gone, full, an in-memory database) to the trace
        writer here; never dropped."""
        writer = self.writer
        if isinstance(writer, DecisionProcess) and writer.submit_trace(record):
            return
        assert self.trace_writer is not None
        self.trace_writer.submit(record)

    def p_meet_slo(self, decision: Decision) -> float | None:
        """The chosen backend's probability of meeting the SLO, without building the
        decision's candidates on the request path (`RouterAdapter.p_meet_slo`)."""
        if self.adapter is None:
            return p_meet_slo(decision)
        return self.adapter.p_meet_slo(decision)

    # -- outcomes -----------------------------------------------------------------------------

    def commit_outcomes(self, rows: list[LLMOutcome], seq: int) -> list[RowResult]:
        """On a worker thread: wait for the decisions routed so far, then commit the batch."""
        assert self.writer is not None and self.store is not None
        if not self.writer.flush_through(seq, timeout=5.0):
            log.warning("decision writer behind: outcomes may find their decisions missing")
        return record_llm_outcomes(self.store, rows)

    def apply_outcomes(self, rows: list[LLMOutcome], results: list[RowResult]) -> None:
        """On the loop, after the commit: close the accepted requests in the live view."""
        m = self.metrics
        by_status: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        for row, res in zip(rows, results, strict=True):
            by_status[res.status] += 1
            if res.status == "rejected":
                by_reason[res.reason or "unknown"] += 1
            elif res.status == "accepted":
                opened = self.live.completed(row.decision_id, row.status, row.e2e_ms, row.ttft_ms)
                if opened is not None and self.adapter is not None:
                    i, at, number, tokens = opened
                    completion = Completion(
                        number,
                        i,
                        at,
                        row.observed_at,
                        row.status,
                        row.ttft_ms,
                        row.e2e_ms,
                        tokens,
                        0,
                    )
                    self.adapter.on_complete(completion, self.live)
        for status, n in by_status.items():
            m.outcomes.labels(status).inc(n)
        for reason, n in by_reason.items():
            m.outcomes_rejected.labels(reason).inc(n)

    # -- telemetry ----------------------------------------------------------------------------

    def take_scrape(self, scrape: EngineScrape, source: str) -> str | None:
        """Apply one engine scrape (on the loop); returns a rejection reason or None."""
        if scrape.backend not in self.live.index:
            self.metrics.telemetry.labels(source, "unknown_backend").inc()
            return f"unknown backend {scrape.backend!r}; fleet: {', '.join(self.names)}"
        at = scrape.scraped_at if scrape.scraped_at is not None else time.time()
        metrics = self.deltas.metrics(scrape, at)
        self.live.scraped(metrics)
        if self.adapter is not None:
            self.adapter.on_scrape(metrics, self.live)
        self.metrics.telemetry.labels(source, "accepted").inc()
        return None

    async def _tick_loop(self) -> None:
        period = self.config.tick_s
        next_at = time.monotonic() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += period
            try:
                await self.tick()
            except Exception as exc:  # a bad tick must not stop routing: keep the last plan
                self.metrics.tick_errors.inc()
                self.tick_error = f"{type(exc).__name__}: {exc}"
                log.exception("tick failed; routing keeps its previous plan")

    async def tick(self) -> list[TelemetryPoint]:
        """Close the live tick: store telemetry, score anomalies (worker thread), re-plan (loop)."""
        assert self.adapter is not None
        now = time.time()
        points, arrivals = self.live.end_tick(now, self.config.tick_s)
        self.live.expire(now, self.config.outcome_max_age_s)
        alarms = await asyncio.to_thread(self._observe, points)
        for backend in alarms:
            self.metrics.alerts.labels(alarms[backend]).inc()
        self.alarms = alarms
        self.adapter.tick(points, arrivals, alarms)
        self._remember_forecasts(now)
        self.metrics.ticks.inc()
        self.last_tick = now
        self.tick_error = None
        return points

    def _remember_forecasts(self, now: float) -> None:
        assert self.adapter is not None
        view = self.adapter.fleet.view
        if view is None:
            return

        def num(x: float) -> float | None:
            return round(x, 2) if math.isfinite(x) else None

        self.forecast_history.append(
            {
                "ts": now,
                "backends": {
                    b.name: {
                        "mean": num(b.forecast_ms),
                        "lo": num(b.forecast_lo_ms),
                        "hi": num(b.forecast_hi_ms),
                    }
                    for b in view.backends
                },
            }
        )
        del self.forecast_history[:-360]

    def _observe(self, points: list[TelemetryPoint]) -> dict[str, str]:
        assert self.store is not None and self.monitor is not None
        if not points:
            return {}
        self.store.insert_telemetry(points, source="serve")
        return self.monitor.observe(points)

    # -- agents -------------------------------------------------------------------------------

    def graph(self) -> Any:
        """The operator graph (built on first use, on the agent thread)."""
        if self._graph is None:
            from agents.graph import OperatorGraph
            from context_api.api import ContextAPI

            assert self.agent_store is not None
            api = ContextAPI(self.agent_store, sla_ms=self.config.sla_ms)
            self._graph = OperatorGraph(
                api,
                self._llm(),
                checkpoint_db=self.config.db,
                traces=TraceStore(self.agent_store),
            )
        return self._graph

    def monitor_graph(self) -> Any:
        """The monitors' graph (built on first use, on the agent thread)."""
        if self._monitor_graph is None:
            from agents.monitor_graph import MonitorGraph
            from context_api.api import ContextAPI

            assert self.agent_store is not None
            self._monitor_graph = MonitorGraph(
                ContextAPI(self.agent_store, sla_ms=self.config.sla_ms),
                self._llm(),
                traces=TraceStore(self.agent_store),
                auto_approve=self.config.auto_approve,
            )
        return self._monitor_graph

    async def on_agent_thread(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.agent_pool, fn, *args)

    # -- what the dashboard and /metrics read -------------------------------------------------

    def serving_model(self) -> str | None:
        """The forecaster version loaded for the next tick (None: routing without forecasts)."""
        if self.adapter is None or self.adapter.fleet.forecaster is None:
            return None
        return self.adapter.fleet.forecaster.version_id

    def snapshot_gauges(self) -> dict[str, Any]:
        writer = self.writer
        queues = {}
        if writer is not None:
            queues["decisions"] = (writer.depth, writer.max_queue)
        if self.trace_writer is not None:
            pending = self.trace_writer.pending
            if isinstance(writer, DecisionProcess):
                pending += writer.trace_depth
            queues["traces"] = (pending, 1000)
        shares: dict[str, float] = {}
        if self.adapter is not None:
            shares = self.adapter.planned_shares()
        return {
            "queues": queues,
            "in_flight": dict(zip(self.names, self.live.in_flight, strict=True)),
            "alarms": {n: n in self.alarms for n in self.names},
            "model_version": self.serving_model(),
            "shares": {k: v for k, v in shares.items() if math.isfinite(v)},
        }
