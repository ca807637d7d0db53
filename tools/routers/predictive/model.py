"""The per-request latency model: a distribution of log TTFT and of log end-to-end latency for a
(backend, request) feature row (`tools.routers.predictive.features`).

Each target is a random forest on log milliseconds, flattened (`tools.flat_forest`, never
scikit-learn on the request path), whose leaves hold the first and second moments of the
training targets that reach them (Meinshausen's quantile regression forests keep the whole leaf
sample; two moments are enough here and keep the artifact small). A row's prediction is the
mixture of its leaves: mean `mu` = average of the leaf means, variance = average of the leaf
second moments less `mu` squared. The spread is then calibrated on runs the forest never saw:
the standardised residuals `(y - mu) / sd` of a calibration split give an empirical CDF, stored
as quantiles, so `P(latency <= s) = F((log s - mu) / sd)` is calibrated without assuming
normality (split conformal in spirit: coverage is measured on yet other runs, see `training`).

Artifacts are arrays plus JSON (`to_arrays` / `from_arrays`, no pickle), with a version id that
hashes every array and the spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tools.flat_forest import FlatForest
from tools.forecaster import content_hash
from tools.routers.predictive.features import FEATURES

FORMAT = "arcpoint.latency_model"
FORMAT_VERSION = 1
TARGETS = ("ttft", "e2e")
CAL_PROBS = np.concatenate(
    ([0.001, 0.0025, 0.005], np.linspace(0.01, 0.99, 99), [0.995, 0.9975, 0.999])
)
"""Probabilities at which the standardised residuals' quantiles are stored."""
MIN_SD = 0.05
"""Floor on the predicted spread of log latency (5%): no prediction is ever certain."""
_FOREST_ARRAYS = ("feature", "threshold", "left", "right", "value", "roots")


class ModelError(ValueError):
    """A latency model that cannot be built or trusted; the message says why."""


@dataclass
class MomentForest:
    """A forest whose nodes hold the mean (`forest.value`) and mean square (`second`) of the
    target, and the calibrated quantiles `z` of standardised residuals at `CAL_PROBS`."""

    forest: FlatForest
    second: np.ndarray
    z: np.ndarray

    def moments(self, X: np.ndarray, block: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sd) of the target for each row. `block`: X is consecutive blocks of that many
        rows, each varying a few columns (the refresh grid; `FlatForest.leaf_means`, same
        numbers, several times faster)."""
        if block:
            m1, m2 = self.forest.leaf_means(X, self.second, block)
        else:
            leaves = self.forest.apply(X)
            m1 = self.forest.value.take(leaves).mean(axis=0)
            m2 = self.second.take(leaves).mean(axis=0)
        sd = np.sqrt(np.maximum(m2 - m1 * m1, 0.0))
        return m1, np.maximum(sd, MIN_SD)

    def cdf(self, t: np.ndarray | float) -> np.ndarray:
        """P(z <= t) for standardised residual(s) t: the calibration's empirical CDF, its tails
        beyond the outermost stored quantiles continued as a normal's (so probabilities of
        missing an SLO stay comparable, never exactly 0 or 1, however far out a row lies)."""
        t = np.asarray(t, dtype=np.float64)
        z, probs = self.z, CAL_PROBS
        out = np.interp(t, z, probs)
        # the tails are computed only when some t lies in them (most grids: none)
        above = t > z[-1]
        if above.any():
            hi_z = max(float(z[-1]), 1.0)
            with np.errstate(over="ignore"):
                upper = 1.0 - (1.0 - probs[-1]) * np.exp(-(t * t - hi_z * hi_z) / 2.0)
            out = np.where(above, np.maximum(upper, probs[-1]), out)
        below = t < z[0]
        if below.any():
            lo_z = min(float(z[0]), -1.0)
            with np.errstate(over="ignore"):
                lower = probs[0] * np.exp(-(t * t - lo_z * lo_z) / 2.0)
            out = np.where(below, np.minimum(lower, probs[0]), out)
        return out

    def zq(self, p: float) -> float:
        """The calibrated quantile of the standardised residual at probability p."""
        return float(np.interp(p, CAL_PROBS, self.z))


def leaf_moments(forest: FlatForest, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per node: mean and mean square of `y` over the rows of X reaching it (every row, not the
    tree's bootstrap sample). Nodes no row reaches keep the forest's value and its square."""
    leaves = forest.apply(X).ravel()
    vals = np.tile(np.asarray(y, dtype=np.float64), forest.n_trees)
    n = forest.n_nodes
    cnt = np.bincount(leaves, minlength=n).astype(np.float64)
    s1 = np.bincount(leaves, weights=vals, minlength=n)
    s2 = np.bincount(leaves, weights=vals * vals, minlength=n)
    m1 = forest.value.copy()
    m2 = m1 * m1
    hit = cnt > 0
    m1[hit] = s1[hit] / cnt[hit]
    m2[hit] = s2[hit] / cnt[hit]
    return m1, m2


def calibrate(mf: MomentForest, X: np.ndarray, y: np.ndarray) -> MomentForest:
    """`mf` with `z` set from the standardised residuals of (X, y), rows it was not fitted on."""
    mu, sd = mf.moments(X)
    z = np.quantile((y - mu) / sd, CAL_PROBS)
    return MomentForest(mf.forest, mf.second, np.maximum.accumulate(z))


@dataclass
class LatencyModel:
    """Distributions of log TTFT and log end-to-end latency (ms) for feature rows."""

    ttft: MomentForest
    e2e: MomentForest
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)
    """What the model was trained on (scenarios, seeds, rows): recorded, not interpreted."""
    report: dict[str, Any] = field(default_factory=dict)
    parent_version: str | None = None
    version_id: str = ""

    def __post_init__(self) -> None:
        for name in TARGETS:
            if getattr(self, name).forest.n_features != len(FEATURES):
                raise ModelError(
                    f"{name} forest reads {getattr(self, name).forest.n_features} features; "
                    f"this code computes {len(FEATURES)}"
                )
        _arrays, meta = self.to_arrays()
        self.version_id = meta["version_id"]

    def predict(
        self, X: np.ndarray, block: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(mu_ttft, sd_ttft, mu_e2e, sd_e2e) in log ms for each row (`block`: see
        `MomentForest.moments`)."""
        mt, st = self.ttft.moments(X, block)
        me, se = self.e2e.moments(X, block)
        return mt, st, me, se

    def p_meet(
        self,
        mt: np.ndarray,
        st: np.ndarray,
        me: np.ndarray,
        se: np.ndarray,
        ttft_slo_ms: float,
        e2e_slo_ms: float,
    ) -> np.ndarray:
        """P(TTFT <= its SLO and end-to-end <= its SLO), taking the two as independent given the
        row (the row carries the load both depend on)."""
        a = self.ttft.cdf((math.log(ttft_slo_ms) - mt) / st)
        b = self.e2e.cdf((math.log(e2e_slo_ms) - me) / se)
        return a * b

    # -- artifact -----------------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        for name in TARGETS:
            mf: MomentForest = getattr(self, name)
            for k, v in mf.forest.arrays().items():
                arrays[f"{name}.{k}"] = v
            arrays[f"{name}.second"] = mf.second
            arrays[f"{name}.z"] = mf.z
        spec = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "features": list(FEATURES),
            "cal_probs": [round(float(p), 6) for p in CAL_PROBS],
            "hyperparameters": self.hyperparameters,
            "trained_on": self.trained_on,
            "parent_version": self.parent_version,
        }
        digest = content_hash(arrays, spec)
        meta = {**spec, "version_id": f"lat-{digest[:12]}", "content_sha256": digest}
        meta["report"] = self.report
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> LatencyModel:
        """Rebuild and verify; a ModelError names whatever does not match."""
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelError(f"not a latency model (format {meta.get('format')!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"unknown format version {meta.get('format_version')!r}")
        if list(meta.get("features", [])) != list(FEATURES):
            raise ModelError(
                "the model was trained on another feature layout than this code computes: "
                f"{meta.get('features')} vs {list(FEATURES)}"
            )
        expected = {f"{t}.{k}" for t in TARGETS for k in (*_FOREST_ARRAYS, "second", "z")}
        if set(arrays) != expected:
            raise ModelError(f"arrays {sorted(arrays)} differ from the expected {sorted(expected)}")
        try:
            parts = {}
            for t in TARGETS:
                forest = FlatForest(
                    **{k: arrays[f"{t}.{k}"] for k in _FOREST_ARRAYS}, n_features=len(FEATURES)
                )
                second = np.asarray(arrays[f"{t}.second"], dtype=np.float64)
                z = np.asarray(arrays[f"{t}.z"], dtype=np.float64)
                if second.shape != forest.value.shape or z.shape != CAL_PROBS.shape:
                    raise ModelError(f"{t}: moment or calibration arrays have the wrong shape")
                if not (np.isfinite(second).all() and np.isfinite(z).all()):
                    raise ModelError(f"{t}: non-finite moments or calibration")
                parts[t] = MomentForest(forest, second, z)
            model = cls(
                parts["ttft"],
                parts["e2e"],
                hyperparameters=dict(meta.get("hyperparameters") or {}),
                trained_on=dict(meta.get("trained_on") or {}),
                report=dict(meta.get("report") or {}),
                parent_version=meta.get("parent_version"),
            )
        except ModelError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"invalid model content: {exc}") from None
        if model.version_id != meta.get("version_id"):
            raise ModelError(
                f"version id mismatch: content gives {model.version_id}, the file says "
                f"{meta.get('version_id')} (tampered or mismatched files)"
            )
        return model
