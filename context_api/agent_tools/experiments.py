"""Champion-vs-challenger experiments: stored looks and a fresh evaluation of running ones."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from context_api import api_models as m
from context_api.agent_tools.base import (
    ToolBase,
    ToolInfo,
)
from context_api.timefmt import ToolError, iso, rnd
from context_api.timefmt import iso_or_unknown as _iso


class ExperimentTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "experiments",
            "Champion-vs-challenger experiments: status, a fresh evaluation of running "
            "ones (sample-ratio mismatch, significance with alpha spending, MAE of each "
            "arm, recommendation promote/keep/rollback/continue), stored verdicts.",
            m.ExperimentsInput,
            m.ExperimentsOut,
            "experiments",
        ),
    )

    def experiments(self, params: m.ExperimentsInput | None = None) -> m.ExperimentsOut:
        params = params or m.ExperimentsInput()
        if params.experiment_id is not None:
            one = self.store.get_experiment(params.experiment_id)
            if one is None:
                raise ToolError(f"unknown experiment {params.experiment_id!r}")
            found = [one]
        else:
            found = self.store.list_experiments(params.status)
        out = []
        for e in found:
            results = self.store.list_experiment_results(e.experiment_id)
            last = results[-1] if results else None
            live = self._evaluate_experiment(e, last) if e.status == "running" else None
            out.append(
                m.ExperimentOut(
                    experiment_id=e.experiment_id,
                    name=e.name,
                    mode=e.mode,
                    status=e.status,
                    champion_id=e.champion_id,
                    challenger_id=e.challenger_id,
                    started_at=_iso(e.started_at),
                    ended_at=iso(e.ended_at),
                    verdict=e.verdict,
                    winner_id=e.winner_id,
                    live=live,
                    last_result=None
                    if last is None
                    else {
                        "at": iso(last.ts),
                        "verdict": last.verdict,
                        "n_champion": last.n_champion,
                        "n_challenger": last.n_challenger,
                        "champion_mae_ms": rnd(last.champion_mae),
                        "challenger_mae_ms": rnd(last.challenger_mae),
                        "p_value": last.p_value,
                        "srm_p_value": last.srm_p_value,
                    },
                )
            )
        notes = [] if out else ["no experiments are stored"]
        return m.ExperimentsOut(experiments=out, notes=notes)

    def _evaluate_experiment(self, e: Any, last: Any) -> dict[str, Any]:
        from tools.experiment_stats import ExperimentConfig, evaluate_shadow, evaluate_split

        allowed = set(ExperimentConfig.model_fields)
        cfg = ExperimentConfig(**{k: v for k, v in e.params.items() if k in allowed})
        rows = self.store.experiment_errors(e.experiment_id)
        prev = 0.0
        if last is not None:
            prev = float(last.detail.get("spent_through_fraction", 0.0) or 0.0)
        if e.mode == "shadow":
            pairs: dict[str, dict[str, float]] = defaultdict(dict)
            for r in rows:
                pairs[r["decision_id"]][r["arm"]] = r["abs_error"]
            both = [p for p in pairs.values() if "champion" in p and "challenger" in p]
            champ = [p["champion"] for p in both]
            chall = [p["challenger"] for p in both]
            verdict = evaluate_shadow(champ, chall, cfg, previous_information_fraction=prev)
        else:
            champ = [r["abs_error"] for r in rows if r["arm"] == "champion"]
            chall = [r["abs_error"] for r in rows if r["arm"] == "challenger"]
            verdict = evaluate_split(champ, chall, cfg, previous_information_fraction=prev)
        v = verdict.model_dump(mode="json")
        keep = (
            "state",
            "recommendation",
            "test",
            "p_value",
            "alpha_spent_at_look",
            "information_fraction",
            "n_champion",
            "n_challenger",
            "min_samples_per_arm",
            "mae_champion_ms",
            "mae_challenger_ms",
            "mae_difference_ms",
            "relative_change",
            "ci_low_ms",
            "ci_high_ms",
            "ci_level",
            "summary",
        )
        out = {k: v.get(k) for k in keep}
        if verdict.srm is not None:
            out["srm"] = verdict.srm.model_dump(mode="json")
        return out
