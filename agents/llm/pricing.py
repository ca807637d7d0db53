"""Token prices per model id, so every run can say what it cost.

Prices are US dollars per million tokens, as Anthropic publishes them for the standard tier
(https://docs.claude.com/en/docs/about-claude/pricing). Cache writes are priced at the 5-minute
rate (1.25x input), which is what `cache_control: {"type": "ephemeral"}` buys; cache reads at
0.1x input. A model id missing from the table is priced by its family (opus, sonnet, haiku; sonnet
if none matches) and the run's `cost_basis` says `default:<family>` so the figure reads as an
estimate. Long-context (>200k input tokens) surcharges are not modelled: our prompts are small.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from agents.llm.base import TokenUsage


class ModelPrice(BaseModel):
    model_config = ConfigDict(frozen=True)

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_write_per_mtok: float = Field(ge=0)
    cache_read_per_mtok: float = Field(ge=0)

    @classmethod
    def standard(cls, input_per_mtok: float, output_per_mtok: float) -> ModelPrice:
        """The usual structure: cache writes at 1.25x input, cache reads at 0.1x input."""
        return cls(
            input_per_mtok=input_per_mtok,
            output_per_mtok=output_per_mtok,
            cache_write_per_mtok=round(input_per_mtok * 1.25, 6),
            cache_read_per_mtok=round(input_per_mtok * 0.1, 6),
        )


PRICES: dict[str, ModelPrice] = {
    "claude-opus-4-6": ModelPrice.standard(5.0, 25.0),
    "claude-opus-4-5": ModelPrice.standard(5.0, 25.0),
    "claude-opus-4-1": ModelPrice.standard(15.0, 75.0),
    "claude-opus-4-0": ModelPrice.standard(15.0, 75.0),
    "claude-opus-4": ModelPrice.standard(15.0, 75.0),
    "claude-sonnet-4-6": ModelPrice.standard(3.0, 15.0),
    "claude-sonnet-4-5": ModelPrice.standard(3.0, 15.0),
    "claude-sonnet-4-0": ModelPrice.standard(3.0, 15.0),
    "claude-sonnet-4": ModelPrice.standard(3.0, 15.0),
    "claude-haiku-4-5": ModelPrice.standard(1.0, 5.0),
    "claude-3-5-haiku": ModelPrice.standard(0.8, 4.0),
    "claude-3-haiku": ModelPrice.standard(0.25, 1.25),
}

FAMILY_DEFAULTS: dict[str, str] = {
    "opus": "claude-opus-4-6",
    "sonnet": "claude-sonnet-4-6",
    "haiku": "claude-haiku-4-5",
}
DEFAULT_FAMILY = "sonnet"

_DATE_SUFFIX = re.compile(r"(-\d{8}|-latest|@\d{8})$")


def price_for(model_id: str) -> tuple[ModelPrice, str]:
    """The price row for `model_id` and its basis (the table key, or `default:<family>`)."""
    key = _DATE_SUFFIX.sub("", model_id.strip().lower())
    # Bedrock / Vertex style ids ("anthropic.claude-sonnet-4-5-20250929-v1:0") carry a prefix.
    key = key.removeprefix("anthropic.")
    key = re.sub(r"(-\d{8})?-v\d+:\d+$", "", key)
    if key in PRICES:
        return PRICES[key], key
    family = next((f for f in FAMILY_DEFAULTS if f in key), DEFAULT_FAMILY)
    return PRICES[FAMILY_DEFAULTS[family]], f"default:{family}"


def cost_usd(model_id: str, usage: TokenUsage) -> float:
    """Dollar cost of `usage` on `model_id` (see `price_for` for unknown ids)."""
    price, _ = price_for(model_id)
    total = (
        usage.input_tokens * price.input_per_mtok
        + usage.output_tokens * price.output_per_mtok
        + usage.cache_write_tokens * price.cache_write_per_mtok
        + usage.cache_read_tokens * price.cache_read_per_mtok
    )
    return total / 1_000_000
