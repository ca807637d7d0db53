"""The feedback learner inside the loop: error analysis of each window, the online residual
corrector (micro-batches, scored prequentially), and retraining when the retraining rule says so
(the forest refit on the window it names, registered as a new version, then put to an
experiment: it serves nothing until it wins and the change is approved)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from agents.monitors.base import HORIZON_S, KIND, LoopBase, clock, rounded
from context_api.model_store import register_forecaster
from tools.error_analysis.report import analyze_errors
from tools.forecaster import train
from tools.retrain_policy import RetrainDecision, RetrainInputs, decide_retrain

if TYPE_CHECKING:
    from agents.monitors.labels import _Pending


class Learner(LoopBase):
    def _online(self, u: _Pending, predicted: float, actual: float) -> None:
        """Prequential score, then micro-batch learning of the forest's residual."""
        if u.corrected_ms is not None:
            self._online_scores.append(
                (u.target_ts, abs(actual - predicted), abs(actual - u.corrected_ms))
            )
        self._online_buffer.append((u.features, actual, predicted))
        if len(self._online_buffer) >= self.config.online_batch:
            X = np.vstack([b[0] for b in self._online_buffer])
            y = [b[1] for b in self._online_buffer]
            base = [b[2] for b in self._online_buffer]
            self._corrector.learn_many(X, y, base)
            self._online_buffer = []

    def _analyse(self) -> None:
        since = self.now - self.config.analysis_every_s
        rows = [
            r
            for r in self.store.resolved_decisions(since=since - HORIZON_S, run_id=self.run_id)
            if r["predicted_latency_ms"] is not None and r["observed_at"] >= since
        ]
        if len(rows) < 10:
            return
        report = analyze_errors(
            [r["predicted_latency_ms"] for r in rows],
            [r["actual_latency_ms"] for r in rows],
            model_version=[r["model_version"] or "none" for r in rows],
            backend=[r["backend"] for r in rows],
            ts=[r["ts"] for r in rows],
            load=[self._rps_by_decision.get(r["decision_id"], (0.0, 0.0))[1] for r in rows],
            window_seconds=self.config.analysis_every_s,
        )
        self._rps_by_decision = {  # only the next window's decisions can still be analysed
            k: v for k, v in self._rps_by_decision.items() if v[0] >= self.now - HORIZON_S
        }
        overall = [m for m in report.metrics if m.backend is None and m.window_start is None]
        biased = [t for t in report.bias.tests if t.biased]
        entry = {
            "ts": self.now,
            "window_start_ts": since,
            "n": report.n_rows,
            "models": {
                m.model_version: {
                    "n": m.n,
                    "mae_ms": rounded(m.mae_ms),
                    "rmse_ms": rounded(m.rmse_ms),
                    "r2": rounded(m.r2, 3),
                    "mape_pct": rounded(m.mape_pct),
                    "bias_ms": rounded(m.mean_error_ms),
                }
                for m in overall
            },
            "biased_segments": [
                f"{t.model_version} {t.segment}={t.value} {t.direction} ({t.mean_error_ms:+.0f} ms)"
                for t in biased
            ],
        }
        self.analyses.append(entry)
        per_backend = [
            {
                "model_version": m.model_version,
                "backend": m.backend,
                "n": m.n,
                "mae_ms": rounded(m.mae_ms),
                "rmse_ms": rounded(m.rmse_ms),
                "r2": rounded(m.r2, 3),
                "mape_pct": rounded(m.mape_pct),
            }
            for m in report.metrics
            if m.backend is not None
        ]
        distributions = [
            {
                "model_version": d.model_version,
                "n": d.n,
                "percentiles_ms": d.percentiles_ms,
                "skew": rounded(d.skew, 3) if d.skew is not None else None,
                "excess_kurtosis": rounded(d.excess_kurtosis, 3)
                if d.excess_kurtosis is not None
                else None,
                "normality": d.normality.model_dump(),
            }
            for d in report.distributions
        ]
        self.store.record_event(
            "error_analysis",
            subject=KIND,
            detail={
                **entry,
                "per_backend": per_backend,
                "distributions": distributions,
                "skipped": len(report.skipped_metrics) + len(report.bias.skipped),
                "summary": report.summary,
            },
            ts=self.now,
            run_id=self.run_id,
        )
        if self._online_scores:
            sc = np.asarray(self._online_scores)
            recent = sc[sc[:, 0] >= since]
            if recent.size:
                item = {
                    "ts": self.now,
                    "n": int(recent.shape[0]),
                    "forest_mae_ms": rounded(float(recent[:, 1].mean())),
                    "corrected_mae_ms": rounded(float(recent[:, 2].mean())),
                    "model_version": self.champion.version_id,
                }
                self.online.append(item)
                self.store.record_event(
                    "online_learner", subject=KIND, detail=item, ts=self.now, run_id=self.run_id
                )

    def _retrain_inputs(self) -> RetrainInputs:
        c = self.config
        drift = self._drift or {}
        recent = self._errors.window(self.now - c.current_window_s, math.inf)
        report = self.champion.report
        cp = drift.get("change_point")
        return RetrainInputs(
            now_ts=self.now,
            drift_severity=drift.get("severity", "none"),
            drift_started_at=cp if cp is not None and cp <= self.now else None,
            recent_mae_ms=float(recent.mean()) if recent.size else None,
            recent_mae_samples=int(recent.size),
            holdout_mae_ms=report.forest.mae_ms if report is not None else None,
            new_samples_since_training=self._outcomes_since_training,
            seconds_since_training=max(0.0, self.now - self._last_training_end),
        )

    def _maybe_retrain(self) -> None:
        inputs = self._retrain_inputs()
        decision = decide_retrain(inputs, self.config.retrain)
        key = (decision.retrain, tuple(decision.triggers), tuple(decision.blockers))
        if decision.triggers and key != self._last_retrain_key:
            self._note(
                "retrain_decision",
                decision.summary,
                retrain=decision.retrain,
                triggers=list(decision.triggers),
                blockers=list(decision.blockers),
                mae_ratio=rounded(decision.mae_ratio, 3),
                window=decision.window.model_dump() if decision.window else None,
            )
        self._last_retrain_key = key
        if decision.retrain and decision.window is not None:
            self._retrain(decision)

    def _retrain(self, decision: RetrainDecision) -> None:
        c = self.config
        window = decision.window
        assert window is not None
        self.flush()
        points = self.store.list_telemetry(
            since=window.start_ts, until=window.end_ts + 1e-6, run_id=self.run_id
        )
        parent = self.champion.version_id
        try:
            model, report = train(
                points,
                n_estimators=c.n_estimators,
                max_depth=c.max_depth,
                seed=c.seed + self.stats["retrains"] + 1,
                holdout_fraction=c.train_holdout_fraction,
                calibration_fraction=c.train_calibration_fraction,
                parent_version=parent,
                n_jobs=1,
            )
        except ValueError as exc:
            self._last_training_end = self.now  # back off for a cooldown instead of retrying
            self._note("retrain_failed", f"retraining failed: {exc}", window=window.model_dump())
            return
        self.stats["retrains"] += 1
        self._last_training_end = self.now
        self._outcomes_since_training = 0
        self.models[model.version_id] = model
        register_forecaster(
            self.store,
            model,
            artifact_dir=self.artifact_dir,
            at=self.now,
            parent_id=parent,
            note=f"retrained by the feedback loop: {', '.join(decision.triggers)}",
        )
        self._note(
            "challenger_trained",
            f"challenger {model.version_id} trained on {len(points)} points "
            f"({clock(window.start_ts - self.start_ts)}-{clock(window.end_ts - self.start_ts)}"
            f"{', from the change point' if window.starts_at_drift else ''}); hold-out MAE "
            f"{report.forest.mae_ms:.1f} ms vs persistence {report.persistence.mae_ms:.1f} ms",
            version=model.version_id,
            parent=parent,
            trained_from_ts=model.trained_from_ts,
            trained_to_ts=model.trained_to_ts,
            window=window.model_dump(),
            holdout={
                "n": report.n_holdout,
                "mae_ms": rounded(report.forest.mae_ms),
                "rmse_ms": rounded(report.forest.rmse_ms),
                "r2": rounded(report.forest.r2, 3),
                "mape_pct": rounded(report.forest.mape_pct),
                "persistence_mae_ms": rounded(report.persistence.mae_ms),
                "interval_coverage": rounded(report.interval.holdout_coverage, 3),
            },
            fit_seconds=rounded(report.fit_seconds, 3),
        )
        self._start_experiment(model, purpose="challenge", mode=c.mode)
