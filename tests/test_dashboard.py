"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright): it loads
with no console errors, draws its charts from the live API, and the test saves a screenshot."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest

from agents.approvals import show_approval
from arcpoint.client import Client
from arcpoint.serve.process import ServerProcess
from context_api.store import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "dashboard-test-token-0123456789"


def _need_chromium() -> None:
    if Path(CHROMIUM).is_file():
        return
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: .ci/run must install it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def _seed(folder: Path) -> tuple[Path, str, str]:
    """A database whose monitors wait for an approval (a challenger won its experiment), plus
    the last hour of telemetry so the served forecaster has windows to forecast from."""
    from tests.serve_world import waiting_world
    from tools.sim.history import simulate_history

    db, approval_id, champion = waiting_world(folder)
    history = simulate_history(3600.0, seed=11, start_ts=0.0)
    shift = time.time() - 2.0 - max(p.ts for p in history)
    with Store(db) as store:
        store.insert_telemetry(
            [dataclasses.replace(p, ts=p.ts + shift) for p in history], source="history"
        )
    return db, approval_id, champion


def _traffic(client: Client, rounds: int) -> None:
    """Route requests and report outcomes across several ticks, so history has points."""
    for r in range(rounds):
        ds = [client.route(tier="standard") for _ in range(40)]
        client.record_outcomes(
            [
                {
                    "decision_id": d.decision_id,
                    "e2e_ms": 120.0 + 5 * (i % 7) + 10 * r,
                    "ttft_ms": 30.0 + (i % 5),
                    "status": "error" if i % 13 == 0 else "ok",
                }
                for i, d in enumerate(ds[:-5])  # five stay in flight
            ]
        )
        time.sleep(1.1)


def test_dashboard_loads_draws_live_charts_and_saves_a_screenshot(tmp_path):
    _need_chromium()
    from playwright.sync_api import sync_playwright

    shot = Path(os.environ.get("ARCPOINT_SCREENSHOT_DIR", tmp_path)) / "dashboard.png"
    db, approval_id, version = _seed(tmp_path)
    with ServerProcess(db, "--no-monitors", "--tick", "1", env={"ARCPOINT_TOKEN": TOKEN}) as server:
        with Client(server.url, token=TOKEN) as client:
            _traffic(client, 4)
        with sync_playwright() as pw:
            # A fresh profile directory per run (Playwright passes it as --user-data-dir).
            browser = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 1400},
            )
            try:
                page = browser.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                outside: list[str] = []
                page.on(
                    "request",
                    lambda r: None if r.url.startswith(server.url) else outside.append(r.url),
                )
                page.goto(server.url + "/")
                page.wait_for_function("Number(document.body.dataset.refreshes || 0) >= 2")
                # The table holds every backend of the fleet, with live in-flight counts.
                rows = page.locator("#backends tbody tr")
                assert rows.count() == 4
                inflight = sum(int(rows.nth(i).locator("td").nth(3).inner_text()) for i in range(4))
                assert inflight == 20  # 4 rounds x 5 requests never reported
                # Charts are drawn from the API's history (points counted) and are not blank.
                for chart in ("chart-share", "chart-inflight", "chart-ttft"):
                    points = page.get_attribute(f"#{chart}", "data-points")
                    assert int(points) > 0, chart
                    inked = page.evaluate(
                        """id => { const c = document.getElementById(id);
                        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                        return n; }""",
                        chart,
                    )
                    assert inked > 500, chart
                assert page.locator("#e2e-charts figure canvas").count() == 4
                # Forecasts from the served model, with their interval, next to what was seen.
                assert page.locator("#model").inner_text() == version
                forecast_cells = [rows.nth(i).locator("td").nth(6).inner_text() for i in range(4)]
                assert all("[" in c for c in forecast_cells), forecast_cells
                e2e_points = page.eval_on_selector_all(
                    "#e2e-charts canvas", "cs => cs.map(c => Number(c.dataset.points))"
                )
                assert all(p > 0 for p in e2e_points), e2e_points
                assert page.locator("#live").get_attribute("class") == "pill ok"
                # The pending promotion is shown; approving it from the page applies it.
                card = page.locator(f'.approval[data-id="{approval_id}"]')
                assert "promote" in card.inner_text()
                page.fill("#token", TOKEN)
                page.dispatch_event("#token", "change")
                page.screenshot(path=str(shot), full_page=True)
                card.locator("button.approve").click()
                page.wait_for_function(
                    "document.getElementById('answered').textContent.includes('approved')",
                    timeout=60_000,
                )
                assert page.locator("#answered").inner_text() == f"{approval_id} approved: applied"
                page.wait_for_function(
                    f"document.getElementById('model').textContent !== '{version}'"
                )
                promoted = page.locator("#model").inner_text()
                page.screenshot(path=str(shot.with_name("dashboard-approved.png")), full_page=True)
            finally:
                browser.close()
    assert not problems, problems
    assert not outside, f"the page reached outside the service: {outside}"
    assert shot.stat().st_size > 10_000
    with Store(db) as store:
        approval = show_approval(store, approval_id)
        assert approval["status"] == "applied" and approval["decided_by"] == "dashboard"
        assert store.active_model_version("forecaster").version_id == promoted != version
