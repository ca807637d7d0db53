"""`arcpoint approvals`: the model changes the monitors proposed, and the operator's answers.

Approving or rejecting records the answer and resumes the monitor pass waiting at that approval's
LangGraph interrupt; only an approved change is applied (`agents.approvals`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from typing import Any

EXIT_OK = 0
EXIT_NO_DB = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

_DESCRIPTION = """\
The monitors propose a promotion (a challenger won its experiment) or a rollback (a promoted
model lost its post-promotion watch); the proposal waits here until an operator answers:

  arcpoint approvals                       list (the same as `list`)
  arcpoint approvals list [--status pending]
  arcpoint approvals show ID               the proposal, its evidence and traces
  arcpoint approvals approve ID [--reason TEXT]
  arcpoint approvals reject ID --reason TEXT

Answers are recorded with who gave them (--by, default the login name) and resume the waiting
monitor pass, which applies an approved change (and starts a post-promotion watch) or ends.
A change whose premise no longer holds (another version serves now) is marked superseded.

Exit status: 0 done, 1 no database, 2 bad arguments, 3 refused (unknown id, already answered,
a rejection without a reason).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "approvals",
        help="list, show, approve or reject the monitors' proposed model changes",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--db", metavar="PATH", default=None, help="SQLite file")
    p.add_argument("--json", action="store_true", help="print as JSON")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    ls = sub.add_parser("list", help="approvals, newest first")
    ls.add_argument(
        "--status",
        choices=("pending", "approved", "rejected", "applied", "superseded", "failed"),
        default=None,
    )
    show = sub.add_parser("show", help="one approval in full")
    show.add_argument("approval_id", metavar="ID")
    ok = sub.add_parser("approve", help="approve and apply the proposed change")
    ok.add_argument("approval_id", metavar="ID")
    ok.add_argument("--reason", default=None, help="why (optional)")
    ok.add_argument("--by", default=None, help="who approves (default: the login name)")
    no = sub.add_parser("reject", help="reject the proposed change (a reason is required)")
    no.add_argument("approval_id", metavar="ID")
    no.add_argument("--reason", required=True, help="why")
    no.add_argument("--by", default=None, help="who rejects (default: the login name)")
    for sp in (ls, show, ok, no):
        sp.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="SQLite file")
        sp.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print as JSON"
        )
    p.set_defaults(func=run, action=None)


def run(args: argparse.Namespace) -> int:
    from agents import approvals
    from arcpoint.commands.ask import model_from_settings, open_for_reading
    from arcpoint.settings import load_settings

    settings = load_settings()
    db = args.db or settings.db
    store, problem = open_for_reading(db, settings)
    if store is None:
        print(problem, file=sys.stderr)
        return EXIT_NO_DB
    try:
        action = args.action or "list"
        if action == "list":
            rows = approvals.list_approvals(store, getattr(args, "status", None))
            _print_list([r.model_dump(mode="json") for r in rows], args.json)
            return EXIT_OK
        if action == "show":
            _print_one(approvals.show_approval(store, args.approval_id), args.json)
            return EXIT_OK
        by = (args.by or _login()).strip()
        model = model_from_settings(settings)
        if action == "approve":
            out = approvals.approve(store, args.approval_id, by=by, reason=args.reason, model=model)
        else:
            out = approvals.reject(store, args.approval_id, by=by, reason=args.reason, model=model)
        _print_answer(out, args.json)
        return EXIT_OK
    except approvals.ApprovalError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        store.close()


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment
        return "operator"


def _t(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _print_list(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("No approvals: the monitors have proposed no model change.")
        return
    for r in rows:
        who = f" by {r['decided_by']}" if r.get("decided_by") else ""
        print(
            f"{r['approval_id']}  {r['status'].upper():<10} {r['action']} {r['version_id']} "
            f"(serving then: {r['current_version_id']})  proposed {_t(r['created_at'])}{who}"
        )
    pending = [r["approval_id"] for r in rows if r["status"] == "pending"]
    if pending:
        print(f"\n{len(pending)} waiting: arcpoint approvals show {pending[0]}")


def _print_one(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, indent=2))
        return
    lines = [
        f"approval {row['approval_id']}: {row['status'].upper()}",
        f"  proposed   {_t(row['created_at'])} by {row['proposed_by']}",
        f"  change     {row['action']} {row['version_id']} (serving then: "
        f"{row['current_version_id']})",
        f"  summary    {row['summary']}",
    ]
    if row.get("experiment_id"):
        lines.append(f"  experiment {row['experiment_id']}")
    look = (row.get("evidence") or {}).get("last_look") or {}
    if look:
        lines.append(
            f"  last look  MAE challenger {_num(look.get('challenger_mae'), '.1f')} ms vs champion "
            f"{_num(look.get('champion_mae'), '.1f')} ms, p={_num(look.get('p_value'), '.2g')}, "
            f"blocks {look.get('n_champion')}/{look.get('n_challenger')} (champion/challenger)"
        )
    if row.get("decided_by"):
        lines.append(
            f"  answered   {_t(row['decided_at'])} by {row['decided_by']}"
            + (f": {row['reason']}" if row.get("reason") else "")
        )
    if row.get("result"):
        lines.append(f"  result     {row['result']}")
    if row.get("proposal_trace_id"):
        lines.append(f"  traces     arcpoint traces show {row['proposal_trace_id']}")
    for tid in row.get("answer_trace_ids") or []:
        lines.append(f"             arcpoint traces show {tid}")
    if row["status"] == "pending":
        lines.append(
            f"\nAnswer: arcpoint approvals approve {row['approval_id']}  |  "
            f"arcpoint approvals reject {row['approval_id']} --reason TEXT"
        )
    print("\n".join(lines))


def _print_answer(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(out, indent=2, default=str))
        return
    row = out["approval"]
    print(f"approval {row['approval_id']}: {row['status'].upper()} by {row['decided_by']}")
    if row.get("result"):
        print(row["result"])
    elif row["status"] == "rejected":
        print(f"nothing changed: {row['version_id']} does not serve ({row['reason']})")


def _num(v: object, spec: str) -> str:
    """A figure for people (the JSON output keeps full precision)."""
    return f"{v:{spec}}" if isinstance(v, int | float) and not isinstance(v, bool) else "n/a"
