"""Ctrl-C and SIGTERM stop `arcpoint demo` and `arcpoint eval run` within seconds, end every
worker process, leave the run marked `interrupted` and exit 130 / 143 (issue 14, point 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from evals.workers import WorkerError, run_tasks
from tests.cli_runs import (
    REPO,
    arcpoint,
    fast_demo_args,
    group_alive,
    kill_group,
    run_statuses,
    wait_for,
)

# Generous bounds on how long the commands may take to stop: a hang (the bug) never ends.
STOP_WITHIN_S = 20


def _stop_and_check(proc: subprocess.Popen, sig: int, *, whole_group: bool) -> str:
    """Send `sig` (to the group, as a terminal's Ctrl-C does, or to the main process, as `kill`
    does), and check that everything exits in time with the shell's code for that signal."""
    if whole_group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    try:
        _, err = proc.communicate(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"still running {STOP_WITHIN_S} s after signal {sig}") from None
    assert proc.returncode == 128 + sig, err
    deadline = time.monotonic() + 5
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(proc.pid), "worker processes left behind"
    assert "Traceback" not in err, err
    return err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "whole_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "term"]
)
def test_demo_stops_on_interrupt(tmp_path: Path, sig: int, whole_group: bool) -> None:
    db = tmp_path / "demo.db"
    proc = arcpoint(*fast_demo_args(db, policies=("predictive", "round_robin")))
    wait_for(
        lambda: run_statuses(db, "demo") == ["running"],
        timeout=120,
        what="the demo's run to start",
        proc=proc,
    )
    time.sleep(1.0)  # let the workers get going
    _stop_and_check(proc, sig, whole_group=whole_group)
    assert run_statuses(db, "demo") == ["interrupted"]


@pytest.mark.slow
def test_eval_run_stops_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "out"
    scenario = REPO / "evals" / "scenarios" / "ci" / "ci_latency_spike.yaml"
    proc = arcpoint("eval", "run", str(scenario), "--llm", "offline", "--out", str(out))
    work = out / "work" / "ci_latency_spike.db"
    wait_for(
        lambda: run_statuses(work) == ["running"],
        timeout=120,
        what="the eval's predictive run to start",
        proc=proc,
    )
    _stop_and_check(proc, signal.SIGINT, whole_group=True)
    assert run_statuses(work) == ["interrupted"]


def _boom(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * x


def _die(x: int) -> int:
    if x == 1:
        os._exit(9)  # a worker killed from outside (OOM killer, kill -9)
    time.sleep(0.05)
    return x


def test_worker_pool_runs_everything_once() -> None:
    got = dict(run_tasks(lambda x: x * x, list(range(7)), 2))
    assert got == {i: i * i for i in range(7)}
    assert dict(run_tasks(lambda x: x + 1, [1, 2], 1)) == {0: 2, 1: 3}


def test_worker_pool_reports_a_failing_task() -> None:
    with pytest.raises(WorkerError, match="three"):
        list(run_tasks(_boom, list(range(6)), 2))


def test_worker_pool_reports_a_dead_worker_instead_of_hanging() -> None:
    with pytest.raises(WorkerError, match="died with exit code 9"):
        list(run_tasks(_die, [0, 1, 2], 2))
