"""`arcpoint serve`: the router, outcomes, telemetry and agents over HTTP, with a dashboard."""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_CONFIG = 2

_DESCRIPTION = """\
Run Arcpoint as a service: one process, one SQLite file, no other server to start.

  POST /v1/route       {tier, sla_ms?, input_tokens?, request_id?, metadata?} -> a backend
  POST /v1/outcomes    {outcomes: [{decision_id, e2e_ms, status, ttft_ms?, observed_at?}]}
  POST /v1/telemetry   {scrapes: [{backend, num_requests_running, ...vLLM metric names}]}
  POST /v1/ask         {question, thread_id?}           (rate limited per client)
  GET  /v1/fleet, /v1/decisions/ID, /v1/alerts, /v1/traces/ID, /v1/approvals, ...
  GET  /healthz, /readyz, /metrics (Prometheus), /docs (OpenAPI), / (dashboard)

Safe by default: it listens on 127.0.0.1. With ARCPOINT_TOKEN set, every state-changing /v1
endpoint needs 'Authorization: Bearer <token>'; without a token it refuses to listen on an
address other machines can reach. SIGTERM or Ctrl-C stops taking requests, lets those in flight
finish, and flushes the decision log within 10 s; an outcome is acknowledged only once stored.

Backends with a metrics_url in the fleet file are scraped every --scrape-interval seconds.
The monitors (outcome expiry, forecaster hot-swap, drift/feedback/experiment agents) run every
--monitor-interval seconds inside the service.

Exit status: 130 after Ctrl-C and 143 after SIGTERM (both drain and flush first), 2 on a
configuration error (bad fleet file, database or policy name, unsafe bind).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the router and agents as an HTTP service with metrics and a dashboard",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787; 0: any free)")
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="SQLite file ($ARCPOINT_DB or arcpoint.db)",
    )
    parser.add_argument(
        "--fleet",
        metavar="FILE",
        default=None,
        help="fleet file (YAML/JSON: backends with cost, capacity, metrics_url); default: b0-b3",
    )
    parser.add_argument(
        "--tick", type=float, default=10.0, metavar="S", help="seconds per telemetry tick (10)"
    )
    parser.add_argument(
        "--monitor-interval", type=float, default=60.0, metavar="S", help="monitor period (60)"
    )
    parser.add_argument(
        "--scrape-interval", type=float, default=5.0, metavar="S", help="scrape period (5)"
    )
    parser.add_argument(
        "--policy",
        default="predictive",
        metavar="NAME",
        help="routing policy: predictive (default) or a baseline from tools/routers "
        "(round_robin, least_request, peak_ewma, outlier_ejection, prequal, c3, llmd, static)",
    )
    parser.add_argument(
        "--escalation-mode",
        choices=("advisory", "override"),
        default="advisory",
        help="advisory (default): the router agent's answer to an ambiguous request is recorded "
        "with its decision and the request gets the policy's pick at once; override: the answer "
        "may move the request, which waits for it up to the escalation deadline",
    )
    parser.add_argument("--no-monitors", action="store_true", help="do not run the monitors")
    parser.add_argument(
        "--max-body", type=int, default=1_048_576, metavar="BYTES", help="body size limit (1 MiB)"
    )
    parser.add_argument(
        "--ask-per-minute",
        type=float,
        default=30.0,
        metavar="N",
        help="questions per minute per client on /v1/ask (30)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (method, path, status)"
    )
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    import os

    from pydantic import SecretStr

    from arcpoint.serve.config import ServeConfig
    from arcpoint.settings import load_settings

    settings = load_settings()
    token = os.environ.get("ARCPOINT_TOKEN")
    return ServeConfig(
        host=args.host,
        port=args.port,
        db=args.db or settings.db,
        fleet=args.fleet,
        token=SecretStr(token) if token else None,
        max_body_bytes=args.max_body,
        ask_rate_per_min=args.ask_per_minute,
        tick_s=args.tick,
        scrape_interval_s=args.scrape_interval,
        monitor_interval_s=args.monitor_interval,
        run_monitors=not args.no_monitors,
        policy=args.policy,
        escalation_mode=args.escalation_mode,
        auto_approve=settings.auto_approve,
        outcome_max_age_s=settings.outcome_max_age_s,
        sla_ms=settings.sla_ms,
        anthropic_api_key=settings.anthropic_api_key,
        anthropic_base_url=settings.anthropic_base_url,
        model=settings.model,
        log_requests=args.access_log,
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from arcpoint.serve.config import UnsafeBindError, check_bind
    from arcpoint.serve.fleet_file import FleetFileError
    from arcpoint.serve.run import serve
    from context_api.store import SchemaTooNewError

    try:
        config = build_config(args)
        check_bind(config)
    except (UnsafeBindError, ValidationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return serve(config)
    except (FleetFileError, SchemaTooNewError, ValueError) as exc:  # bad file, db or policy
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
