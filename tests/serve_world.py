"""A database whose monitors wait for an operator: a drifted fleet, a challenger that won its
experiment, and its promotion pending at the approval interrupt (built once per process)."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

from agents.monitor_graph import MonitorGraph
from context_api.api import ContextAPI
from context_api.store import Store
from context_api.traces import TraceStore
from tests.monitor_fixtures import DRIFT_AT, MonitorWorld


@functools.lru_cache(maxsize=1)
def _template() -> tuple[Path, str, str]:
    folder = Path(tempfile.mkdtemp(prefix="arcpoint-serve-world-"))
    db = folder / "world.db"
    with Store(db) as store:
        world = MonitorWorld(store, str(folder / "world.models"))
        world.advance(DRIFT_AT - world.now + 50 * 60)
        with MonitorGraph(ContextAPI(store), traces=TraceStore(store)) as graph:
            graph.run()
        world.advance(40 * 60)
        with MonitorGraph(ContextAPI(store), traces=TraceStore(store)) as graph:
            run = graph.run()
        assert run.waiting and run.proposal is not None, run.to_json()
    return db, run.proposal["approval_id"], world.champion.version_id


def waiting_world(folder: Path) -> tuple[Path, str, str]:
    """(database, pending approval id, serving champion) copied into `folder`."""
    db, approval_id, champion = _template()
    target = folder / "world.db"
    shutil.copyfile(db, target)
    shutil.copytree(db.with_name("world.models"), folder / "world.models")
    return target, approval_id, champion
