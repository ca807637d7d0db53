"""The predictive router: a per-request latency model, its refresh grid, and the policy."""

from tools.routers.predictive.policy import PredictiveRouter, PredictiveSettings

__all__ = ["PredictiveRouter", "PredictiveSettings"]
