"""Is the forecaster drifting: live concept-drift tests, Page-Hinkley change points, stored
reports, and the drift monitor's record of its findings."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from context_api import api_models as m
from context_api import explain as ex
from context_api import queries as q
from context_api.agent_tools.base import (
    ToolBase,
    ToolInfo,
)
from context_api.store import DriftReport as StoredDriftReport
from context_api.timefmt import iso_or_unknown as _iso
from context_api.timefmt import num, rnd
from tools.drift import concept_drift
from tools.drift.page_hinkley import PageHinkley


class DriftTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "drift_status",
            "Is the forecaster drifting? Concept-drift tests (Welch t, Mann-Whitney U, "
            "Benjamini-Hochberg corrected) on per-tick absolute errors, current window vs "
            "reference, per backend; Page-Hinkley change points; stored drift reports.",
            m.DriftInput,
            m.DriftStatusOut,
            "drift_status",
        ),
        ToolInfo(
            "record_drift_reports",
            "Run the concept-drift check and store its findings at or above a severity as "
            "drift reports (the drift monitor's record).",
            m.RecordDriftInput,
            m.WriteOut,
            "record_drift_reports",
            writes=True,
        ),
    )

    def drift_status(self, params: m.DriftInput | None = None) -> m.DriftStatusOut:
        params = params or m.DriftInput()
        self._check_backend(params.backend)
        now = self.now(params.at)
        cur_start = now - params.window_minutes * 60.0
        ref_start = cur_start - params.reference_minutes * 60.0
        per_tick = q.abs_errors_per_tick(self.store, ref_start, now + 1e-6)
        by_backend: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in per_tick:
            if params.backend is None or r["backend"] == params.backend:
                by_backend[r["backend"]].append(r)
        live: list[m.DriftFinding] = []
        severities: list[str] = []
        drifted: list[str] = []
        for name in sorted(by_backend):
            ref = [r["mae"] for r in by_backend[name] if r["ts"] < cur_start]
            cur = [r["mae"] for r in by_backend[name] if r["ts"] >= cur_start]
            report = concept_drift(ref, cur, min_samples=20)
            for res in report.results:
                live.append(
                    m.DriftFinding(
                        backend=name,
                        test=res.test,
                        status=res.status,
                        severity=res.severity,
                        p_value=num(res.p_value),
                        p_adjusted=num(res.p_adjusted),
                        reference_mae_ms=rnd(res.reference_mean),
                        current_mae_ms=rnd(res.current_mean),
                        n_reference=res.n_reference,
                        n_current=res.n_current,
                    )
                )
            severities.append(report.max_severity)
            if report.drifted:
                drifted.append(name)
        # Page-Hinkley over the longer history locates when the error level changed.
        change_points = [c for c in self._change_points(now, params.backend) if c.ts >= ref_start]
        stored = self.store.list_drift_reports(since=ref_start, until=now + 1e-6, limit=20)
        if params.backend is not None:
            stored = [d for d in stored if d.backend in (None, params.backend)]
        severities += [d.severity for d in stored if d.ts >= cur_start]
        order = ["none", "low", "medium", "high", "critical"]
        worst = max(severities, key=order.index) if severities else "none"
        notes = []
        if not by_backend:
            notes.append("no resolved decisions in the windows: nothing to test")
        return m.DriftStatusOut(
            now=_iso(now),
            window=f"{_iso(cur_start)} to {_iso(now)}",
            reference=f"{_iso(ref_start)} to {_iso(cur_start)}",
            max_severity=worst,
            drifted_backends=drifted,
            live=live,
            change_points=change_points,
            stored_reports=[ex.drift_dict(d) for d in stored],
            method=(
                "per-tick mean absolute forecast error per backend; one-sided Welch t and "
                "Mann-Whitney U (current > reference), Benjamini-Hochberg within a backend; "
                "min 20 ticks per side; calibrated Page-Hinkley (mode up) for change points"
            ),
            notes=notes,
        )

    def _change_points(self, now: float, backend: str | None) -> list[m.ChangePoint]:
        rows = q.abs_errors_per_tick(self.store, now - 4 * 3600.0, now + 1e-6)
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            if backend is None or r["backend"] == backend:
                series[r["backend"]].append((r["ts"], r["mae"]))
        out: list[m.ChangePoint] = []
        for name in sorted(series):
            ts = np.array([t for t, _ in series[name]])
            x = np.array([v for _, v in series[name]])
            if x.size < 60:
                continue
            detector = PageHinkley.calibrated(mode="up", warmup=40, min_instances=40)
            for i in detector.detect(x):
                # Detection lags the change by tens of ticks: compare the level well before
                # the alarm with the level around it.
                before = x[max(0, i - 60) : max(0, i - 20)]
                after = x[max(0, i - 20) : i + 20]
                out.append(
                    m.ChangePoint(
                        backend=name,
                        at=_iso(float(ts[i])),
                        ts=float(ts[i]),
                        mae_before_ms=rnd(np.mean(before)) if before.size else None,
                        mae_after_ms=rnd(np.mean(after)),
                    )
                )
        out.sort(key=lambda c: c.ts)
        return out[-10:]

    def record_drift_reports(self, params: m.RecordDriftInput) -> m.WriteOut:
        status = self.drift_status(params)
        order = ["none", "low", "medium", "high", "critical"]
        floor = order.index(params.min_severity)
        now = self.now(params.at)
        reports = [
            StoredDriftReport(
                ts=now,
                kind="concept",
                test=f.test,
                severity=f.severity,  # type: ignore[arg-type]
                backend=f.backend,
                feature="abs_error",
                p_value=f.p_adjusted,
                n_reference=f.n_reference,
                n_current=f.n_current,
                detail={
                    "reference_mae_ms": f.reference_mae_ms,
                    "current_mae_ms": f.current_mae_ms,
                    "window": status.window,
                    "reference": status.reference,
                },
            )
            for f in status.live
            if f.status == "drift" and order.index(f.severity) >= floor
        ]
        ids = self.store.insert_drift_reports(reports) if reports else []
        return m.WriteOut(
            ok=True,
            message=f"stored {len(ids)} drift report(s) at or above {params.min_severity}",
            detail={"ids": ids, "max_severity": status.max_severity},
        )
