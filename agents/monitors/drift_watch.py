"""The drift monitor inside the loop: a calibrated one-sided Page-Hinkley detector on the
serving model's absolute errors, and a concept-drift test (Welch t and Mann-Whitney U, the
model's first errors after a burn-in against the last `current_window_s`) at every check. An
alarm or a test of at least high severity opens a drift episode (stored, announced, alerted)
that lasts until the model changes; the severity the retraining rule sees is the worse of the
latest test and the last alarm's shift (Cohen's bands)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agents.monitors.base import KIND, LoopBase, clock, jsonable, rounded
from context_api.store import DriftReport as StoredDriftReport
from tools.drift import EFFECT_BANDS, SEVERITY_ORDER, concept_drift
from tools.drift.page_hinkley import robust_sigma
from tools.series_stats import cusum_change_point


def _severity_max(*levels: str) -> str:
    return max(levels, key=SEVERITY_ORDER.index)


def _shift_severity(shift_sd: float) -> str:
    """Cohen's bands for a mean shift in reference standard deviations (as `tools.drift`)."""
    small, medium, large = EFFECT_BANDS["cohen_d"]
    if shift_sd < small:
        return "low"
    if shift_sd < medium:
        return "medium"
    if shift_sd < large:
        return "high"
    return "critical"


class DriftWatch(LoopBase):
    def _drift_check(self) -> None:
        """Concept drift test at every check; a Page-Hinkley alarm or a concept test of at least
        high severity opens a drift episode (stored, announced, alerted) that lasts until the
        model changes. The severity the retraining rule sees is the worse of the latest
        concept test and the last alarm's shift."""
        errs = self._errors
        c = self.config
        alarm, self._new_alarm = self._new_alarm, False
        if len(errs.abs_err) < c.reference_samples + c.min_concept_samples:
            return
        ref = errs.reference(c.reference_samples)
        ref_end = errs.ts[c.reference_samples - 1]
        cur = errs.window(max(self.now - c.current_window_s, ref_end + 1e-9), math.inf)
        report = concept_drift(ref, cur, alpha=c.drift_alpha, min_samples=c.min_concept_samples)
        ph = self._ph_finding(ref) if alarm else None
        if ph is not None:
            self._ph_severity = ph["severity"]
        severity = _severity_max(report.max_severity, self._ph_severity)
        if self._drift is None:
            if ph is None and SEVERITY_ORDER.index(severity) < SEVERITY_ORDER.index("high"):
                return
            self._drift = {
                "detected_at": self.now,
                "change_point": ph["change_point_ts"] if ph else None,
                "by": "page_hinkley" if ph else "concept_test",
                "severity": severity,
            }
            self._store_drift(report, ph)
            self._announce_drift(report, ph, severity)
            return
        if ph is not None and self._drift["change_point"] is None:
            self._drift["change_point"] = ph["change_point_ts"]
        if ph is not None or SEVERITY_ORDER.index(severity) > SEVERITY_ORDER.index(
            self._drift["severity"]
        ):
            self._store_drift(report, ph)
        self._drift["severity"] = severity

    def _ph_finding(self, ref: np.ndarray) -> dict[str, Any]:
        """What an alarm found: where the rise began (CUSUM on the same clipped values the
        detector saw), and how large it is (MAE since then against the reference, in the
        reference's standard deviations, banded as Cohen's d)."""
        errs = self._errors
        sigma = float(self._ph.sigma_ or robust_sigma(ref))
        cap = float(np.median(ref)) + self.config.ph_clip_sigmas * sigma
        ts = np.asarray(errs.ts)
        raw = np.asarray(errs.abs_err)
        start = self.config.reference_samples
        cp = cusum_change_point(
            ts[start:],
            np.minimum(raw[start:], cap),
            reference_mean=float(np.minimum(ref, cap).mean()),
            k=self.config.ph_delta_sigmas * sigma,
        )
        after = raw[ts >= cp] if cp is not None else raw[-50:]
        ref_sd = float(np.std(ref, ddof=1)) or sigma
        shift = (float(after.mean()) - float(ref.mean())) / ref_sd
        return {
            "test": "page_hinkley",
            "severity": _shift_severity(max(shift, 0.0)),
            "change_point_ts": cp,
            "shift_sd": shift,
            "sigma_ms": sigma,
            "threshold_ms": self._ph.threshold_,
            "reference_mae_ms": float(ref.mean()),
            "mae_since_change_ms": float(after.mean()),
            "n_since_change": int(after.size),
        }

    def _store_drift(self, report: Any, ph: dict[str, Any] | None) -> None:
        rows = [
            StoredDriftReport(
                ts=self.now,
                kind="concept",
                test=r.test,
                severity=r.severity,
                model_version=self.champion.version_id,
                feature="abs_error",
                statistic=r.statistic,
                p_value=r.p_adjusted,
                n_reference=r.n_reference,
                n_current=r.n_current,
                detail={
                    "p_raw": r.p_value,
                    "effect_size": r.effect_size,
                    "effect_measure": r.effect_measure,
                    "reference_mae_ms": r.reference_mean,
                    "current_mae_ms": r.current_mean,
                    "status": r.status,
                },
                run_id=self.run_id,
            )
            for r in report.results
        ]
        if ph is not None:
            rows.append(
                StoredDriftReport(
                    ts=self.now,
                    kind="concept",
                    test="page_hinkley",
                    severity=ph["severity"],
                    model_version=self.champion.version_id,
                    feature="abs_error",
                    statistic=ph["shift_sd"],
                    n_reference=self.config.reference_samples,
                    n_current=ph["n_since_change"],
                    detail={k: v for k, v in ph.items() if k not in ("test", "severity")},
                    run_id=self.run_id,
                )
            )
        self.store.insert_drift_reports(rows)
        self.stats["drift_reports"] += len(rows)

    def _announce_drift(self, report: Any, ph: dict[str, Any] | None, severity: str) -> None:
        tests = {r.test: r for r in report.results if r.status != "insufficient_data"}
        welch, mw = tests.get("welch_t"), tests.get("mann_whitney_u")
        parts = []
        if ph is not None:
            cp = ph["change_point_ts"]
            parts.append(
                "Page-Hinkley alarm on |error|"
                + (f", change point ~{clock(cp - self.start_ts)}" if cp is not None else "")
                + f", shift {ph['shift_sd']:+.2f} sd"
            )
        if welch is not None and mw is not None:
            parts.append(
                f"concept drift {report.max_severity} (MAE {welch.reference_mean:.0f} -> "
                f"{welch.current_mean:.0f} ms; Welch p={welch.p_adjusted:.2g}, "
                f"Mann-Whitney p={mw.p_adjusted:.2g})"
            )
        summary = f"drift detected ({severity}): " + "; ".join(parts)
        detail = {
            "severity": severity,
            "change_point_ts": ph["change_point_ts"] if ph else None,
            "page_hinkley": {k: jsonable(v) for k, v in ph.items()} if ph else None,
            "concept": {
                r.test: {
                    "p_adjusted": rounded(r.p_adjusted, 6),
                    "severity": r.severity,
                    "reference_mae_ms": rounded(r.reference_mean),
                    "current_mae_ms": rounded(r.current_mean),
                    "n_reference": r.n_reference,
                    "n_current": r.n_current,
                }
                for r in report.results
            },
        }
        self._note("drift_detected", summary, **detail)
        self._alert(
            "drift",
            f"{KIND} {self.champion.version_id}",
            severity if severity != "none" else "low",
            "Check the retraining decision; a challenger will be trained on data from after "
            "the change point and must win an experiment before it routes.",
            **{k: v for k, v in detail.items() if v is not None},
        )
