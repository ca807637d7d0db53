"""`arcpoint alerts`: list recent alerts from the store with their delivery state.

A read command first: it never creates a database, and says what to run when there is nothing
to show. `--deliver` (optionally with `--retry-dead`) also pushes due webhook deliveries now,
for an operator clearing the backlog after a webhook outage.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from context_api.alerting import AlertView

KINDS = ("drift", "anomaly", "sla_risk", "experiment_verdict", "model_change")
SEVERITIES = ("info", "low", "medium", "high", "critical")

EXIT_OK = 0
EXIT_NO_DB = 1
EXIT_USAGE = 2

_DESCRIPTION = """\
List recent alerts (drift, anomaly, SLA risk, experiment verdict, model change), newest first,
with their severity, how many times each fired (repeats within the dedup window are merged
into the first), and the state of their webhook delivery:

  pending    stored, not sent yet (the loop sends it on its next delivery round)
  failed     an attempt failed; retried at the time shown, with exponential backoff
  delivered  the webhook accepted it
  dead       gave up after the maximum attempts (or an error retrying cannot fix);
             the alert stays here: `--deliver --retry-dead` tries again
  none       no webhook was configured when it fired (it was logged and stored)

Suppressed repeats and rate-limited alerts are stored too; --all lists them.

--since takes a duration back from now (90s, 30m, 2h, 1d, 1w), an ISO 8601 time (no offset
means UTC) or unix seconds.

Exit status: 0 on success (even with no alerts), 1 when the database is missing or not an
Arcpoint database, 2 on bad arguments or when --deliver has no webhook URL.
"""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "alerts",
        help="list recent alerts and their webhook delivery state",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="SQLite file (default: $ARCPOINT_DB or arcpoint.db)",
    )
    parser.add_argument("--kind", choices=KINDS, help="only alerts of this kind")
    parser.add_argument("--subject", metavar="NAME", help="only alerts about this subject")
    parser.add_argument(
        "--min-severity", choices=SEVERITIES, help="only alerts at least this severe"
    )
    parser.add_argument(
        "--since", metavar="WHEN", help="only alerts from WHEN on (30m, 2h, 1d, ISO time, unix s)"
    )
    parser.add_argument(
        "--limit", type=int, default=20, metavar="N", help="show at most N alerts (default 20)"
    )
    parser.add_argument(
        "--all", action="store_true", help="include suppressed repeats and rate-limited alerts"
    )
    parser.add_argument("--json", action="store_true", help="print the alerts as JSON on stdout")
    parser.add_argument(
        "--deliver",
        action="store_true",
        help="first send due webhook deliveries now (to $ARCPOINT_WEBHOOK_URL)",
    )
    parser.add_argument(
        "--retry-dead",
        action="store_true",
        help="with --deliver: give dead deliveries a fresh set of attempts first",
    )
    parser.set_defaults(func=run)


def parse_since(text: str, now: float) -> float:
    """Unix seconds from '30m'-style durations back from `now`, ISO 8601, or unix seconds."""
    m = _DURATION.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"--since {text!r} is not a finite time")
        return value
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration (30m, 2h, 1d), an ISO time or unix seconds"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _no_db_hint(path: str) -> str:
    return (
        f"no alerts yet: there is no database at {path}. Run `arcpoint demo` first "
        f"(or point --db / $ARCPOINT_DB at an existing file)."
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from arcpoint.settings import load_settings

    settings = load_settings()
    path = args.db or settings.db
    if args.limit < 0:
        print("error: --limit must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    if args.retry_dead and not args.deliver:
        print("error: --retry-dead only makes sense with --deliver", file=sys.stderr)
        return EXIT_USAGE
    now = time.time()
    try:
        since = parse_since(args.since, now) if args.since else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.deliver and not settings.webhook_url:
        print(
            "error: --deliver needs a webhook: set ARCPOINT_WEBHOOK_URL (e.g. a Slack incoming "
            "webhook URL)",
            file=sys.stderr,
        )
        return EXIT_USAGE

    if not Path(path).is_file():
        print(_no_db_hint(path), file=sys.stderr)
        return EXIT_NO_DB

    from context_api.alerting import AlertService, recent_alerts
    from context_api.open_db import NotAnArcpointDatabase, open_existing

    try:  # never creates a file, never adds tables to a foreign one
        store = open_existing(path)
    except NotAnArcpointDatabase as exc:
        print(
            f"error: {exc}. Run `arcpoint demo` first, or point --db at the file it wrote.",
            file=sys.stderr,
        )
        return EXIT_NO_DB
    with store:
        delivery: dict[str, Any] | None = None
        if args.deliver:
            with AlertService.with_webhook(store, settings.webhook_url, restore=False) as svc:
                requeued = svc.requeue_dead(now) if args.retry_dead else 0
                report = svc.deliver_due(now)
            delivery = {
                "requeued": requeued,
                "attempted": report.attempted,
                "delivered": report.delivered,
                "retrying": report.retrying,
                "dead": report.dead,
                "deferred": report.deferred,
            }
            print(
                "deliver: "
                + (f"{requeued} dead requeued, " if args.retry_dead else "")
                + f"{report.attempted} attempted, {report.delivered} delivered, "
                f"{report.retrying} to retry, {report.dead} dead, {report.deferred} deferred",
                file=sys.stderr,
            )
        views = recent_alerts(
            store,
            kind=args.kind,
            subject=args.subject,
            min_severity=args.min_severity,
            since=since,
            limit=args.limit,
            include_suppressed=args.all,
        )
        newest = None
        if not views:  # tell "nothing yet" from "nothing matches"
            latest = store.list_alerts(limit=1)
            newest = latest[0].created_at if latest else None

    if args.json:
        payload: dict[str, Any] = {
            "db": path,
            "count": len(views),
            "alerts": [_as_json(v) for v in views],
        }
        if delivery is not None:
            payload["delivery"] = delivery
        print(json.dumps(payload, indent=2))
        if not views:
            print(_empty_hint(path, newest), file=sys.stderr)
        return EXIT_OK
    if not views:
        print(_empty_hint(path, newest))
        return EXIT_OK
    print(render(views, path=path, show_hidden_hint=not args.all))
    return EXIT_OK


def _empty_hint(path: str, newest: float | None) -> str:
    if newest is None:
        return (
            f"no alerts yet in {path}: run `arcpoint demo` first (its anomaly burst and backend "
            "failure scenarios raise alerts), or let the monitors run."
        )
    return (
        f"no alerts match these filters in {path} (newest alert at {_iso(newest)} UTC); "
        "widen --since/--kind or drop filters."
    )


def _delivery_text(view: AlertView) -> str:
    state = view.delivery_state
    parts = []
    for d in view.alert.deliveries:
        text = f"{d.channel}: {d.state}"
        if d.state in ("failed", "dead", "pending") and d.attempts:
            text += f" after {d.attempts} attempt{'s' if d.attempts != 1 else ''}"
        if d.state == "failed" and d.next_attempt_at is not None:
            text += f", next at {_iso(d.next_attempt_at)}"
        if d.state in ("failed", "dead") and d.last_error:
            text += f" ({d.last_error})"
        parts.append(text)
    if view.alert.suppressed:
        return f"suppressed: {view.alert.suppressed_reason or 'no reason recorded'}"
    return "; ".join(parts) if parts else f"{state} (no webhook configured)"


def render(views: list[AlertView], *, path: str, show_hidden_hint: bool = True) -> str:
    """The human listing: one header line per alert, then its action and delivery."""
    lines = [f"{len(views)} alert{'s' if len(views) != 1 else ''} in {path}, newest first:", ""]
    width_kind = max(len("KIND"), *(len(v.alert.kind) for v in views))
    width_subject = min(max(len("SUBJECT"), *(len(v.alert.subject) for v in views)), 30)
    lines.append(
        f"{'TIME (UTC)':<19}  {'SEVERITY':<8}  {'KIND':<{width_kind}}  "
        f"{'SUBJECT':<{width_subject}}  {'SEEN':<4}  {'DELIVERY':<10}  ALERT ID"
    )
    for v in views:
        a = v.alert
        seen = f"x{v.occurrences}" if v.occurrences > 1 else ""
        lines.append(
            f"{_iso(a.created_at)}  {a.severity.upper():<8}  {a.kind:<{width_kind}}  "
            f"{a.subject:<{width_subject}}  {seen:<4}  {v.delivery_state:<10}  {a.alert_id}"
        )
        if a.recommended_action:
            lines.append(f"    action:   {a.recommended_action}")
        if a.evidence:
            evidence = json.dumps(a.evidence, separators=(", ", ": "), sort_keys=True)
            lines.append(f"    evidence: {evidence[:200] + ('…' if len(evidence) > 200 else '')}")
        lines.append(f"    delivery: {_delivery_text(v)}")
    counts: dict[str, int] = {}
    for v in views:
        counts[v.delivery_state] = counts.get(v.delivery_state, 0) + 1
    lines.append("")
    lines.append("delivery: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    if counts.get("dead"):
        lines.append(
            "dead deliveries stay stored: `arcpoint alerts --deliver --retry-dead` sends them "
            "again to $ARCPOINT_WEBHOOK_URL"
        )
    if show_hidden_hint:
        lines.append("suppressed repeats and rate-limited alerts are hidden: --all shows them")
    return "\n".join(lines)


def _as_json(view: AlertView) -> dict[str, Any]:
    a = view.alert
    return {
        "alert_id": a.alert_id,
        "created_at": a.created_at,
        "time": datetime.fromtimestamp(a.created_at, UTC).isoformat(),
        "kind": a.kind,
        "subject": a.subject,
        "severity": a.severity,
        "evidence": a.evidence,
        "recommended_action": a.recommended_action,
        "occurrences": view.occurrences,
        "suppressed": a.suppressed,
        "suppressed_reason": a.suppressed_reason,
        "duplicate_of": a.duplicate_of,
        "run_id": a.run_id,
        "delivery_state": view.delivery_state,
        "deliveries": [d.model_dump(exclude={"alert_id"}) for d in a.deliveries],
    }
