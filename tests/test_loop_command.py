"""`arcpoint loop` and `arcpoint models`: what an operator runs and reads.

The loop command is run on a compact drift scenario (the command's own scenario, shortened and
with small forests) by replacing the run configuration it builds; everything else (argument
handling, the run, the printed timeline, the JSON file, the store it leaves) is the real code.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

import evals.loop_run as loop_run
from agents.feedback_loop import LoopConfig, load_forecaster, sync_active_forecaster
from arcpoint.cli import main
from context_api.fleet_state import FleetState
from context_api.store import Store
from tools.experiment_stats import ExperimentConfig
from tools.retrain_policy import RetrainPolicy

RealConfig = loop_run.LoopRunConfig
QUICK_LOOP = LoopConfig(
    samples_per_tick=4,
    burn_in_s=300.0,
    ph_warmup=120,
    reference_samples=120,
    ph_threshold_sigmas=40.0,
    retrain=RetrainPolicy(
        min_new_samples=100,
        min_mae_samples=50,
        cooldown_seconds=600.0,
        train_window_seconds=3600.0,
        min_train_window_seconds=1800.0,
    ),
    experiment=ExperimentConfig(
        min_samples_per_arm=15, planned_samples_per_arm=45, n_bootstrap=300
    ),
    analysis_every_s=1200.0,
)


def quick_config(**kw):
    """What the command asked for, on the compact scenario."""
    asked = kw["loop"]
    return RealConfig(
        db=kw["db"],
        hours=kw["hours"],
        seed=kw["seed"],
        history_hours=3.0,
        drift_start_s=1800.0,
        ramp_s=900.0,
        drift_factor=2.5,
        mean_rps=8.0,
        champion_trees=kw["champion_trees"],
        loop=QUICK_LOOP.model_copy(
            update={"mode": asked.mode, "seed": asked.seed, "n_estimators": asked.n_estimators}
        ),
    )


@pytest.fixture(scope="module")
def loop_run_output(tmp_path_factory):
    """One `arcpoint loop` run shared by the tests that read its output and its store."""
    tmp = tmp_path_factory.mktemp("cli")
    db, out = tmp / "arcpoint.db", tmp / "timeline.json"
    mp = pytest.MonkeyPatch()
    mp.setattr(loop_run, "LoopRunConfig", quick_config)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(
                ["loop", "--db", str(db), "--json", str(out), "--hours", "2.5", "--trees", "10"]
            )
    finally:
        mp.undo()
    return code, stdout.getvalue(), stderr.getvalue(), db, out


def test_loop_prints_the_timeline_and_exits_0(loop_run_output) -> None:
    code, stdout, stderr, _, _ = loop_run_output
    assert code == 0
    for needle in (
        "drift begins (ground truth from the scenario)",
        "drift detected",
        "challenger rf-",
        "started (champion vs challenger, shadow mode",
        "Figures",
        "drift began",
        "delay",
        "experiment",
        "MAE",
        "champion before the drift",
    ):
        assert needle in stdout, needle
    # progress goes to stderr, the timeline to stdout
    assert "simulated 1 h" in stderr and "simulated 1 h" not in stdout


def test_loop_json_holds_the_same_timeline(loop_run_output) -> None:
    _, stdout, _, db, out = loop_run_output
    t = json.loads(out.read_text())
    assert t["drift_began_s"] == 1800.0
    assert t["drift_detected"]["t_s"] > t["drift_began_s"]
    assert t["detection_delay_s"] == pytest.approx(t["drift_detected"]["t_s"] - 1800.0)
    assert t["challenger_trained"]["parent"] == t["champion"]["version"]
    e = t["experiment"]
    for key in ("mode", "state", "p_value", "ci_low_ms", "ci_high_ms", "n_champion", "looks"):
        assert key in e
    assert e["looks"] >= 1
    assert set(t["mae_ms"]) >= {"champion_before_drift", "champion_drifted_until_promotion"}
    # every event printed is in the JSON, in the same order
    printed = [ev["summary"] for ev in t["events"]]
    positions = [stdout.index(s) for s in printed]
    assert positions == sorted(positions)
    with Store(db) as store:
        run = store.get_run(t["run_id"])
        assert run.command == "loop" and run.status == "finished"
        assert run.summary["detection_delay_s"] == t["detection_delay_s"]


def test_loop_rejects_bad_arguments(tmp_path, capsys) -> None:
    assert main(["loop", "--db", str(tmp_path / "x.db"), "--hours", "1"]) == 2
    assert "--hours" in capsys.readouterr().err
    assert main(["loop", "--db", str(tmp_path / "x.db"), "--trees", "0"]) == 2
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(SystemExit):
        main(["loop", "--mode", "ab"])


# ------------------------------------------------------------------------------ arcpoint models
def test_models_lists_versions_with_parent_window_metrics_and_active_flag(
    loop_run_output, capsys
) -> None:
    _, _, _, db, out = loop_run_output
    t = json.loads(out.read_text())
    assert main(["models", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    champion, challenger = t["champion"]["version"], t["challenger_trained"]["version"]
    assert champion in text and challenger in text
    line = next(ln for ln in text.splitlines() if ln.lstrip("* ").startswith(challenger))
    assert champion in line  # its parent
    active = next(ln for ln in text.splitlines() if ln.startswith("*"))
    assert t["active_version_at_end"] in active
    assert "activations" in text

    assert main(["models", "--db", str(db), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["version_id"]: r for r in data["versions"]}
    assert rows[challenger]["parent_id"] == champion
    assert rows[challenger]["trained_to_ts"] > rows[challenger]["trained_from_ts"]
    assert rows[challenger]["holdout"]["mae_ms"] > 0
    assert rows[challenger]["artifact_exists"]
    assert sum(r["active"] for r in data["versions"]) == 1


def test_models_rollback_restores_a_version_that_a_running_router_picks_up(
    loop_run_output, tmp_path, capsys
) -> None:
    _, _, _, db_src, out = loop_run_output
    db = tmp_path / "copy.db"
    with Store(db_src) as src:  # work on a copy: the other tests read the original
        src.conn.execute("VACUUM INTO ?", (str(db),))
    t = json.loads(out.read_text())
    champion, challenger = t["champion"]["version"], t["challenger_trained"]["version"]
    start = t["active_version_at_end"]
    target = challenger if start == champion else champion

    with Store(db) as store:
        fleet = FleetState(
            loop_run.backends_of(loop_run.loop_scenario(2.5, drift_start_s=1800, ramp_s=900)),
            load_forecaster(store.get_model_version(start).artifact_path),
        )
    assert main(["models", "--db", str(db), "rollback", "--to", target]) == 0
    assert f"rolled back: {target} is active" in capsys.readouterr().out
    with Store(db) as store:
        assert store.active_model_version("forecaster").version_id == target
        assert store.model_history("forecaster")[-1].action == "rollback"
        # what the running loop does at its next check: the same FleetState, a new forecaster
        assert sync_active_forecaster(store, fleet) == target
        assert fleet.forecaster.version_id == target

    # nothing further back: refused, exit 3; unknown version: refused
    assert main(["models", "rollback", "--db", str(db)]) == 3
    assert "refused" in capsys.readouterr().err
    assert main(["models", "--db", str(db), "rollback", "--to", "rf-nope"]) == 3
    # a version whose artifact cannot be loaded is refused before anything changes
    with Store(db) as store:
        store.register_model_version("rf-noartifact", "forecaster", note="test")
    assert main(["models", "--db", str(db), "rollback", "--to", "rf-noartifact"]) == 3
    assert "cannot be loaded" in capsys.readouterr().err
    with Store(db) as store:
        assert store.active_model_version("forecaster").version_id == target


def test_models_on_a_missing_database_exits_1_without_creating_it(tmp_path, capsys) -> None:
    db = tmp_path / "none.db"
    assert main(["models", "--db", str(db)]) == 1
    assert "no database" in capsys.readouterr().err
    assert not db.exists()
    assert main(["models", "rollback", "--db", str(db)]) == 1


def test_models_on_an_empty_database_says_what_to_run(tmp_path, capsys) -> None:
    db = tmp_path / "empty.db"
    Store(db).close()
    assert main(["models", "--db", str(db)]) == 0
    assert "arcpoint loop" in capsys.readouterr().out
