"""The offline reasoner: a deterministic stand-in for Claude behind the same `LLMModel`
interface (`model`), with its question reading (`question`), tool plans (`plan`), answers
(`answers`, `answers_fleet`, `answers_history`), routing rule (`router_rule`) and monitor
rules (`monitors`)."""

from agents.offline.model import OFFLINE_MODEL_ID, OfflineModel, owner
from agents.offline.question import Intent, read_intent, resolve
from agents.offline.router_rule import choose_backend
from agents.offline.text import FOOTER, OFFLINE_TAG

__all__ = [
    "FOOTER",
    "OFFLINE_MODEL_ID",
    "OFFLINE_TAG",
    "Intent",
    "OfflineModel",
    "choose_backend",
    "owner",
    "read_intent",
    "resolve",
]
