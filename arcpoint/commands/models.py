"""`arcpoint models`: the forecaster's versions, and a rollback to an earlier one.

A read command first (it never creates a database). `rollback` changes which version is active
in the store; a running router picks it up without a restart, because the feedback loop loads
the store's active version at its next check (`agents.feedback_loop.sync_active_forecaster`).
That is why a rollback is refused to a version whose artifact cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_NO_DB = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

_DESCRIPTION = """\
List the forecaster's model versions, oldest first: the active one marked with *, each with its
parent (the version it was retrained from), its training window, hold-out metrics (MAE, R²,
rows), status, artifact and note; then the activation history (promotions and rollbacks).

  arcpoint models                      list versions and activations
  arcpoint models rollback             restore the previously active version
  arcpoint models rollback --to ID     restore that version

A rollback by default walks back through the activation history, skipping versions that were
themselves rolled back from, so a second rollback goes further back instead of bouncing.

Exit status: 0 on success, 1 when the database is missing or not an Arcpoint database,
2 on bad arguments, 3 when the rollback is refused (nothing to roll back to, unknown version,
or an artifact that cannot be loaded).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list forecaster versions; roll back to an earlier one",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", metavar="PATH", default=None, help="SQLite file")
    parser.add_argument("--kind", default="forecaster", help="model kind (default forecaster)")
    parser.add_argument("--json", action="store_true", help="print as JSON on stdout")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    rb = actions.add_parser(
        "rollback",
        help="make an earlier version active again",
        description="Make an earlier version active again (recorded as a rollback).",
    )
    # SUPPRESS: an option given before the action is not overwritten by the action's default.
    rb.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="SQLite file")
    rb.add_argument("--kind", default=argparse.SUPPRESS, help="model kind (default forecaster)")
    rb.add_argument("--to", metavar="VERSION", help="the version to restore (default: previous)")
    rb.add_argument("--reason", default="manual rollback (arcpoint models rollback)")
    rb.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print as JSON on stdout"
    )
    parser.set_defaults(func=run, action=None)


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _open(db: str) -> tuple[Any, str | None]:
    """The store at `db`, or why not; never creates a file or changes a foreign one."""
    from context_api.open_db import NotAnArcpointDatabase, open_existing

    if not Path(db).is_file():
        return None, f"no database at {db}: run `arcpoint loop` (or `arcpoint demo`) first"
    try:
        return open_existing(db), None
    except NotAnArcpointDatabase as exc:
        return None, str(exc)


def _holdout(metrics: dict[str, Any]) -> dict[str, Any]:
    forest = metrics.get("forest") if isinstance(metrics, dict) else None
    if not isinstance(forest, dict):
        return {}
    return {
        "mae_ms": forest.get("mae_ms"),
        "r2": forest.get("r2"),
        "n_holdout": metrics.get("n_holdout"),
    }


def version_rows(store: Any, kind: str) -> list[dict[str, Any]]:
    return [
        {
            "version_id": v.version_id,
            "active": v.status == "active",
            "status": v.status,
            "parent_id": v.parent_id,
            "created_at": v.created_at,
            "trained_from_ts": v.trained_from_ts,
            "trained_to_ts": v.trained_to_ts,
            "holdout": _holdout(v.metrics),
            "artifact_path": v.artifact_path,
            "artifact_exists": bool(v.artifact_path and Path(v.artifact_path).is_file()),
            "activated_at": v.activated_at,
            "note": v.note,
        }
        for v in store.list_model_versions(kind)
    ]


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _print_list(rows: list[dict[str, Any]], history: list[Any]) -> None:
    if not rows:
        print("no model versions yet: `arcpoint loop` or `arcpoint demo` trains and stores one")
        return
    header = (
        f"  {'version':<20} {'status':<10} {'parent':<20} {'trained from':<19} "
        f"{'trained to':<19} {'MAE ms':>8} {'R2':>6} {'rows':>6}  artifact"
    )
    print(header)
    for r in rows:
        h = r["holdout"]
        print(
            f"{'*' if r['active'] else ' '} {r['version_id']:<20} {r['status']:<10} "
            f"{r['parent_id'] or '-':<20} {_iso(r['trained_from_ts']):<19} "
            f"{_iso(r['trained_to_ts']):<19} {_fmt(h.get('mae_ms'), '8.1f'):>8} "
            f"{_fmt(h.get('r2'), '6.3f'):>6} {_fmt(h.get('n_holdout'), 'd'):>6}  "
            f"{'yes' if r['artifact_exists'] else 'MISSING' if r['artifact_path'] else 'none'}"
        )
    if history:
        print("\nactivations (oldest first):")
        for a in history:
            print(
                f"  {_iso(a.ts)}  {a.action:<8} {a.version_id:<20} "
                f"(was {a.previous_version_id or '-'}): {a.reason or ''}"
            )


def run(args: argparse.Namespace) -> int:
    from arcpoint.settings import load_settings

    db = args.db or load_settings().db
    store, error = _open(db)
    if store is None:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_DB
    try:
        if args.action == "rollback":
            return _rollback(store, args)
        rows = version_rows(store, args.kind)
        history = store.model_history(args.kind)
        if args.json:
            print(
                json.dumps(
                    {
                        "versions": rows,
                        "activations": [h.model_dump() for h in history],
                    },
                    indent=2,
                )
            )
        else:
            _print_list(rows, history)
        return EXIT_OK
    finally:
        store.close()


def _rollback(store: Any, args: argparse.Namespace) -> int:
    from agents.feedback_loop import load_forecaster

    kind = args.kind
    current = store.active_model_version(kind)
    target_id = args.to
    if target_id is None:
        target_id = _default_target(store, kind)
        if target_id is None:
            print(f"refused: no earlier active {kind} version to roll back to", file=sys.stderr)
            return EXIT_REFUSED
    target = store.get_model_version(target_id)
    if target is None or target.kind != kind:
        print(f"refused: no {kind} version {target_id!r}", file=sys.stderr)
        return EXIT_REFUSED
    if current is not None and current.version_id == target_id:
        print(f"{target_id} is already active; nothing to do")
        return EXIT_OK
    if kind == "forecaster":
        try:
            if not target.artifact_path:
                raise ValueError("it has no artifact")
            loaded = load_forecaster(target.artifact_path)
            if loaded.version_id != target_id:
                raise ValueError(f"its artifact holds {loaded.version_id}")
        except (ValueError, OSError) as exc:
            print(
                f"refused: {target_id} cannot be loaded by a running router ({exc})",
                file=sys.stderr,
            )
            return EXIT_REFUSED
    active = store.rollback_model(kind, to_version=target_id, reason=args.reason)
    was = current.version_id if current else None
    if getattr(args, "json", False):
        print(json.dumps({"active": active.version_id, "previous": was, "reason": args.reason}))
    else:
        print(
            f"rolled back: {active.version_id} is active (was {was or 'none'}); a running "
            "loop's router switches to it at its next check, without a restart"
        )
    return EXIT_OK


def _default_target(store: Any, kind: str) -> str | None:
    """What `Store.rollback_model` picks without `to_version` (checked here first, so that its
    artifact can be verified before anything changes)."""
    current = store.active_model_version(kind)
    history = store.model_history(kind)
    excluded = {current.version_id} if current else set()
    excluded.update(
        h.previous_version_id for h in history if h.action == "rollback" and h.previous_version_id
    )
    for h in reversed(history):
        if h.version_id not in excluded:
            return h.version_id
    return None
