"""The experiment monitor inside the loop: champion against challenger in shadow mode (both
predict, the champion routes) or split mode (`assign_arm` on the request id picks the model whose
forecasts route a request), judged at every check with alpha spending on 60 s blocks of error
(batch means), with sample-ratio checks; a verdict proposes the change it calls for."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from agents.monitors.base import LoopBase, Mode, rounded
from agents.router import Router
from context_api.fleet_state import FleetState
from context_api.model_store import register_forecaster
from context_api.store import ExperimentResult
from tools.experiment_stats import (
    ExperimentVerdict,
    evaluate_shadow,
    evaluate_split,
    srm_check,
)
from tools.forecaster import Forecaster
from tools.series_stats import block_means, effective_sample_size


@dataclass
class _Experiment:
    experiment_id: str
    mode: Mode
    champion: Forecaster
    challenger: Forecaster
    started_at: float
    purpose: Literal["challenge", "watch"]
    spent: float = 0.0
    looks: int = 0
    routed: dict[str, int] = field(default_factory=lambda: {"champion": 0, "challenger": 0})
    router: Router | None = None
    verdict: ExperimentVerdict | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    last_look_ts: float = -math.inf

    @property
    def label(self) -> str:
        """Short name for timelines: 'exp2' of '<run id>:exp2'."""
        return self.experiment_id.rsplit(":", 1)[-1]


class ExperimentRunner(LoopBase):
    def _start_experiment(
        self, challenger: Forecaster, *, purpose: Literal["challenge", "watch"], mode: Mode
    ) -> None:
        self._n_experiments += 1
        self.stats["experiments"] += 1
        eid = f"{self.run_id or 'loop'}:exp{self._n_experiments}"
        cfg = self.config.experiment
        champion = self.champion
        name = "champion vs challenger" if purpose == "challenge" else "post-promotion watch"
        self.store.create_experiment(
            eid,
            champion.version_id,
            challenger.version_id,
            mode,
            name=name,
            started_at=self.now,
            run_id=self.run_id,
            params={
                **cfg.model_dump(),
                "purpose": purpose,
                "unit": "sampled request; outcome = its backend's measured p95 one horizon later",
                "samples_per_tick": self.config.samples_per_tick,
            },
        )
        exp = _Experiment(eid, mode, champion, challenger, self.now, purpose)
        if mode == "split":
            fleet = FleetState(self.backends, challenger)
            router = self._router(f"x{self._n_experiments}", fleet)
            router.warm(self._recent_points)  # the arm's feature windows and forecast prior
            exp.router = router
        self._experiment = exp
        what = (
            "both predict, the champion routes"
            if mode == "shadow"
            else f"request-id hash sends {cfg.split:.0%} of requests to the challenger"
        )
        self._note(
            "experiment_started",
            f"{exp.label} started ({name}, {mode} mode: {what}): {champion.version_id} vs "
            f"{challenger.version_id}",
            experiment_id=eid,
            mode=mode,
            purpose=purpose,
            champion=champion.version_id,
            challenger=challenger.version_id,
        )

    def _arm_errors(self, exp: _Experiment) -> dict[str, np.ndarray]:
        """Each arm's absolute errors per sampled request (time order) and, when the
        experiment's unit is a time block, per block (the mean error of the block's requests).

        Shadow mode keeps only requests both models predicted, so the arrays pair up."""
        rows = self.store.experiment_errors(exp.experiment_id)
        if exp.mode == "split":
            arms = {
                arm: (
                    np.array([r["decision_ts"] for r in rows if r["arm"] == arm]),
                    np.array([r["abs_error"] for r in rows if r["arm"] == arm]),
                )
                for arm in ("champion", "challenger")
            }
        else:
            pairs: dict[str, dict[str, float]] = {}
            when: dict[str, float] = {}
            for r in rows:
                pairs.setdefault(r["decision_id"], {})[r["arm"]] = r["abs_error"]
                when[r["decision_id"]] = r["decision_ts"]
            both = [(when[d], p) for d, p in pairs.items() if len(p) == 2]
            t = np.array([w for w, _ in both])
            arms = {
                arm: (t, np.array([p[arm] for _, p in both])) for arm in ("champion", "challenger")
            }
        out = {f"{arm}_requests": e for arm, (_, e) in arms.items()}
        block = self.config.experiment_block_s
        for arm, (t, e) in arms.items():
            out[arm] = e if block is None else block_means(t, e, exp.started_at, block)
        return out

    def _look(self) -> None:
        exp = self._experiment
        assert exp is not None
        cfg = self.config.experiment
        errs = self._arm_errors(exp)
        a, b = errs["champion"], errs["challenger"]
        ra, rb = errs["champion_requests"], errs["challenger_requests"]
        logged = routed = None
        if exp.mode == "split":
            verdict = evaluate_split(a, b, cfg, previous_information_fraction=exp.spent)
            routed = srm_check(exp.routed["champion"], exp.routed["challenger"], cfg.split)
            logged = srm_check(ra.size, rb.size, cfg.split, cfg.srm_alpha)
            rho_a, neff_a = effective_sample_size(a)
            rho_b, neff_b = effective_sample_size(b)
            rho1, n_eff = max(rho_a, rho_b), min(neff_a, neff_b)
        else:
            verdict = evaluate_shadow(a, b, cfg, previous_information_fraction=exp.spent)
            rho1, n_eff = effective_sample_size(b - a)
        exp.looks += 1
        exp.last_look_ts = self.now
        exp.spent = verdict.spent_through_fraction
        exp.verdict = verdict
        unit = (
            "request"
            if self.config.experiment_block_s is None
            else f"{self.config.experiment_block_s:g} s block"
        )
        detail = {
            "look": exp.looks,
            "state": verdict.state,
            "summary": verdict.summary,
            "unit": unit,
            "requests": {"champion": int(ra.size), "challenger": int(rb.size)},
            "request_mae_ms": {
                "champion": rounded(float(ra.mean())) if ra.size else None,
                "challenger": rounded(float(rb.mean())) if rb.size else None,
            },
            "alpha_spent_at_look": verdict.alpha_spent_at_look,
            "alpha_spent_total": verdict.alpha_spent_total,
            "information_fraction": verdict.information_fraction,
            "effect_size": verdict.effect_size,
            "test": verdict.test,
            "lag1_autocorrelation": rounded(rho1, 3),
            "effective_samples": rounded(n_eff, 1),
            "routed_requests": dict(exp.routed) if exp.mode == "split" else None,
            "routed_srm": routed.model_dump() if routed is not None else None,
            "logged_srm": logged.model_dump() if logged is not None else None,
        }
        exp.detail = detail
        self.store.record_experiment_result(
            ExperimentResult.from_verdict(
                exp.experiment_id,
                self.now,
                verdict,
                detail,
                srm_p_value=routed.p_value if routed is not None else None,
            )
        )
        for what, check in (("routed traffic", routed), ("sampled requests", logged)):
            if check is not None and check.detected:
                self._end_experiment(
                    "aborted", f"sample ratio mismatch in the {what}: {check.summary}", None
                )
                return
        if verdict.recommendation == "continue":
            return
        self._conclude(exp, verdict)

    def _conclude(self, exp: _Experiment, v: ExperimentVerdict) -> None:
        ci = (
            f"{v.ci_level:.0%} CI [{v.ci_low_ms:+.1f}, {v.ci_high_ms:+.1f}] ms"
            if v.ci_low_ms is not None and v.ci_high_ms is not None
            else "no CI"
        )
        names = (
            ("challenger", "champion")
            if exp.purpose == "challenge"
            else ("previous model", "promoted model")
        )
        figures = (
            f"MAE {names[0]} {v.mae_challenger_ms:.1f} vs {names[1]} {v.mae_champion_ms:.1f} ms,"
            f" {ci}, p={v.p_value:.2g} (allowed {v.alpha_spent_at_look:.2g} at look "
            f"{exp.looks}), n={v.n_champion}/{v.n_challenger}"
            if v.p_value is not None
            and v.mae_challenger_ms is not None
            and v.mae_champion_ms is not None
            else v.summary
        )
        winner = {
            "challenger_wins": exp.challenger.version_id,
            "champion_wins": exp.champion.version_id,
        }.get(v.state)
        status: Literal["concluded", "aborted"] = (
            "aborted" if v.state == "srm_failed" else "concluded"
        )
        said = v.state
        if exp.purpose == "watch":
            said = {
                "challenger_wins": "previous model better",
                "champion_wins": "promoted model better",
            }.get(v.state, v.state)
        self._end_experiment(status, f"{said}: {figures}", winner)
        if exp.purpose == "challenge":
            if v.state == "challenger_wins":
                self._promote(exp, v)
            else:
                self._note(
                    "challenger_withdrawn",
                    f"challenger {exp.challenger.version_id} withdrawn ({v.state}); "
                    f"{exp.champion.version_id} stays active",
                    version=exp.challenger.version_id,
                    state=v.state,
                )
        elif v.state == "challenger_wins":  # the watch: the previous champion is better
            self._rollback(exp, v)
        else:
            self._note(
                "promotion_confirmed",
                f"post-promotion watch: {exp.champion.version_id} holds ({said}); "
                f"{exp.challenger.version_id} stays retired",
                state=v.state,
            )

    def _end_experiment(
        self,
        status: Literal["concluded", "aborted"],
        verdict: str,
        winner: str | None,
        *,
        alert: bool = True,
    ) -> None:
        exp = self._experiment
        assert exp is not None
        self.store.conclude_experiment(
            exp.experiment_id, verdict=verdict, winner_id=winner, status=status, ended_at=self.now
        )
        self._experiment = None
        v = exp.verdict
        detail = {
            "experiment_id": exp.experiment_id,
            "purpose": exp.purpose,
            "mode": exp.mode,
            "status": status,
            "winner": winner,
            "looks": exp.looks,
            "verdict": v.model_dump(mode="json") if v is not None else None,
            "look_detail": exp.detail,
            "started_at": exp.started_at,
            "champion": exp.champion.version_id,
            "challenger": exp.challenger.version_id,
        }
        self._note(
            "experiment_verdict",
            f"{exp.label} {status}: {verdict}",
            store_event=False,
            **detail,
        )
        if not alert:
            return
        self._alert(
            "experiment_verdict",
            exp.experiment_id,
            "info" if status == "concluded" else "medium",
            "Promote the winner; keep the champion when there is no winner."
            if exp.purpose == "challenge"
            else "Nothing to do unless the watch recommends a rollback.",
            status=status,
            winner=winner,
            verdict=verdict,
            looks=exp.looks,
        )

    def challenge(self, challenger: Forecaster, *, mode: Mode | None = None) -> str:
        """Start a champion-vs-challenger experiment with a model trained elsewhere (the loop
        starts its own after a retrain). Registers the model if the store does not know it.
        Returns the experiment id; ValueError while another experiment runs."""
        if self._experiment is not None:
            raise ValueError(f"experiment {self._experiment.experiment_id} is still running")
        if challenger.version_id == self.champion.version_id:
            raise ValueError("the challenger is the champion")
        self.models[challenger.version_id] = challenger
        register_forecaster(
            self.store,
            challenger,
            artifact_dir=self.artifact_dir,
            at=self.now,
            parent_id=challenger.parent_version
            if challenger.parent_version and self.store.get_model_version(challenger.parent_version)
            else None,
            note="challenger submitted to the feedback loop",
        )
        self._start_experiment(challenger, purpose="challenge", mode=mode or self.config.mode)
        assert self._experiment is not None
        return self._experiment.experiment_id
