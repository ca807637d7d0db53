"""Prompts live in `prompts/<agent>.md`, one file per agent, loaded with their sha256.

The hash goes into every run's trace, so an auditor can tell exactly which wording produced an
answer, and a prompt edit shows up as a new hash rather than as an unexplained change in
behaviour. Files are read once per process (prompts do not change under a running agent).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
AGENTS = ("router", "operator", "drift_monitor", "feedback_learner", "experiment_monitor")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Prompt:
    agent: str
    text: str
    sha256: str

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


@functools.lru_cache(maxsize=32)
def _load(path: str) -> Prompt:
    file = Path(path)
    text = file.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"prompt file {file} is empty")
    return Prompt(file.stem, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_prompt(agent: str, directory: Path | None = None) -> Prompt:
    """The prompt of `agent` with its content hash. Unknown or malformed names raise ValueError."""
    if not _NAME.match(agent):
        raise ValueError(f"invalid agent name {agent!r}")
    file = (directory or PROMPTS_DIR) / f"{agent}.md"
    if not file.is_file():
        raise ValueError(f"no prompt file for agent {agent!r} at {file}")
    return _load(str(file))
