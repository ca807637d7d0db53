"""Champion against challenger: is the new model really better, and can we stop looking?

Two designs, one verdict (`ExperimentVerdict`):

* **Split mode** (`evaluate_split`): a stable hash of the request id sends a share ``split`` of the
  requests to the challenger (`assign_arm`), the rest to the champion; each request is scored by one
  model only. The arms are independent samples of absolute errors, compared with **Welch's t-test**
  (unequal variances: the better model usually also has the smaller spread). Before anything else
  the arm sizes are checked against the intended split (**sample-ratio mismatch**: chi-squared
  goodness of fit, flagged at p < 0.001 as is customary; a mismatch means the assignment or the
  logging is broken, and no comparison of the arms can be trusted).
* **Shadow mode** (`evaluate_shadow`): both models predict every request, the champion routes. The
  errors are *paired* (same request, same conditions), so the test is on the per-request
  difference ``|e_challenger| - |e_champion|``: a **paired t-test** by default, which tests the mean
  difference, i.e. exactly the MAE difference, and is valid by the CLT at the minimum sample size;
  or the **Wilcoxon signed-rank test** (``shadow_test="wilcoxon"``), robust to heavy-tailed
  differences, which tests a location shift of the differences (the pseudo-median, not the mean),
  so choose it when a few huge errors would otherwise dominate. Pairing removes the
  request-to-request variance, which makes shadow mode far more sensitive than split mode at the
  same sample size. No SRM check: both arms see every request by construction.

Common to both:

* the effect is ``MAE_challenger - MAE_champion`` (negative: the challenger is better), with a
  seeded **bootstrap confidence interval** (BCa by default, percentile on request; resampling each
  arm independently in split mode, pairs in shadow mode) at the experiment's confidence level.
  Above ``bootstrap_max_rows`` rows in an arm (20,000 by default) the interval is the t interval
  instead: the bootstrap costs O(rows x resamples), seconds at that size, and a mean's bootstrap
  distribution is normal there to within its Monte Carlo error;
* a **minimum sample per arm** before any test is run;
* **no early stopping without correction**: every look spends alpha according to a
  Lan-DeMets spending function of the information fraction ``t = n / planned_samples_per_arm``
  (O'Brien-Fleming-type by default, ``2 - 2 Φ(z_{1-α/2} / √t)``: almost nothing early, nearly all
  of alpha at the planned horizon; or Pocock-type; or ``fixed_horizon``: one test at t >= 1). A look
  rejects when its p-value is below the alpha spent *at this look*, ``α(t) - α(t_prev)``. Using the
  increment as the nominal level is conservative (a union bound over the looks, without the
  correlation between them that exact group-sequential boundaries exploit), so the overall false
  positive rate stays at most α however many looks are taken;
* a **winner only above the set confidence**: significant at this look's alpha *and* a bootstrap
  interval that excludes 0, and (optionally) an effect of at least ``min_effect_ms``.

The caller keeps one number between looks: pass the verdict's ``spent_through_fraction`` as the
next look's ``previous_information_fraction``. Looks before the minimum sample, or with an SRM
failure, spend nothing.

Pure: no I/O; bootstrap resampling is seeded.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

Arm = Literal["champion", "challenger"]
Spending = Literal["obrien_fleming", "pocock", "fixed_horizon"]
State = Literal["collecting", "srm_failed", "no_difference", "challenger_wins", "champion_wins"]
Recommendation = Literal["promote", "keep", "rollback", "continue"]

RECOMMENDATION: dict[str, Recommendation] = {
    "collecting": "continue",
    "srm_failed": "keep",
    "no_difference": "keep",
    "challenger_wins": "promote",
    "champion_wins": "rollback",
}
"""promote: make the challenger the champion. keep: the champion stays, end the experiment.
rollback: the challenger is worse, withdraw it (revert its traffic to the champion).
continue: keep collecting samples."""

_CHUNK_ELEMENTS = 2_000_000  # bootstrap resampling memory bound (elements per chunk)


# --------------------------------------------------------------------------------------------
# Assignment
# --------------------------------------------------------------------------------------------


def hash_unit(request_id: str, salt: str = "") -> float:
    """A stable pseudo-uniform number in [0, 1) for a request id: blake2b of salt and id.

    Stable across processes and Python versions (unlike ``hash()``), and a different ``salt`` per
    experiment gives an independent assignment, so one experiment's arms do not line up with the
    previous one's.
    """
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("request_id must be a non-empty string")
    salt_bytes = salt.encode("utf-8")
    # Length-prefixed, so ("ab", "c") and ("a", "bc") hash differently.
    payload = len(salt_bytes).to_bytes(4, "big") + salt_bytes + request_id.encode("utf-8")
    digest = hashlib.blake2b(payload, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign_arm(request_id: str, split: float = 0.5, salt: str = "") -> Arm:
    """Split mode's arm for a request: the challenger with probability ``split``."""
    if not 0.0 <= split <= 1.0:
        raise ValueError("split must be in [0, 1]")
    return "challenger" if hash_unit(request_id, salt) < split else "champion"


# --------------------------------------------------------------------------------------------
# Alpha spending
# --------------------------------------------------------------------------------------------


def alpha_spent(t: float, alpha: float, spending: Spending = "obrien_fleming") -> float:
    """Cumulative two-sided alpha spent by information fraction ``t`` (Lan-DeMets).

    O'Brien-Fleming-type: ``2 - 2 Φ(z_{1-α/2} / √t)``; Pocock-type: ``α ln(1 + (e - 1) t)``;
    fixed horizon: 0 before t = 1, α from t = 1. All reach α exactly at t = 1.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if not math.isfinite(t) or t < 0:
        raise ValueError("information fraction must be finite and >= 0")
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return alpha
    if spending == "obrien_fleming":
        z = stats.norm.isf(alpha / 2.0)
        return float(min(alpha, 2.0 * stats.norm.sf(z / math.sqrt(t))))
    if spending == "pocock":
        return float(alpha * math.log1p((math.e - 1.0) * t))
    if spending == "fixed_horizon":
        return 0.0
    raise ValueError(f"unknown spending function {spending!r}")


def alpha_at_look(
    t: float, t_previous: float, alpha: float, spending: Spending = "obrien_fleming"
) -> float:
    """The alpha this look may spend: ``α(t) - α(t_previous)`` (0 if no new information)."""
    if t_previous < 0:
        raise ValueError("previous information fraction must be >= 0")
    return max(0.0, alpha_spent(t, alpha, spending) - alpha_spent(t_previous, alpha, spending))


# --------------------------------------------------------------------------------------------
# Sample ratio mismatch
# --------------------------------------------------------------------------------------------


class SRMCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    test: str = "chi-squared goodness of fit of arm sizes against the intended split"
    n_champion: int
    n_challenger: int
    expected_challenger_share: float
    observed_challenger_share: float | None
    chi2: float | None
    p_value: float | None
    alpha: float
    detected: bool
    summary: str


def srm_check(n_champion: int, n_challenger: int, split: float, alpha: float = 0.001) -> SRMCheck:
    """Sample-ratio-mismatch check. Not run while an expected count is below 5 (chi-squared's rule
    of thumb); reported with ``p_value`` None then."""
    if n_champion < 0 or n_challenger < 0:
        raise ValueError("arm sizes must be >= 0")
    if not 0.0 < split < 1.0:
        raise ValueError("split must be in (0, 1) for a sample-ratio check")
    total = n_champion + n_challenger
    expected = np.array([total * (1.0 - split), total * split])
    observed_share = n_challenger / total if total else None
    if expected.min() < 5.0:
        return SRMCheck(
            n_champion=n_champion,
            n_challenger=n_challenger,
            expected_challenger_share=split,
            observed_challenger_share=observed_share,
            chi2=None,
            p_value=None,
            alpha=alpha,
            detected=False,
            summary=f"Too few requests ({total}) for a sample-ratio check.",
        )
    res = stats.chisquare([n_champion, n_challenger], f_exp=expected)
    p = float(res.pvalue)
    detected = p < alpha
    summary = (
        f"Sample ratio {'MISMATCH' if detected else 'ok'}: challenger got "
        f"{n_challenger}/{total} = {observed_share:.1%} for an intended {split:.1%} "
        f"(chi² p = {p:.2g}{' < ' if detected else ' >= '}{alpha:g})."
    )
    return SRMCheck(
        n_champion=n_champion,
        n_challenger=n_challenger,
        expected_challenger_share=split,
        observed_challenger_share=observed_share,
        chi2=float(res.statistic),
        p_value=p,
        alpha=alpha,
        detected=detected,
        summary=summary,
    )


# --------------------------------------------------------------------------------------------
# Bootstrap of a difference in means
# --------------------------------------------------------------------------------------------


def _boot_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = x.size
    if n >= 2**32:
        raise ValueError("too many rows to bootstrap")
    out = np.empty(n_resamples)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(k, n), dtype=np.uint32)  # uint32: ~10x faster to draw
        out[start : start + k] = np.take(x, idx).mean(axis=1)
    return out


def bootstrap_mean_difference_ci(
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    paired: bool,
    level: float = 0.95,
    n_resamples: int = 2000,
    method: Literal["bca", "percentile"] = "bca",
    seed: int = 0,
) -> tuple[float, float]:
    """CI of ``mean(challenger) - mean(champion)``.

    Independent arms are resampled separately; paired samples are resampled as pairs (the mean of
    the per-pair difference). BCa corrects the percentile interval for the bootstrap
    distribution's bias (z0) and skew (acceleration ``a``, from the empirical influence values of
    the means, computed exactly: Davison & Hinkley eq. 5.25 for several samples). Falls back to
    the percentile interval when z0 is undefined (every resample on one side).
    """
    a = np.asarray(champion, dtype=np.float64)
    b = np.asarray(challenger, dtype=np.float64)
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    if a.size < 2 or b.size < 2:
        raise ValueError("the bootstrap needs at least 2 values per arm")
    rng = np.random.default_rng(seed)
    if paired:
        if a.size != b.size:
            raise ValueError("paired samples must have the same length")
        d = b - a
        observed = float(d.mean())
        boot = _boot_means(d, n_resamples, rng)
        influence = [(d - observed) / d.size]
    else:
        observed = float(b.mean() - a.mean())
        boot = _boot_means(b, n_resamples, rng) - _boot_means(a, n_resamples, rng)
        influence = [(b - b.mean()) / b.size, -(a - a.mean()) / a.size]
    tail = (1.0 - level) / 2.0
    if np.ptp(boot) == 0.0:
        return observed, observed
    qs = np.array([tail, 1.0 - tail])
    if method == "bca":
        below = np.mean(boot < observed) + 0.5 * np.mean(boot == observed)
        if 0.0 < below < 1.0:
            z0 = stats.norm.ppf(below)
            num = sum(float(np.sum(u**3)) for u in influence)
            den = sum(float(np.sum(u**2)) for u in influence)
            acc = num / (6.0 * den**1.5) if den > 0 else 0.0
            z = stats.norm.ppf(qs)
            qs = stats.norm.cdf(z0 + (z0 + z) / (1.0 - acc * (z0 + z)))
    elif method != "percentile":
        raise ValueError(f"unknown bootstrap method {method!r}")
    lo, hi = np.quantile(boot, qs)
    return float(lo), float(hi)


def t_interval_mean_difference(
    champion: np.ndarray, challenger: np.ndarray, *, paired: bool, level: float = 0.95
) -> tuple[float, float]:
    """The t interval of ``mean(challenger) - mean(champion)`` (Welch-Satterthwaite df when
    independent). Used instead of the bootstrap for very large arms, where the bootstrap
    distribution of a mean is normal to within its own Monte Carlo error and costs seconds."""
    a = np.asarray(champion, dtype=np.float64)
    b = np.asarray(challenger, dtype=np.float64)
    if paired:
        d = b - a
        est, se, df = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1.0
    else:
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        est, se = float(b.mean() - a.mean()), math.sqrt(va + vb)
        denom = va**2 / (a.size - 1) + vb**2 / (b.size - 1)
        df = (va + vb) ** 2 / denom if denom > 0 else a.size + b.size - 2.0
    half = float(stats.t.ppf(0.5 + level / 2.0, df)) * se
    return est - half, est + half


# --------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------


class ExperimentConfig(BaseModel):
    """How an experiment is judged. ``alpha`` = 1 - the confidence a winner needs."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    alpha: float = Field(0.05, gt=0, lt=0.5)
    min_samples_per_arm: int = Field(100, ge=10)
    planned_samples_per_arm: int = Field(
        2000, ge=10, description="the horizon: information fraction 1 (the smaller arm's count)"
    )
    spending: Spending = "obrien_fleming"
    split: float = Field(0.5, gt=0, lt=1, description="challenger's share in split mode")
    srm_alpha: float = Field(0.001, gt=0, lt=0.5)
    n_bootstrap: int = Field(2000, ge=100)
    ci_method: Literal["bca", "percentile"] = "bca"
    bootstrap_max_rows: int = Field(
        20_000,
        ge=100,
        description="above this many rows in an arm, the CI is the t interval (see module doc)",
    )
    seed: int = 0
    min_effect_ms: float = Field(0.0, ge=0, description="smaller MAE differences do not win")
    shadow_test: Literal["paired_t", "wilcoxon"] = "paired_t"

    @model_validator(mode="after")
    def _horizon_after_minimum(self) -> ExperimentConfig:
        if self.planned_samples_per_arm < self.min_samples_per_arm:
            raise ValueError("planned_samples_per_arm is below min_samples_per_arm")
        return self

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha


class ExperimentVerdict(BaseModel):
    """Where a champion/challenger experiment stands, for an operator or an agent."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["split", "shadow"]
    state: State
    recommendation: Recommendation
    test: Literal["welch_t", "paired_t", "wilcoxon_signed_rank"] | None = Field(
        None, description="None when no test was run at this look"
    )
    p_value: float | None = None
    confidence: float
    alpha: float = Field(description="total type I error of the whole experiment")
    spending: Spending
    alpha_spent_at_look: float = Field(description="the p-value must be below this to decide")
    alpha_spent_total: float = Field(description="alpha spent so far, including this look")
    information_fraction: float = Field(description="samples / planned samples per arm")
    spent_through_fraction: float = Field(
        description="pass as previous_information_fraction at the next look"
    )
    final_look: bool = Field(description="the planned horizon is reached")
    n_champion: int
    n_challenger: int
    min_samples_per_arm: int
    mae_champion_ms: float | None
    mae_challenger_ms: float | None
    mae_difference_ms: float | None = Field(
        None, description="challenger - champion; negative = challenger better"
    )
    relative_change: float | None = Field(None, description="difference / champion MAE")
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    ci_level: float
    ci_method: str = Field(description="bootstrap_bca, bootstrap_percentile, welch_t, paired_t")
    effect_size: float | None = Field(
        None, description="standardised: Cohen's d (split) or d_z (shadow)"
    )
    srm: SRMCheck | None = None
    summary: str


def _abs_errors(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    e = np.asarray(values, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    bad = ~np.isfinite(e)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN or infinite value(s), "
            f"first at {int(np.flatnonzero(bad)[0])}"
        )
    return np.abs(e)


def _welch(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0.0 and b.std() == 0.0:
        return 1.0 if a.mean() == b.mean() else 0.0
    return float(stats.ttest_ind(b, a, equal_var=False).pvalue)


def _one_sample(d: np.ndarray, test: str) -> float:
    if test == "paired_t":
        if d.std() == 0.0:
            return 1.0 if d.mean() == 0.0 else 0.0
        return float(stats.ttest_1samp(d, 0.0).pvalue)
    if not np.any(d != 0.0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(stats.wilcoxon(d, zero_method="wilcox").pvalue)


def _cohens_d(a: np.ndarray, b: np.ndarray) -> float | None:
    na, nb = a.size, b.size
    pooled = ((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2)
    if pooled <= 0:
        return None
    return float((b.mean() - a.mean()) / math.sqrt(pooled))


def _verdict(
    mode: Literal["split", "shadow"],
    a: np.ndarray,
    b: np.ndarray,
    cfg: ExperimentConfig,
    t_prev: float,
    srm: SRMCheck | None,
) -> ExperimentVerdict:
    na, nb = int(a.size), int(b.size)
    n_info = min(na, nb)
    t = n_info / cfg.planned_samples_per_arm
    final = t >= 1.0
    mae_a = float(a.mean()) if na else None
    mae_b = float(b.mean()) if nb else None
    diff = None if mae_a is None or mae_b is None else mae_b - mae_a
    rel = None if diff is None or not mae_a else diff / mae_a
    spent_prev = alpha_spent(min(t_prev, 1.0), cfg.alpha, cfg.spending)
    base = dict(
        mode=mode,
        confidence=cfg.confidence,
        alpha=cfg.alpha,
        spending=cfg.spending,
        information_fraction=t,
        n_champion=na,
        n_challenger=nb,
        min_samples_per_arm=cfg.min_samples_per_arm,
        mae_champion_ms=mae_a,
        mae_challenger_ms=mae_b,
        mae_difference_ms=diff,
        relative_change=rel,
        ci_level=cfg.confidence,
        srm=srm,
    )
    maes = (
        f"MAE challenger {mae_b:.1f} ms vs champion {mae_a:.1f} ms"
        if mae_a is not None and mae_b is not None
        else "no errors yet in an arm"
    )

    if srm is not None and srm.detected:
        return ExperimentVerdict(
            **base,
            state="srm_failed",
            recommendation=RECOMMENDATION["srm_failed"],
            ci_method="none",
            alpha_spent_at_look=0.0,
            alpha_spent_total=spent_prev,
            spent_through_fraction=t_prev,
            final_look=final,
            summary=(
                f"{srm.summary} The assignment or logging is broken, so the arms cannot be "
                "compared: keep the champion and fix the split before testing."
            ),
        )
    if n_info < cfg.min_samples_per_arm:
        return ExperimentVerdict(
            **base,
            state="collecting",
            recommendation=RECOMMENDATION["collecting"],
            ci_method="none",
            alpha_spent_at_look=0.0,
            alpha_spent_total=spent_prev,
            spent_through_fraction=t_prev,
            final_look=False,
            summary=(
                f"Collecting: {na} champion and {nb} challenger samples, "
                f"{cfg.min_samples_per_arm} per arm needed before any test ({maes})."
            ),
        )

    look_alpha = alpha_at_look(min(t, 1.0), min(t_prev, 1.0), cfg.alpha, cfg.spending)
    spent_total = spent_prev + look_alpha
    if mode == "split":
        test = "welch_t"
        p = _welch(a, b)
        effect = _cohens_d(a, b)
    else:
        test = "paired_t" if cfg.shadow_test == "paired_t" else "wilcoxon_signed_rank"
        d = b - a
        p = _one_sample(d, cfg.shadow_test)
        sd = float(d.std(ddof=1))
        effect = float(d.mean() / sd) if sd > 0 else None
    if max(na, nb) <= cfg.bootstrap_max_rows:
        ci_method = f"bootstrap_{cfg.ci_method}"
        lo, hi = bootstrap_mean_difference_ci(
            a,
            b,
            paired=mode == "shadow",
            level=cfg.confidence,
            n_resamples=cfg.n_bootstrap,
            method=cfg.ci_method,
            seed=cfg.seed,
        )
    else:
        ci_method = "welch_t" if mode == "split" else "paired_t"
        lo, hi = t_interval_mean_difference(a, b, paired=mode == "shadow", level=cfg.confidence)
    assert diff is not None and mae_a is not None and mae_b is not None
    significant = p < look_alpha and (hi < 0.0 or lo > 0.0)
    big_enough = abs(diff) >= cfg.min_effect_ms
    if significant and big_enough:
        state: State = "challenger_wins" if diff < 0 else "champion_wins"
    elif significant or final:
        state = "no_difference"
    else:
        state = "collecting"

    ci = f"{cfg.confidence:.0%} CI [{lo:+.2f}, {hi:+.2f}] ms"
    name = {"welch_t": "Welch t", "paired_t": "paired t", "wilcoxon_signed_rank": "Wilcoxon"}[test]
    rel_op = "<" if p < look_alpha else ">="
    pv = f"{name} p = {p:.2g} {rel_op} {look_alpha:.2g} allowed at this look"
    where = f"{min(t, 1.0):.0%} of the planned sample"
    if state == "challenger_wins":
        summary = f"Challenger wins: {maes} ({diff:+.2f} ms, {ci}); {pv} ({where}). Promote it."
    elif state == "champion_wins":
        summary = (
            f"Champion wins: {maes} ({diff:+.2f} ms, {ci}); {pv} ({where}). "
            "Roll the challenger back."
        )
    elif state == "no_difference" and significant:
        summary = (
            f"No practical difference: {maes} ({diff:+.2f} ms, {ci}) is significant ({pv}) but "
            f"below the {cfg.min_effect_ms:g} ms that matters. Keep the champion."
        )
    elif state == "no_difference":
        summary = (
            f"No difference at the planned horizon: {maes} ({diff:+.2f} ms, {ci}); {pv}. "
            "Keep the champion."
        )
    else:
        summary = (
            f"Not decided yet at {where}: {maes} ({diff:+.2f} ms, {ci}); {pv}. Continue collecting."
        )
    return ExperimentVerdict(
        **base,
        state=state,
        recommendation=RECOMMENDATION[state],
        test=test,
        p_value=p,
        alpha_spent_at_look=look_alpha,
        alpha_spent_total=spent_total,
        spent_through_fraction=max(t_prev, min(t, 1.0)),
        final_look=final,
        ci_low_ms=lo,
        ci_high_ms=hi,
        ci_method=ci_method,
        effect_size=effect,
        summary=summary,
    )


def evaluate_split(
    champion_errors: Sequence[float] | np.ndarray,
    challenger_errors: Sequence[float] | np.ndarray,
    config: ExperimentConfig | None = None,
    *,
    previous_information_fraction: float = 0.0,
) -> ExperimentVerdict:
    """Judge a split-mode experiment at one look (Welch's t-test on absolute errors).

    ``*_errors`` are each arm's prediction errors (signed or absolute; absolute values are used).
    """
    cfg = config or ExperimentConfig()
    a = _abs_errors("champion_errors", champion_errors)
    b = _abs_errors("challenger_errors", challenger_errors)
    srm = srm_check(a.size, b.size, cfg.split, cfg.srm_alpha)
    return _verdict("split", a, b, cfg, _check_prev(previous_information_fraction), srm)


def evaluate_shadow(
    champion_errors: Sequence[float] | np.ndarray,
    challenger_errors: Sequence[float] | np.ndarray,
    config: ExperimentConfig | None = None,
    *,
    previous_information_fraction: float = 0.0,
) -> ExperimentVerdict:
    """Judge a shadow-mode experiment at one look (paired test on absolute errors).

    Row ``i`` of both arrays must be the same request.
    """
    cfg = config or ExperimentConfig()
    a = _abs_errors("champion_errors", champion_errors)
    b = _abs_errors("challenger_errors", challenger_errors)
    if a.size != b.size:
        raise ValueError(
            f"shadow mode pairs errors by request: got {a.size} champion and {b.size} "
            "challenger errors"
        )
    return _verdict("shadow", a, b, cfg, _check_prev(previous_information_fraction), None)


def _check_prev(t_prev: float) -> float:
    if not math.isfinite(t_prev) or t_prev < 0:
        raise ValueError("previous_information_fraction must be finite and >= 0")
    return float(t_prev)
