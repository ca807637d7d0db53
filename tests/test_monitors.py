"""The monitor graph over a store that lives through a drift: the drift monitor requests a retrain,
the feedback learner trains a challenger, the experiment monitor judges it and proposes the
promotion, which waits at a LangGraph interrupt until an operator answers; only an approval (or
the auto-approve setting) changes the serving model."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from agents import approvals
from agents.monitor_graph import AUTO_APPROVER, MONITORS, MonitorGraph
from arcpoint.cli import main
from context_api.api import ContextAPI
from context_api.store import Store
from context_api.traces import TraceStore
from tests.monitor_fixtures import DRIFT_AT, MonitorWorld


@functools.lru_cache(maxsize=1)
def _template() -> tuple[Path, str]:
    """A store 50 minutes after the drift, one pass done (request, challenger, experiment),
    then 40 more minutes of telemetry: the next pass reaches the verdict."""
    folder = Path(tempfile.mkdtemp(prefix="arcpoint-monitor-"))
    db = folder / "world.db"
    with Store(db) as store:
        world = MonitorWorld(store, str(folder / "world.models"))
        world.advance(DRIFT_AT - world.now + 50 * 60)
        with MonitorGraph(ContextAPI(store), traces=TraceStore(store)) as graph:
            first = graph.run()
        world.advance(40 * 60)
        champion = world.champion.version_id
    assert [r["agent"] for r in first.reports] == list(MONITORS), first.reports
    return db, champion


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, str]:
    db, champion = _template()
    target = tmp_path / "world.db"
    shutil.copyfile(db, target)
    shutil.copytree(db.with_name("world.models"), tmp_path / "world.models")
    return target, champion


def _active(store: Store) -> str:
    active = store.active_model_version("forecaster")
    assert active is not None
    return active.version_id


def test_the_first_pass_requests_trains_and_starts_an_experiment(world: tuple[Path, str]) -> None:
    db, champion = world
    with Store(db) as store:
        requests = store.list_events(kind="retrain_requested")
        handled = store.list_events(kind="retrain_handled")
        [experiment] = store.list_experiments()
        traces = TraceStore(store).list(kind="monitor", limit=5)
        assert _active(store) == champion  # nothing served differently
    assert len(requests) == 1 and "recent MAE" in requests[0].detail["reason"]
    assert len(handled) == 1 and handled[0].detail["status"] == "trained"
    challenger = handled[0].detail["version_id"]
    assert experiment.challenger_id == challenger and experiment.champion_id == champion
    assert experiment.status == "running" and experiment.params["source"] == "telemetry"
    # never scored on the data the challenger learned from
    assert experiment.params["evaluate_from"] >= requests[0].detail["window"]["end_ts"]
    assert len(traces) == 1


def test_a_proposal_waits_for_approval_and_only_the_approval_changes_the_model(
    world: tuple[Path, str],
) -> None:
    db, champion = world
    with Store(db) as store:
        api = ContextAPI(store)
        with MonitorGraph(api, traces=TraceStore(store)) as graph:
            run = graph.run()
            assert run.waiting and run.proposal is not None
            assert graph.waiting(run.thread_id)
        pid = run.proposal["approval_id"]
        row = approvals.show_approval(store, pid)
        assert row["status"] == "pending" and row["action"] == "promote"
        assert row["thread_id"] == run.thread_id and row["proposal_trace_id"] == run.trace_id
        assert row["evidence"]["last_look"]["verdict"] == "challenger_wins"
        assert _active(store) == champion  # proposed, not applied

        # A second pass while it waits proposes nothing new and changes nothing.
        with MonitorGraph(api) as graph:
            again = graph.run()
        assert not again.waiting and _active(store) == champion
        assert [a.approval_id for a in approvals.list_approvals(store, "pending")] == [pid]

        # The answer, from a new graph object (as another process would), resumes the thread.
        out = approvals.approve(store, pid, by="alice", reason="the figures hold")
        assert out["approval"]["status"] == "applied" and out["applied"]["status"] == "applied"
        assert _active(store) == row["version_id"]
        with MonitorGraph(api) as graph:
            assert not graph.waiting(run.thread_id)
        history = store.model_history("forecaster")
        assert history[-1].version_id == row["version_id"] and pid in (history[-1].reason or "")
        watch = [e for e in store.list_experiments("running") if e.params["purpose"] == "watch"]
        assert len(watch) == 1 and watch[0].challenger_id == champion
        [answer_trace] = TraceStore(store).list(kind="approval", parent_id=pid)
        assert answer_trace.trace_id in approvals.show_approval(store, pid)["answer_trace_ids"]
        with pytest.raises(approvals.ApprovalError, match="already answered"):
            approvals.reject(store, pid, by="bob", reason="too late")


def test_a_rejection_needs_a_reason_and_changes_nothing(world: tuple[Path, str]) -> None:
    db, champion = world
    with Store(db) as store:
        with MonitorGraph(ContextAPI(store)) as graph:
            run = graph.run()
        pid = run.proposal["approval_id"]
        with pytest.raises(approvals.ApprovalError, match="reason"):
            approvals.reject(store, pid, by="bob", reason="  ")
        out = approvals.reject(store, pid, by="bob", reason="wait for the weekend traffic")
        assert out["approval"]["status"] == "rejected" and out["applied"] is None
        assert _active(store) == champion
        assert store.list_experiments("running") == []
        with pytest.raises(approvals.ApprovalError, match="no approval"):
            approvals.approve(store, "apr-nope", by="bob")


def test_auto_approve_applies_and_says_so(world: tuple[Path, str]) -> None:
    db, champion = world
    with Store(db) as store:
        with MonitorGraph(ContextAPI(store), auto_approve=True) as graph:
            run = graph.run()
        assert not run.waiting and run.applied["status"] == "applied"
        [row] = approvals.list_approvals(store)
        assert row.decided_by == AUTO_APPROVER and _active(store) == row.version_id != champion


def test_the_commands(world: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = world
    assert main(["monitor", "--once", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "WAITING FOR APPROVAL apr-" in out
    pid = out.split("WAITING FOR APPROVAL ")[1].split(":")[0]
    assert main(["approvals", "--db", str(db)]) == 0
    assert f"{pid}  PENDING" in capsys.readouterr().out
    assert main(["approvals", "show", pid, "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "pending"
    with pytest.raises(SystemExit):  # a rejection without --reason is a usage error
        main(["approvals", "reject", pid, "--db", str(db)])
    capsys.readouterr()
    assert main(["approvals", "approve", pid, "--by", "carol", "--db", str(db)]) == 0
    assert "APPLIED by carol" in capsys.readouterr().out
    assert main(["approvals", "approve", pid, "--db", str(db)]) == 3
    assert "already answered" in capsys.readouterr().err
    assert main(["monitor", "--every", "0", "--db", str(db)]) == 2


def test_with_claude_each_monitor_gets_its_write_tools_and_the_pass_is_traced(
    world: tuple[Path, str],
) -> None:
    from tests.agent_fixtures import ScriptedAPI, claude_message, claude_model, claude_tool_use

    db, champion = world
    api = ScriptedAPI(
        claude_tool_use("t1", "drift_status", {}),
        claude_message([{"type": "text", "text": "Drift checked; nothing to record."}]),
        claude_message([{"type": "text", "text": "No retrain request waits."}]),
        claude_tool_use("t2", "experiments", {}),
        claude_message([{"type": "text", "text": "The experiment is still collecting."}]),
    )
    with Store(db) as store:
        with MonitorGraph(ContextAPI(store), claude_model(api), traces=TraceStore(store)) as g:
            run = g.run()
        trace = TraceStore(store).get(run.trace_id)
        assert _active(store) == champion
    tools = [{t["name"] for t in body["tools"]} for body in api.bodies]
    assert {"record_drift_reports", "request_retrain"} <= tools[0]
    assert "train_challenger" in tools[2] and "train_challenger" not in tools[0]
    assert {"start_experiment", "evaluate_experiment", "propose_model_change"} <= tools[3]
    assert [r["llm"] for r in run.reports] == ["claude"] * 3 and not run.waiting
    assert [s.name for s in trace.steps if s.type == "node"] == list(MONITORS)
    assert trace.kind == "monitor" and trace.llm == "claude"
