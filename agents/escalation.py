"""The Escalator: the Router's `escalate` hook, which asks the router agent about an ambiguous
request and falls back to the deterministic policy whenever the agent's answer cannot be used.

    escalator = Escalator(model)                  # OfflineModel() by default
    router = Router(policy, fleet, escalate=escalator)

Guarantees:
- **Deadline.** The agent gets `deadline_s` (1.5 s with Claude by default, 0.5 s offline). With a
  network model the run happens on a worker thread and the router waits at most the deadline;
  a late answer is discarded (its trace is still written). If every worker is still busy with
  earlier escalations, the request falls back at once (`agent_busy`) instead of queueing: there
  is no queue. An asyncio caller (`arcpoint serve`) awaits `aescalate`, which holds the same
  guarantees without blocking a thread while the agent thinks.
- **One call.** The agent gets the trusted routing context in its only message, the request's
  metadata quoted as data in a separate block, and must answer through `submit_decision`
  (`agents.nodes.router`).
- **Validation.** The answer must name a backend from the allowed set (the candidates that are
  not ejected) with a confidence in [0, 1] and a rationale, and must not be clearly more likely
  to miss the SLA than the policy's pick unless that pick is failing (`clearly_worse`).
  Otherwise, and on timeout, API error,
  refusal, budget exhaustion or no answer, the policy's own choice stands and the reason is
  recorded: in the returned decision (`reason` gets `;agent_fallback=<why>`), in the stats and
  in the trace.
- **The routine path never waits**: the Router calls this only for ambiguous requests.
- **Advisory mode** (`mode="advisory"`): the agent's valid answer is recorded (in the decision's
  reason as `;agent_advice=<backend>`, the record and the trace) and scored against the policy's
  pick, but the request gets the policy's pick. It is the mode to run while the agent has not
  shown, on measured runs, that overriding the policy misses the SLA less often.
- **Shared answers.** Many requests of one tick with the same tier, SLA and candidate picture
  get one agent run: the first asks, the rest reuse its answer (a cache keyed on tick time, tier,
  SLA and candidates, cleared when the tick changes; failures are cached too, so a failing model
  is not hammered within a tick). The tick is the decision's `ts` unless `tick_clock` names it
  (a live service stamps each decision with its own arrival time, which no two requests share).
  A reused answer keeps the policy's pick when the agent named it acceptable, so a tick's
  escalations are not herded onto one backend.
- **Traces.** Each agent run writes an `escalation` trace (parent: the decision id) with the
  router and validate nodes, every LLM turn and tool call, the verdict or the fallback reason,
  the prompt hash and the forecaster version; each request that reused an answer writes a short
  trace pointing at it (`inputs.shared_trace_id`). Pass `traces=` a `TraceWriter` so writes
  happen off the routing thread.

`stats` counts escalations, agent runs, cache hits, accepted answers, answers that changed the
backend, and fallbacks by reason. `score_pending(violation_prob)` lets a replay compare, for each
escalated request, the SLA-violation probability of the backend used with that of the policy's
pick (the counterfactual), tick by tick.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Literal

from agents.llm.base import LLMModel
from agents.nodes.base import TraceSink, trace_sink
from agents.nodes.router import RoutingCase, Verdict, guard
from agents.offline import OfflineModel
from agents.router_graph import build_router_graph
from context_api.fleet_state import FleetState
from context_api.trace_builder import TraceBuilder
from tools.routing import Decision, RouteRequest
from tools.telemetry import TICK_SECONDS

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 1.5
OFFLINE_DEADLINE_S = 0.5
AGENT_POLICY = "router_agent"
FALLBACK_MARK = ";agent_fallback="
ADVICE_MARK = ";agent_advice="
Mode = Literal["override", "advisory"]
DEFAULT_MODE: Mode = "advisory"
"""Advisory until the agent earns overriding: over 5 seeds of the demo's 10 scenarios, escalated
requests routed by the offline agent had 1.4% fewer expected SLO misses than at the policy's own
pick (95% CI -0.8% to 3.6%), short of the 20% the issue sets
(`arcpoint demo --policies predictive --seeds 5 --no-decisions --escalation-mode override`).
So the agent explains and records its choice, and the request gets the policy's pick."""
LOAD_CEILING = 0.7
"""Requests moved by the agent onto a backend in one tick may fill it up to this utilisation."""


@dataclass
class EscalationRecord:
    """One escalated request: what the policy said, what was used, and why."""

    decision_id: str
    request_id: str
    ts: float
    tier: str
    sla_ms: float
    ambiguous_reason: str | None
    policy_backend: str
    final_backend: str
    accepted: bool
    fallback_reason: str | None
    cached: bool
    confidence: float | None
    trace_id: str | None
    agent_backend: str | None = None
    """What the agent chose (valid answers only; in advisory mode it is recorded, not used)."""
    violation_prob_final: float | None = None
    violation_prob_policy: float | None = None
    violation_prob_agent: float | None = None


@dataclass
class EscalationStats:
    escalated: int = 0
    agent_runs: int = 0
    cache_hits: int = 0
    accepted: int = 0
    changed: int = 0
    """Accepted answers whose backend differs from the policy's pick."""
    advised: int = 0
    """Valid answers recorded but not used (advisory mode)."""
    fallbacks: Counter[str] = field(default_factory=Counter)
    agent_seconds: float = 0.0
    agent_seconds_max: float = 0.0
    scored: int = 0
    expected_violations_final: float = 0.0
    expected_violations_policy: float = 0.0
    scored_changed: int = 0
    expected_violations_final_changed: float = 0.0
    expected_violations_policy_changed: float = 0.0
    scored_agent: int = 0
    expected_violations_agent: float = 0.0
    expected_violations_agent_policy: float = 0.0
    """The policy's pick over the same requests as `expected_violations_agent`."""

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary for reports (`arcpoint demo`)."""

        def rate(x: float, n: int) -> float | None:
            return round(x / n, 4) if n else None

        return {
            "escalated": self.escalated,
            "agent_runs": self.agent_runs,
            "cache_hits": self.cache_hits,
            "accepted": self.accepted,
            "changed_backend": self.changed,
            "advised": self.advised,
            "fallbacks": dict(self.fallbacks),
            "fallback_total": sum(self.fallbacks.values()),
            "agent_mean_s": rate(self.agent_seconds, self.agent_runs),
            "agent_max_s": round(self.agent_seconds_max, 4),
            "scored": self.scored,
            "violation_prob_used": rate(self.expected_violations_final, self.scored),
            "violation_prob_policy_pick": rate(self.expected_violations_policy, self.scored),
            "scored_changed": self.scored_changed,
            "violation_prob_used_when_changed": rate(
                self.expected_violations_final_changed, self.scored_changed
            ),
            "violation_prob_policy_pick_when_changed": rate(
                self.expected_violations_policy_changed, self.scored_changed
            ),
            "scored_agent": self.scored_agent,
            "violation_prob_agent_choice": rate(self.expected_violations_agent, self.scored_agent),
            "violation_prob_policy_pick_same_requests": rate(
                self.expected_violations_agent_policy, self.scored_agent
            ),
        }


@dataclass
class _Shared:
    """A tick's answer for one candidate picture (or its failure)."""

    verdict: Verdict
    trace_id: str | None


class Escalator:
    """See the module docstring. Thread-safe for use by one Router."""

    def __init__(
        self,
        model: LLMModel | None = None,
        *,
        deadline_s: float | None = None,
        traces: Any = None,
        share_answers: bool = True,
        trace_shared: bool = True,
        workers: int = 2,
        inline: bool | None = None,
        keep_records: bool = True,
        fleet: FleetState | None = None,
        load_ceiling: float = LOAD_CEILING,
        mode: Mode = DEFAULT_MODE,
        clock: Callable[[], float] = time.monotonic,
        tick_clock: Callable[[], float | None] | None = None,
    ) -> None:
        if mode not in ("override", "advisory"):
            raise ValueError(f"mode must be 'override' or 'advisory', got {mode!r}")
        self.mode: Mode = mode
        self.model = model or OfflineModel()
        offline = isinstance(self.model, OfflineModel)
        default = OFFLINE_DEADLINE_S if offline else DEFAULT_DEADLINE_S
        self.deadline_s = float(deadline_s if deadline_s is not None else default)
        if not (math.isfinite(self.deadline_s) and self.deadline_s > 0):
            raise ValueError("deadline_s must be a positive number of seconds")
        self.inline = offline if inline is None else inline
        self.share_answers = share_answers
        self.trace_shared = trace_shared
        self.keep_records = keep_records
        self.fleet = fleet
        self.load_ceiling = load_ceiling
        self._load_ts: float | None = None
        self._load: dict[str, dict[str, float | None]] | None = None
        self._moved: Counter[str] = Counter()
        self.stats = EscalationStats()
        self.records: list[EscalationRecord] = []
        self._unscored: list[EscalationRecord] = []
        self._sink: TraceSink | None = trace_sink(traces)
        self._clock = clock
        self._tick_clock = tick_clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[Any, ...], _Shared] = {}
        self._cache_ts: float | None = None
        self._graph, self.prompt = build_router_graph(self.model, deadline_s=self.deadline_s)
        self._pool = None if self.inline else ThreadPoolExecutor(workers, "arcpoint-escalation")
        self._busy = threading.Semaphore(workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the hook ----------------------------------------------------------------------------

    def __call__(self, request: RouteRequest, decision: Decision) -> Decision:
        case, key, shared = self._begin(request, decision)
        if shared is not None:
            return self._apply(case, shared.verdict, shared.trace_id, cached=True)
        verdict, trace_id = self._ask(case)
        return self._conclude(case, key, verdict, trace_id)

    async def aescalate(self, request: RouteRequest, decision: Decision) -> Decision:
        """The hook for an asyncio caller: the agent runs on this escalator's workers and the
        caller awaits it for at most `deadline_s`; when every worker is busy the policy's pick
        comes back at once (`agent_busy`). Needs workers (`inline=False`)."""
        if self._pool is None:
            raise RuntimeError("aescalate needs worker threads: build the Escalator inline=False")
        case, key, shared = self._begin(request, decision)
        if shared is not None:
            return self._apply(case, shared.verdict, shared.trace_id, cached=True)
        builder = self._builder(case)
        started = self._clock()
        submitted = self._submit(case, builder)
        if isinstance(submitted, Verdict):
            verdict = submitted
        else:
            waiting = asyncio.wrap_future(submitted)
            done, _ = await asyncio.wait({waiting}, timeout=self.deadline_s)
            verdict = waiting.result() if done else self._abandon(submitted, case, builder)
        verdict, trace_id = self._finish(case, builder, verdict, self._clock() - started)
        return self._conclude(case, key, verdict, trace_id)

    def _begin(
        self, request: RouteRequest, decision: Decision
    ) -> tuple[RoutingCase, tuple[Any, ...], _Shared | None]:
        """Count the escalation, start a new tick's cache, look for a shared answer."""
        tick = self._tick_clock() if self._tick_clock is not None else None
        if tick is None:
            tick = decision.ts
        key = _case_key(decision, tick)
        with self._lock:
            self.stats.escalated += 1
            if self._cache_ts != tick:
                self._cache.clear()
                self._moved.clear()
                self._cache_ts = tick
            load = self._fleet_load()
            shared = self._cache.get(key) if self.share_answers else None
            if shared is not None:
                self.stats.cache_hits += 1
        return RoutingCase(request, decision, load), key, shared

    def _conclude(
        self,
        case: RoutingCase,
        key: tuple[Any, ...],
        verdict: Verdict,
        trace_id: str | None,
    ) -> Decision:
        """Share the agent's answer with the rest of the tick, then apply it."""
        if self.share_answers and verdict.failure != "agent_busy":
            with self._lock:
                if self._cache_ts == key[0]:
                    self._cache[key] = _Shared(verdict, trace_id)
        return self._apply(case, verdict, trace_id, cached=False)

    def _fleet_load(self) -> dict[str, dict[str, float | None]] | None:
        """The fleet's load at the last tick (once per tick), when a FleetState is attached."""
        view = self.fleet.view if self.fleet is not None else None
        if view is None:
            return None
        if self._load_ts != view.ts or self._load is None:
            caps = {b.name: b.capacity_rps for b in self.fleet.backends} if self.fleet else {}
            self._load = {
                b.name: {
                    "rps": round(b.rps, 2),
                    "capacity_rps": caps.get(b.name),
                    "utilisation": round(b.rps / caps[b.name], 3) if caps.get(b.name) else None,
                    "p95_ms_now": round(b.p95_ms, 1) if math.isfinite(b.p95_ms) else None,
                    "error_rate": round(b.error_rate, 4),
                    "alarm": view.alarms.get(b.name),
                }
                for b in view.backends
            }
            self._load_ts = view.ts
        return self._load

    def _room(self, backend: str, case: RoutingCase) -> bool:
        """May one more request be moved onto `backend` this tick? (the load guard)

        The backend's load this tick is what the policy plans to send it (its share of the
        demand) or what it carried last tick, whichever is more, plus the requests already
        moved onto it; moved requests may fill it up to `load_ceiling` of its capacity.
        """
        info = (case.load or {}).get(backend) or {}
        cap, rps = info.get("capacity_rps"), info.get("rps")
        if cap is None or rps is None:
            return True
        view = self.fleet.view if self.fleet is not None else None
        demand = view.arrivals / TICK_SECONDS if view is not None else 0.0
        share = next((c.share for c in case.decision.candidates if c.backend == backend), 0.0)
        planned = max(rps, share * demand)
        spare = max(0.0, self.load_ceiling * cap - planned) * TICK_SECONDS
        return self._moved[backend] < spare

    # -- asking the agent ----------------------------------------------------------------------

    def _ask(self, case: RoutingCase) -> tuple[Verdict, str | None]:
        builder = self._builder(case)
        started = self._clock()
        if self.inline:
            verdict = self._invoke(case, builder)
            elapsed = self._clock() - started
            if verdict.ok and elapsed > self.deadline_s:
                verdict = Verdict(
                    None,
                    failure="timeout",
                    detail=f"answered after {elapsed:.3f} s, past the {self.deadline_s} s deadline",
                    run=verdict.run,
                )
        else:
            submitted = self._submit(case, builder)
            if isinstance(submitted, Verdict):
                verdict = submitted
            else:
                try:
                    verdict = submitted.result(timeout=self.deadline_s)
                except FutureTimeout:
                    verdict = self._abandon(submitted, case, builder)
            elapsed = self._clock() - started
        return self._finish(case, builder, verdict, elapsed)

    def _builder(self, case: RoutingCase) -> TraceBuilder:
        d = case.decision
        return TraceBuilder(
            "escalation",
            parent_id=d.decision_id,
            inputs={
                "request_id": case.request.request_id,
                "tier": d.tier,
                "sla_ms": d.sla_ms,
                "ambiguous_reason": d.ambiguous_reason,
                "policy_choice": d.backend,
                "allowed": list(case.allowed),
                "deadline_s": self.deadline_s,
                "mode": self.mode,
                "context": case.context(),
                "metadata_untrusted": case.metadata(),
            },
            llm=self.model.name,
            model=self.model.model_id,
            prompt_hash=self.prompt.sha256,
            model_versions={"forecaster": d.model_version} if d.model_version else {},
        )

    def _finish(
        self, case: RoutingCase, builder: TraceBuilder, verdict: Verdict, elapsed: float
    ) -> tuple[Verdict, str | None]:
        """Count the run and write its trace (a run abandoned at the deadline writes its own)."""
        with self._lock:
            if verdict.failure != "agent_busy":
                self.stats.agent_runs += 1
                self.stats.agent_seconds += elapsed
                self.stats.agent_seconds_max = max(self.stats.agent_seconds_max, elapsed)
        if verdict.failure == "timeout" and not self.inline:
            return verdict, None  # the late run writes its own trace when it finishes
        return verdict, self._write(builder, case, verdict)

    def _invoke(self, case: RoutingCase, builder: TraceBuilder) -> Verdict:
        try:
            state = self._graph.invoke({"case": case, "builder": builder})
            return state["verdict"]
        except Exception as err:  # never through the router
            log.exception("router agent graph failed")
            return Verdict(None, failure="error", detail=f"{type(err).__name__}: {err}")

    def _submit(self, case: RoutingCase, builder: TraceBuilder) -> Future[Verdict] | Verdict:
        """Start the agent on a free worker, or say why not (`agent_busy`: no queueing)."""
        assert self._pool is not None
        if not self._busy.acquire(blocking=False):
            return Verdict(None, failure="agent_busy", detail="every escalation worker is busy")
        try:
            future = self._pool.submit(self._invoke, case, builder)
        except RuntimeError as err:  # pool shut down
            self._busy.release()
            return Verdict(None, failure="error", detail=str(err))
        future.add_done_callback(lambda f: self._busy.release())
        return future

    def _abandon(
        self, future: Future[Verdict], case: RoutingCase, builder: TraceBuilder
    ) -> Verdict:
        """Past the deadline: the request goes on without the agent; its run is audited when it
        ends (the late answer is discarded)."""

        def late(f: Future[Verdict]) -> None:
            try:
                late_verdict = f.result()
            except Exception as err:
                late_verdict = Verdict(None, failure="error", detail=str(err))
            timeout = Verdict(
                None,
                failure="timeout",
                detail=(
                    f"no answer within {self.deadline_s} s; it came later "
                    f"({late_verdict.backend or late_verdict.failure}) and was discarded"
                ),
                run=late_verdict.run,
            )
            self._write(builder, case, timeout)

        future.add_done_callback(late)
        return Verdict(None, failure="timeout", detail=f"no answer within {self.deadline_s} s")

    def _write(self, builder: TraceBuilder, case: RoutingCase, verdict: Verdict) -> str | None:
        if self._sink is None:
            return None
        d = case.decision
        final = {
            "backend": verdict.backend if verdict.ok else d.backend,
            "decided_by": AGENT_POLICY if verdict.ok else "policy",
            "agent_backend": verdict.backend,
            "confidence": verdict.confidence,
            "rationale": verdict.rationale,
            "also_acceptable": list(verdict.also_acceptable),
            "detail": verdict.detail,
        }
        record = builder.finish(
            final=final,
            fallback_reason=None if verdict.ok else verdict.failure,
            backend=final["backend"],
        )
        try:
            self._sink(record)
        except Exception:  # an audit write problem must not break routing
            log.exception("escalation trace %s not written", record.trace_id)
            return None
        return record.trace_id

    # -- applying the answer -------------------------------------------------------------------

    def _apply(
        self, case: RoutingCase, verdict: Verdict, trace_id: str | None, *, cached: bool
    ) -> Decision:
        d = case.decision
        if self.mode == "advisory":
            return self._advise(case, verdict, trace_id, cached=cached)
        acceptable = {verdict.backend, *verdict.also_acceptable}
        moving = verdict.ok and d.backend not in acceptable
        # A shared answer was given for another request's pick: the guard judges this move.
        worse = guard(case, verdict.backend or "") if moving and cached else None
        with self._lock:
            room = not moving or worse is not None or self._room(verdict.backend or "", case)
            if moving and room and worse is None:
                self._moved[verdict.backend or ""] += 1
        if worse is not None:
            why = "clearly_worse"
            out = dataclasses.replace(d, reason=f"{d.reason}{FALLBACK_MARK}{why}")
            accepted = False
        elif verdict.ok and verdict.backend in case.allowed and room:
            backend = d.backend if d.backend in acceptable else verdict.backend
            assert backend is not None
            out = dataclasses.replace(
                d, backend=backend, policy=AGENT_POLICY, reason=f"agent:{d.reason}"
            )
            accepted, why = True, None
        elif verdict.ok and not room:
            # The agent's target has no spare capacity left this tick: moving more requests
            # there would overload it, so the policy's (load-balanced) pick stands.
            why = "load_guard"
            out = dataclasses.replace(d, reason=f"{d.reason}{FALLBACK_MARK}{why}")
            accepted = False
        else:
            why = verdict.failure or "invalid_answer"
            out = dataclasses.replace(d, reason=f"{d.reason}{FALLBACK_MARK}{why}")
            accepted = False
        self._record(case, verdict, out, why, trace_id, cached=cached, accepted=accepted)
        return out

    def _advise(
        self, case: RoutingCase, verdict: Verdict, trace_id: str | None, *, cached: bool
    ) -> Decision:
        """Advisory mode: the agent's answer is recorded (decision reason, record, trace) and
        scored, but the policy's pick is what the request gets."""
        d = case.decision
        if verdict.ok:
            out = dataclasses.replace(d, reason=f"{d.reason}{ADVICE_MARK}{verdict.backend}")
            why = None
        else:
            why = verdict.failure or "invalid_answer"
            out = dataclasses.replace(d, reason=f"{d.reason}{FALLBACK_MARK}{why}")
        self._record(case, verdict, out, why, trace_id, cached=cached, accepted=False)
        return out

    def _record(
        self,
        case: RoutingCase,
        verdict: Verdict,
        out: Decision,
        why: str | None,
        trace_id: str | None,
        *,
        cached: bool,
        accepted: bool,
    ) -> None:
        """Trace a shared answer, keep the record, count the outcome."""
        d = case.decision
        if cached and self.trace_shared:
            trace_id = self._trace_shared(case, out, trace_id, why) or trace_id
        record = EscalationRecord(
            decision_id=d.decision_id,
            request_id=case.request.request_id,
            ts=d.ts,
            tier=d.tier,
            sla_ms=d.sla_ms,
            ambiguous_reason=d.ambiguous_reason,
            policy_backend=d.backend,
            final_backend=out.backend,
            accepted=accepted,
            fallback_reason=why,
            cached=cached,
            confidence=verdict.confidence if accepted or self.mode == "advisory" else None,
            trace_id=trace_id,
            agent_backend=verdict.backend if verdict.ok else None,
        )
        with self._lock:
            if accepted:
                self.stats.accepted += 1
                if out.backend != d.backend:
                    self.stats.changed += 1
            elif why is None:  # advisory: a valid answer, recorded, not used
                self.stats.advised += 1
            else:
                self.stats.fallbacks[why] += 1
            if self.keep_records:
                self.records.append(record)
            self._unscored.append(record)

    def _trace_shared(
        self, case: RoutingCase, out: Decision, shared_id: str | None, why: str | None
    ) -> str | None:
        if self._sink is None:
            return None
        d = case.decision
        tb = TraceBuilder(
            "escalation",
            parent_id=d.decision_id,
            inputs={
                "request_id": case.request.request_id,
                "tier": d.tier,
                "sla_ms": d.sla_ms,
                "ambiguous_reason": d.ambiguous_reason,
                "policy_choice": d.backend,
                "shared_trace_id": shared_id,
                "metadata_untrusted": dict(case.request.metadata),
            },
            llm=self.model.name,
            model=self.model.model_id,
            prompt_hash=self.prompt.sha256,
            model_versions={"forecaster": d.model_version} if d.model_version else {},
        )
        with tb.node("router_shared_answer", input={"shared_trace_id": shared_id}):
            tb.set_node_output({"backend": out.backend, "fallback_reason": why})
        record = tb.finish(
            final={"backend": out.backend, "decided_by": out.policy},
            fallback_reason=why,
            backend=out.backend,
        )
        try:
            self._sink(record)
        except Exception:
            log.exception("escalation trace %s not written", record.trace_id)
            return None
        return record.trace_id

    # -- scoring (for replays) -----------------------------------------------------------------

    def score_pending(self, violation_prob: Callable[[str, float], float]) -> int:
        """Score every escalation not scored yet: `violation_prob(backend, sla_ms)` is the
        probability that a request sent to `backend` now misses `sla_ms` (a replay knows it
        from the simulator's tick). Returns how many were scored."""
        with self._lock:
            pending, self._unscored = self._unscored, []
        for r in pending:
            try:
                pf = float(violation_prob(r.final_backend, r.sla_ms))
                pp = float(violation_prob(r.policy_backend, r.sla_ms))
            except Exception:
                log.exception("violation_prob failed for %s", r.decision_id)
                continue
            if not (math.isfinite(pf) and math.isfinite(pp)):
                continue
            r.violation_prob_final, r.violation_prob_policy = pf, pp
            pa = None
            if r.agent_backend is not None:
                try:
                    pa = float(violation_prob(r.agent_backend, r.sla_ms))
                except Exception:
                    log.exception("violation_prob failed for %s", r.decision_id)
                r.violation_prob_agent = pa if pa is not None and math.isfinite(pa) else None
            with self._lock:
                s = self.stats
                s.scored += 1
                s.expected_violations_final += pf
                s.expected_violations_policy += pp
                if r.violation_prob_agent is not None:
                    s.scored_agent += 1
                    s.expected_violations_agent += r.violation_prob_agent
                    s.expected_violations_agent_policy += pp
                if r.final_backend != r.policy_backend:
                    s.scored_changed += 1
                    s.expected_violations_final_changed += pf
                    s.expected_violations_policy_changed += pp
        return len(pending)


def _case_key(d: Decision, tick: float) -> tuple[Any, ...]:
    def r(x: float) -> float | None:
        return round(x, 3) if math.isfinite(x) else None

    return (
        tick,
        d.tier,
        d.sla_ms,
        d.ambiguous_reason,
        tuple(
            (c.backend, c.ejected, r(c.forecast_ms), r(c.lo_ms), r(c.hi_ms)) for c in d.candidates
        ),
    )
