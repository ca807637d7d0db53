"""Recent alerts with occurrence counts and delivery state."""

from __future__ import annotations

from context_api import api_models as m
from context_api.agent_tools.base import (
    ToolBase,
    ToolInfo,
)
from context_api.timefmt import iso, parse_time


class AlertTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "recent_alerts",
            "Recent alerts (newest first) with severity, subject, evidence, recommended "
            "action, occurrences and delivery state.",
            m.AlertsInput,
            m.AlertsOut,
            "recent_alerts",
        ),
    )

    def recent_alerts(self, params: m.AlertsInput | None = None) -> m.AlertsOut:
        from context_api.alerting import recent_alerts

        params = params or m.AlertsInput()
        since = parse_time(params.since, self.now()) if params.since is not None else None
        views = recent_alerts(
            self.store,
            kind=params.kind,
            min_severity=params.min_severity,
            since=since,
            limit=params.limit,
        )
        return m.AlertsOut(
            count=len(views),
            alerts=[
                {
                    "alert_id": v.alert.alert_id,
                    "at": iso(v.alert.created_at),
                    "kind": v.alert.kind,
                    "subject": v.alert.subject,
                    "severity": v.alert.severity,
                    "evidence": v.alert.evidence,
                    "recommended_action": v.alert.recommended_action,
                    "occurrences": v.occurrences,
                    "delivery": v.delivery_state,
                }
                for v in views
            ],
        )
