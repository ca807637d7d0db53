"""The ASGI app: FastAPI routes over a `Service`, error bodies that name the field and reason.

`create_app(config)` builds everything; `arcpoint serve` runs it under uvicorn. The OpenAPI
schema is at `/openapi.json` and the interactive docs at `/docs`.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from arcpoint.serve import views
from arcpoint.serve.adapter import RouteInput
from arcpoint.serve.config import ServeConfig
from arcpoint.serve.schemas import (
    ApprovalAnswer,
    AskIn,
    AskOut,
    ErrorOut,
    OutcomeRow,
    OutcomesIn,
    OutcomesOut,
    Rejection,
    RouteIn,
    RouteOut,
    TelemetryIn,
    TelemetryOut,
)
from arcpoint.serve.security import BodyLimit, token_ok
from arcpoint.serve.service import Service
from context_api.outcome_details import LLMOutcome, record_rejections

log = logging.getLogger("arcpoint.serve")

STATIC = resources.files("arcpoint.serve") / "static"


class _CleanBatch(BaseModel):
    outcomes: list[OutcomeRow] = Field(min_length=1)


_CLEAN_BATCH = TypeAdapter(_CleanBatch)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI request body for an endpoint that reads and validates its body itself."""
    return {
        "required": True,
        "content": {"application/json": {"schema": model.model_json_schema()}},
    }


_dumps = orjson.dumps
"""The route answer's encoder (one C call; its fields are ours: strings, numbers, booleans)."""

_ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limited",
    501: "not_implemented",
    503: "unavailable",
}


def _err(status: int, field: str, reason: str, headers: dict[str, str] | None = None):
    return HTTPException(status, detail=[{"field": field, "reason": reason}], headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "body"


def create_app(config: ServeConfig, service: Service | None = None) -> FastAPI:
    svc = service or Service(config)
    token = config.token_value()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if svc.store is None:
            svc.open()
        await svc.start()
        log.info("arcpoint serve ready on %s:%s (db %s)", config.host, config.port, config.db)
        try:
            yield
        finally:
            await svc.stop()
            log.info("arcpoint serve stopped: decisions and traces flushed")

    app = FastAPI(
        title="Arcpoint",
        version="1",
        summary="Predictive router and closed-loop monitor for a fleet of LLM backends",
        description=(
            "State-changing `/v1` endpoints need `Authorization: Bearer <ARCPOINT_TOKEN>` when "
            "a token is configured. Errors are `{error, detail: [{field, reason}]}`."
        ),
        lifespan=lifespan,
        responses={422: {"model": ErrorOut}},
    )
    app.state.service = svc

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"field": _field(tuple(e.get("loc", ()))), "reason": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid_request", "detail": detail}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail
        if not isinstance(detail, list):
            detail = [{"field": "-", "reason": str(detail)}]
        body = {"error": _ERRORS.get(exc.status_code, "error"), "detail": detail}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        ref = secrets.token_hex(6)
        log.error(
            "internal error %s on %s: %s", ref, request.url.path, type(exc).__name__, exc_info=exc
        )
        body = {
            "error": "internal_error",
            "detail": [{"field": "-", "reason": f"internal error {ref}; see the server log"}],
        }
        return JSONResponse(body, status_code=500)

    async def require_token(request: Request) -> None:
        if not token_ok(token, request.headers.get("authorization")):
            svc.metrics.auth_failures.inc()
            raise _err(
                401,
                "header.authorization",
                "missing or wrong bearer token",
                {"WWW-Authenticate": "Bearer"},
            )

    auth = [Depends(require_token)]
    v1 = APIRouter(prefix="/v1")

    # -- routing ------------------------------------------------------------------------------

    @v1.post("/route", response_model=RouteOut, dependencies=auth, tags=["routing"])
    async def route(body: RouteIn) -> Response:
        """Pick a backend for one request. Answers from the policy's cached plan in microseconds.
        An ambiguous request within the escalation budget (2%) goes to the router agent
        (`escalated: true`): in advisory mode (the default) the answer comes at once with the
        policy's pick and the agent's advice is added to the stored decision when it arrives
        (`GET /v1/decisions/{id}`); in override mode the request waits for the agent, at most its
        deadline. The decision is stored by a background writer (see `recorded`)."""
        if svc.draining:
            raise _err(503, "-", "shutting down")
        decision, escalated, recorded = await svc.route(
            RouteInput(body.request_id, body.tier, body.sla_ms, body.input_tokens, body.metadata)
        )
        p = svc.p_meet_slo(decision)
        # Built by hand and returned as a Response: the fields are ours and already typed, so
        # re-validating them against RouteOut (FastAPI's default) would only cost time per request.
        return Response(
            _dumps(
                {
                    "decision_id": decision.decision_id,
                    "backend": decision.backend,
                    "reason": decision.reason,
                    "ambiguous": decision.ambiguous,
                    "p_meet_slo": None if p is None or not math.isfinite(p) else round(p, 6),
                    "escalated": escalated,
                    "recorded": recorded,
                    "sla_ms": decision.sla_ms,
                    "model_version": decision.model_version,
                }
            ),
            media_type="application/json",
        )

    @v1.post("/noop", dependencies=auth, tags=["ops"])
    async def noop(body: RouteIn) -> dict[str, bool]:
        """Takes a route request through the same door (token, size limit, validation) and does
        nothing with it: the baseline that `benchmarks/bench_serve.py` compares `/v1/route` to,
        so the difference is the cost of routing itself."""
        return {"ok": True}

    @v1.post(
        "/outcomes",
        response_model=OutcomesOut,
        dependencies=auth,
        tags=["routing"],
        openapi_extra={"requestBody": _json_body(OutcomesIn)},
    )
    async def outcomes(request: Request) -> OutcomesOut:
        """Report how routed requests ended. Each row is accepted, a duplicate (a retry of the
        same value: idempotent) or rejected with a reason; the answer comes only once the
        batch is committed, so an acknowledged outcome survives a crash."""
        raw_body = await request.body()
        try:  # the common case, a clean batch: parsed and validated in one pass of pydantic's core
            items: list[Any] = _CLEAN_BATCH.validate_json(raw_body).outcomes
            parsed: list[OutcomeRow | None] = list(items)
        except ValidationError:
            try:
                items = OutcomesIn.model_validate_json(raw_body).outcomes
            except ValidationError as exc:
                errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
                raise RequestValidationError(errors) from None
            parsed = [None] * len(items)
        if len(items) > config.max_outcome_batch:
            raise _err(413, "body.outcomes", f"at most {config.max_outcome_batch} rows per batch")
        now = time.time()
        rows: list[LLMOutcome] = []
        positions: list[int] = []
        early: list[Rejection] = []
        for i, raw in enumerate(items):
            try:
                row = parsed[i] or OutcomeRow.model_validate(raw)
            except ValidationError as exc:
                e = exc.errors()[0]
                did = raw.get("decision_id") if isinstance(raw, dict) else None
                early.append(
                    Rejection(
                        index=i,
                        decision_id=did if isinstance(did, str) else None,
                        reason="malformed",
                        detail=f"{_field(tuple(e['loc']))}: {e['msg']}",
                    )
                )
                continue
            rows.append(
                LLMOutcome(
                    row.decision_id,
                    row.e2e_ms,
                    row.observed_at if row.observed_at is not None else now,
                    row.status,
                    row.ttft_ms,
                )
            )
            positions.append(i)
        seq = svc.writer.submitted if svc.writer is not None else 0
        if early:
            await _to_thread(
                record_rejections,
                svc.store,
                [(r.index, r.decision_id, r.reason, r.detail) for r in early],
            )
            for _ in early:
                svc.metrics.outcomes.labels("rejected").inc()
                svc.metrics.outcomes_rejected.labels("malformed").inc()
        results = await _to_thread(svc.commit_outcomes, rows, seq) if rows else []
        svc.apply_outcomes(rows, results)
        rejected = list(early)
        accepted = duplicate = 0
        for pos, res in zip(positions, results, strict=True):
            if res.status == "accepted":
                accepted += 1
            elif res.status == "duplicate":
                duplicate += 1
            else:
                rejected.append(
                    Rejection(
                        index=pos,
                        decision_id=res.decision_id,
                        reason=res.reason or "rejected",
                        detail=res.detail,
                    )
                )
        rejected.sort(key=lambda r: r.index)
        return OutcomesOut(accepted=accepted, duplicate=duplicate, rejected=rejected)

    @v1.post("/telemetry", response_model=TelemetryOut, dependencies=auth, tags=["routing"])
    async def telemetry(body: TelemetryIn) -> TelemetryOut:
        """Push engine metrics (vLLM names: num_requests_running, num_requests_waiting,
        kv_cache_usage_perc, the TTFT and e2e histograms, request_success_total). They are read
        as deltas against the backend's previous scrape and feed the next tick."""
        rejected = []
        accepted = 0
        for i, scrape in enumerate(body.scrapes):
            why = svc.take_scrape(scrape, "push")
            if why is None:
                accepted += 1
            else:
                rejected.append(Rejection(index=i, reason="unknown_backend", detail=why))
        return TelemetryOut(accepted=accepted, rejected=rejected)

    # -- agents -------------------------------------------------------------------------------

    @v1.post("/ask", response_model=AskOut, dependencies=auth, tags=["agents"])
    async def ask(body: AskIn, request: Request) -> AskOut:
        """One question to the operator graph (rate limited per client). Text in the question
        is data for the agents, never instructions that change what they may do."""
        client = request.client.host if request.client else "unknown"
        wait = svc.ask_limiter.take(client)
        if wait > 0:
            svc.metrics.rate_limited.labels("ask").inc()
            raise _err(
                429,
                "-",
                f"too many questions from this client; retry in {wait:.1f} s",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

        def answer() -> Any:
            graph = svc.graph()
            if graph.api.is_empty():
                from context_api.api import EMPTY_HINT

                return _NoData(EMPTY_HINT, graph.model.name, graph.model.model_id)
            return graph.ask(body.question, thread_id=body.thread_id)

        try:
            result = await svc.on_agent_thread(answer)
        except ValueError as exc:
            raise _err(422, "body.question", str(exc)) from None
        return AskOut(
            answer=result.answer,
            trace_id=result.trace_id,
            agent=result.agent,
            llm=result.llm,
            model=result.model,
            tools_called=list(result.tools_called),
            thread_id=result.thread_id,
        )

    # -- reads --------------------------------------------------------------------------------

    @v1.get("/fleet", tags=["reads"])
    async def fleet() -> dict[str, Any]:
        """Per backend: planned share, routed share, in flight, observed TTFT and e2e, the
        forecast with its interval, errors and alarms; the serving model version."""
        return views.fleet(svc)

    @v1.get("/fleet/history", tags=["reads"])
    async def fleet_history(limit: int = Query(120, ge=1, le=360)) -> dict[str, Any]:
        """The last ticks, per backend, for the dashboard's charts."""
        return views.history(svc, limit)

    @v1.get("/decisions/{decision_id}", tags=["reads"])
    async def decision(decision_id: str) -> dict[str, Any]:
        found = await _to_thread(views.decision, svc, decision_id)
        if found is None:
            raise _err(404, "path.decision_id", f"no decision {decision_id!r}")
        return found

    @v1.get("/alerts", tags=["reads"])
    async def alerts(
        limit: int = Query(50, ge=1, le=500), kind: str | None = None
    ) -> dict[str, Any]:
        return await _to_thread(views.alerts, svc, limit, kind)

    @v1.get("/traces", tags=["reads"])
    async def traces(
        kind: str | None = Query(None, max_length=64), limit: int = Query(20, ge=1, le=200)
    ) -> dict[str, Any]:
        return await _to_thread(views.traces, svc, kind, limit)

    @v1.get("/traces/{trace_id}", tags=["reads"])
    async def trace(trace_id: str) -> dict[str, Any]:
        try:
            found = await _to_thread(views.trace, svc, trace_id)
        except ValueError as exc:
            raise _err(409, "path.trace_id", str(exc)) from None
        if found is None:
            raise _err(404, "path.trace_id", f"no trace {trace_id!r}")
        return found

    @v1.get("/models", tags=["reads"])
    async def models() -> dict[str, Any]:
        return await _to_thread(views.models, svc)

    @v1.get("/escalations", tags=["reads"])
    async def escalations(limit: int = Query(20, ge=1, le=200)) -> dict[str, Any]:
        return await _to_thread(views.escalations, svc, limit)

    @v1.get("/monitors", tags=["reads"])
    async def monitors() -> dict[str, Any]:
        return {"monitors": [r.to_json() for r in svc.monitor_state.values()]}

    # -- approvals ----------------------------------------------------------------------------

    @v1.get("/approvals", tags=["approvals"])
    async def approvals(status: str = Query("pending", pattern="^(pending|all)$")) -> dict:
        return await svc.on_agent_thread(views.approvals, svc, status)

    @v1.post("/approvals/{approval_id}", dependencies=auth, tags=["approvals"])
    async def answer_approval(approval_id: str, body: ApprovalAnswer) -> dict[str, Any]:
        """Approve or reject a proposal waiting for an operator (resumes the waiting graph).
        A rejection needs a reason."""
        if body.decision == "reject" and not (body.reason or "").strip():
            raise _err(422, "body.reason", "a rejection needs a reason")
        try:
            return await svc.on_agent_thread(views.answer_approval, svc, approval_id, body)
        except LookupError as exc:
            raise _err(404, "path.approval_id", str(exc)) from None
        except ValueError as exc:
            raise _err(409, "path.approval_id", str(exc)) from None

    app.include_router(v1)

    # -- ops ----------------------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - svc.started_at, 1)}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        problems = views.readiness(svc)
        code = 200 if not problems else 503
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=code)

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, metrics=svc.metrics)
    return app


class _NoData:
    """An answer for a database with nothing in it yet (says what to do)."""

    def __init__(self, hint: str, llm: str, model: str | None) -> None:
        self.answer = hint
        self.trace_id = None
        self.agent = None
        self.llm = llm
        self.model = model
        self.tools_called: list[str] = []
        self.thread_id = None


async def _to_thread(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)
