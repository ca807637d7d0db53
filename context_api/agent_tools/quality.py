"""Service quality over time: the SLA-violation timeline with its likely causes, and anomalies."""

from __future__ import annotations

import math
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
from context_api.timefmt import iso, parse_time, rnd
from context_api.timefmt import iso_or_unknown as _iso


class QualityTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "quality_timeline",
            "Service quality over a window: SLA violations per time bucket, when quality "
            "degraded, which backends carried the violations, and in time order the chaos "
            "or incident events, drift, anomalies, alerts and model version changes, with "
            "the events that most likely explain the degradation.",
            m.TimelineInput,
            m.QualityTimelineOut,
            "quality_timeline",
        ),
        ToolInfo(
            "anomalies",
            "Anomalies the detector stored since a time, with per-backend counts and "
            "the highest severity (0-1).",
            m.AnomaliesInput,
            m.AnomaliesOut,
            "anomalies",
        ),
    )

    def quality_timeline(self, params: m.TimelineInput | None = None) -> m.QualityTimelineOut:
        params = params or m.TimelineInput()
        since, until = self._window(params.since, params.until, 60.0, params.around)
        bucket_s = params.bucket_minutes * 60.0
        raw = {r["k"]: r for r in q.sla_buckets(self.store, since, until, bucket_s, self.sla_ms)}
        span = until - since
        ref_rows = q.sla_buckets(self.store, since - span, since, span + 1.0, self.sla_ms)
        ref_n = sum(r["n"] for r in ref_rows)
        ref_bad = sum(r["over_sla"] + r["no_outcome"] for r in ref_rows)
        buckets: list[m.Bucket] = []
        for k in range(math.ceil(span / bucket_s)):
            r = raw.get(
                k, {"n": 0, "over_sla": 0, "no_outcome": 0, "ambiguous": 0, "agent_decided": 0}
            )
            bad = r["over_sla"] + r["no_outcome"]
            buckets.append(
                m.Bucket(
                    start=_iso(since + k * bucket_s),
                    start_ts=since + k * bucket_s,
                    requests=r["n"],
                    violations=bad,
                    violation_pct=round(100.0 * bad / r["n"], 2) if r["n"] else None,
                    no_outcome=r["no_outcome"],
                    ambiguous=r["ambiguous"] or 0,
                    escalated_to_agent=r["agent_decided"] or 0,
                    degraded=False,
                )
            )
        notes: list[str] = []
        first = next((i for i, b in enumerate(buckets) if b.requests), None)
        if first:
            notes.append(f"no decisions are stored before {buckets[first].start}")
            buckets = buckets[first:]
        pcts = [
            b.violation_pct for b in buckets if b.violation_pct is not None and b.requests >= 20
        ]
        quiet = float(np.percentile(pcts, 25)) if pcts else None
        if ref_n >= 100 and (quiet is None or 100.0 * ref_bad / ref_n <= quiet):
            ref_pct = 100.0 * ref_bad / ref_n
            reference = (
                f"the preceding {span / 60:.0f} minutes ({_iso(since - span)} to {_iso(since)})"
            )
        elif ref_n >= 100 and quiet is not None:
            # The preceding window had its own trouble: the window's quiet buckets are the
            # better picture of normal.
            ref_pct = quiet
            reference = (
                "the quietest quarter of the window's buckets (the preceding window was worse, "
                f"{100.0 * ref_bad / ref_n:.1f}%)"
            )
        elif pcts:
            ref_pct = float(np.percentile(pcts, 25))
            reference = "the quietest quarter of the window's buckets (no earlier data)"
        else:
            ref_pct = None
            reference = "none (no requests in or before the window)"
        threshold = None if ref_pct is None else max(2.0 * ref_pct, ref_pct + 5.0)
        for b in buckets:
            b.degraded = bool(
                threshold is not None
                and b.violation_pct is not None
                and b.requests >= 20
                and b.violation_pct >= threshold
            )
        degraded = [b for b in buckets if b.degraded]
        peak = max(
            (b for b in buckets if b.violation_pct is not None and b.requests >= 20),
            key=lambda b: b.violation_pct or 0.0,
            default=None,
        )
        d_from = degraded[0].start_ts if degraded else None
        d_until = degraded[-1].start_ts + bucket_s if degraded else None
        if not degraded:
            notes.append(
                "no bucket's SLA violations rose above twice the reference (or reference + 5 "
                "points): quality did not drop measurably in this window"
            )

        # Which backends carried the violations (in the degraded period, else the whole window).
        a, b_ = (d_from, d_until) if d_from is not None else (since, until)
        impact_rows = q.sla_by_backend(self.store, a, b_, self.sla_ms)
        total_bad = sum(r["over_sla"] + r["no_outcome"] for r in impact_rows) or 1
        tele_during = q.telemetry_summary(self.store, a, b_)
        tele_before = q.telemetry_summary(self.store, a - max(b_ - a, 600.0), a)
        impacts = []
        for r in sorted(impact_rows, key=lambda r: -(r["over_sla"] + r["no_outcome"])):
            bad = r["over_sla"] + r["no_outcome"]
            name = r["backend"]
            impacts.append(
                m.BackendImpact(
                    backend=name,
                    violations=bad,
                    share_of_violations=round(bad / total_bad, 3),
                    violation_pct=round(100.0 * bad / r["n"], 2) if r["n"] else None,
                    p95_ms_before=rnd(tele_before.get(name, {}).get("p95")),
                    p95_ms_during=rnd(tele_during.get(name, {}).get("p95")),
                    error_rate_during=rnd(tele_during.get(name, {}).get("err"), 4),
                )
            )

        events = self._timeline_events(since, until)
        causes: list[m.TimelineEvent] = []
        if d_from is not None and d_until is not None:
            lead = 15 * 60.0
            for e in events:
                end = parse_time(e.end_at, e.ts) if e.end_at else e.ts
                if e.ts <= d_until and (end or e.ts) >= d_from - lead and e.kind in ex.CAUSE_RANK:
                    causes.append(e)
            causes.sort(key=lambda e: (ex.CAUSE_RANK[e.kind], abs(e.ts - d_from)))
        omitted = max(0, len(events) - 60)
        return m.QualityTimelineOut(
            since=_iso(since),
            until=_iso(until),
            bucket_minutes=params.bucket_minutes,
            reference_violation_pct=rnd(ref_pct, 2),
            reference=reference,
            peak=peak,
            degraded_from=iso(d_from),
            degraded_until=iso(d_until),
            buckets=buckets,
            backends=impacts,
            events=events[:60],
            likely_causes=causes[:6],
            events_omitted=omitted,
            notes=notes,
        )

    def _timeline_events(self, since: float, until: float) -> list[m.TimelineEvent]:
        out: list[m.TimelineEvent] = []
        for e in self.store.list_events(since=since - 6 * 3600.0, until=until):
            end = ex.event_end(e)
            if end < since and e.ts < since:
                continue
            if e.ts < since and e.kind != "chaos":
                continue
            out.append(
                m.TimelineEvent(
                    at=_iso(e.ts),
                    ts=e.ts,
                    kind=e.kind,
                    subject=e.subject,
                    summary=ex.event_summary(e),
                    end_at=iso(end) if end != e.ts else None,
                )
            )
        for d in self.store.list_drift_reports(
            since=since, until=until, min_severity="medium", limit=50
        ):
            out.append(
                m.TimelineEvent(
                    at=_iso(d.ts),
                    ts=d.ts,
                    kind="drift",
                    subject=d.backend or d.model_version,
                    summary=(
                        f"{d.severity} {d.kind} drift ({d.test}"
                        f"{f', p={d.p_value:.2g}' if d.p_value is not None else ''})"
                        f"{f' on {d.backend}' if d.backend else ''}"
                        f"{f' ({d.feature})' if d.feature else ''}"
                    ),
                )
            )
        # Anomalies collapse into episodes per backend (gaps under 2 minutes join).
        found = sorted(
            self.store.list_anomalies(since=since, until=until, limit=5000), key=lambda a: a.ts
        )
        episodes: dict[str, list[list[Any]]] = defaultdict(list)
        for a in found:
            eps = episodes[a.backend]
            if eps and a.ts - eps[-1][1] <= 120.0:
                eps[-1][1] = a.ts
                eps[-1][2] += 1
                eps[-1][3] = max(eps[-1][3], a.severity)
            else:
                eps.append([a.ts, a.ts, 1, a.severity])
        for backend, eps in episodes.items():
            for start, end, n, sev in eps:
                out.append(
                    m.TimelineEvent(
                        at=_iso(start),
                        ts=start,
                        kind="anomaly",
                        subject=backend,
                        summary=(
                            f"{n} anomal{'y' if n == 1 else 'ies'} on {backend}, "
                            f"max severity {sev:.2f}"
                        ),
                        end_at=iso(end) if end != start else None,
                    )
                )
        for a in self.store.list_alerts(since=since, include_suppressed=False, limit=100):
            if a.created_at >= until:
                continue
            out.append(
                m.TimelineEvent(
                    at=_iso(a.created_at),
                    ts=a.created_at,
                    kind="alert",
                    subject=a.subject,
                    summary=(
                        f"{a.severity} {a.kind} alert on {a.subject}: "
                        f"{a.recommended_action or 'no action given'}"
                    ),
                )
            )
        out.sort(key=lambda e: (e.ts, e.kind))
        return out

    def anomalies(self, params: m.AnomaliesInput | None = None) -> m.AnomaliesOut:
        params = params or m.AnomaliesInput()
        self._check_backend(params.backend)
        since, until = self._window(params.since, params.until, 60.0)
        found = self.store.list_anomalies(
            since=since,
            until=until + 1e-6,
            backend=params.backend,
            min_severity=params.min_severity or None,
            limit=params.limit,
        )
        by: dict[str, dict[str, Any]] = {}
        for a in found:
            e = by.setdefault(
                a.backend, {"count": 0, "max_severity": 0.0, "first": a.ts, "last": a.ts}
            )
            e["count"] += 1
            e["max_severity"] = max(e["max_severity"], round(a.severity, 3))
            e["first"] = min(e["first"], a.ts)
            e["last"] = max(e["last"], a.ts)
        for e in by.values():
            e["first"], e["last"] = iso(e["first"]), iso(e["last"])
        return m.AnomaliesOut(
            since=_iso(since),
            until=_iso(until),
            count=len(found),
            by_backend=by,
            anomalies=[
                {
                    "at": iso(a.ts),
                    "backend": a.backend,
                    "severity": round(a.severity, 3),
                    "score": round(a.score, 4),
                    "detector": a.detector,
                    "features": a.features,
                }
                for a in found
            ],
        )
