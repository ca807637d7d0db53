"""What a backend is: an LLM inference engine, its cost model, and the default fleet.

Every backend serves the same model, Llama-3.1-8B-Instruct in bf16, under vLLM-style continuous
batching with chunked prefill (the scheduler is `tools.sim.engine`). Backends differ in the GPU
they run on, which sets their speed, their KV-cache capacity and their price.

Cost of one engine iteration (the DistServe latency model, OSDI 2024, Appendix A: linear in the
batched tokens plus the attention terms, each coefficient fitted or derived per GPU):

    t = iter_base + per_token * (decode tokens + prefill chunk tokens)
        + per_context_token * (KV tokens the decode sequences attend to)
        + per_attention_pair * (query-key pairs of the prefill chunks, causal)

How each coefficient of a GPU class is derived (`GpuClass.derive`):

* `iter_base` reads the weights once per iteration: weight bytes / (HBM bandwidth x 0.77). The
  0.77 is measured: vLLM serves Llama-3.1-8B on an A100-40GB at 75 tokens/s for one request, 77%
  of the memory-bandwidth ceiling (J. Musgrave, "vLLM throughput-latency sweep on NVIDIA A100",
  vLLM 0.23). On an H100 SXM this gives 6.2 ms; vLLM measures 6.48 ms p50 TPOT at concurrency 1
  on the same model (InferenceBench concurrency sweep, H100-80GB, vLLM 0.21).
* `per_token` is the matrix work per token, 2 x parameters FLOPs at 55% of peak bf16 tensor FLOPS
  (model FLOPs utilisation of chunked prefill, Sarathi-Serve, OSDI 2024, Section 5).
* `per_context_token` reads one token's keys and values (2 x layers x KV heads x head dim x 2
  bytes = 128 KiB for Llama-3.1-8B) at the same 77% of bandwidth.
* `per_attention_pair`: 4 x heads x head dim x layers FLOPs per query-key pair at 55% of peak.

Scheduler limits follow vLLM's defaults: at most 256 running sequences (`max_num_seqs`), a
per-iteration token budget of 2048 (`max_num_batched_tokens`; Sarathi-Serve's "relaxed" budget;
vLLM's chunked prefill defaulted to 512, vllm-project/vllm#4580), KV cache = 90% of GPU memory
(`gpu_memory_utilization`) less the weights and 2 GB of activations and CUDA graphs. A request
reserves its prompt plus its output tokens of KV when admitted and waits while they do not fit
(vLLM allocates blocks as it goes and preempts by recomputation when they run out; reserving up
front is the no-preemption equivalent with the same peak memory). Hardware figures are the
vendors' datasheets; hourly prices are mid-range on-demand list prices in early 2026 (A100 80GB
SXM $1.49-2.49/h, H100 SXM $2.49-3.99/h, pricegpu.pages.dev; L40S about 35% below A100).

Prices per token follow from the hourly price: a backend's `cost_per_1k_*` is what 1,000 tokens
cost in GPU time at 70% utilisation, on the reference workload (the Azure conversation trace's
token mix), split between prompt and output tokens by the engine time each takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.routing import BackendInfo

LLAMA31_8B_PARAMS = 8.03e9
LLAMA31_8B_WEIGHT_BYTES = 2 * LLAMA31_8B_PARAMS
LLAMA31_8B_KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2
"""Keys and values, 32 layers x 8 KV heads x head dim 128 x 2 bytes (bf16): 128 KiB."""
LLAMA31_8B_FLOPS_PER_PAIR = 4 * 32 * 128 * 32
"""QK^T and PV, 2 FLOPs each, 32 heads x head dim 128, 32 layers."""
BANDWIDTH_EFFICIENCY = 0.77
COMPUTE_EFFICIENCY = 0.55
GPU_MEMORY_UTILISATION = 0.9
ACTIVATION_RESERVE_BYTES = 2e9
REFERENCE_UTILISATION = 0.7
"""Prices per token are the GPU's cost at this utilisation."""


class EngineSpec(BaseModel):
    """One backend: an inference engine and its price. Times in ms/us/ns as named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    gpu: str = Field("custom", min_length=1)
    """The hardware class (a label: `h100`, `a100`, `l40s`, ...)."""
    iter_base_ms: float = Field(gt=0, allow_inf_nan=False)
    per_token_us: float = Field(ge=0, allow_inf_nan=False)
    per_context_token_ns: float = Field(ge=0, allow_inf_nan=False)
    per_attention_pair_ps: float = Field(ge=0, allow_inf_nan=False)
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int = Field(2048, ge=1)
    kv_capacity_tokens: int = Field(ge=1)
    max_waiting: int = Field(512, ge=0)
    """Requests queued past this are rejected at once (HTTP 429)."""
    rtt_ms: float = Field(2.0, ge=0, allow_inf_nan=False)
    """Network round trip between router and backend, added to every response."""
    hourly_usd: float = Field(ge=0, allow_inf_nan=False)
    cost_per_1k_input: float = Field(ge=0, allow_inf_nan=False)
    cost_per_1k_output: float = Field(ge=0, allow_inf_nan=False)
    base_error_rate: float = Field(0.001, ge=0, lt=1, allow_inf_nan=False)
    """Share of requests that fail (5xx) whatever the load."""

    @model_validator(mode="after")
    def _check(self) -> EngineSpec:
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"{self.name}: max_num_batched_tokens ({self.max_num_batched_tokens}) must be at "
                f"least max_num_seqs ({self.max_num_seqs}), as vLLM requires, so that every "
                "running sequence can decode in one iteration"
            )
        return self

    # -- the engine's integer cost model (picoseconds) ---------------------------------------
    def coefficients_ps(self, factor: float = 1.0) -> tuple[int, int, int, int]:
        """(iter_base, per_token, per_context_token, per_attention_pair) in integer picoseconds,
        scaled by `factor` (a slowdown). Integers keep event-driven and stepwise runs exact."""
        return (
            max(1, round(self.iter_base_ms * 1e9 * factor)),
            round(self.per_token_us * 1e6 * factor),
            round(self.per_context_token_ns * 1e3 * factor),
            round(self.per_attention_pair_ps * factor),
        )


@dataclass(frozen=True)
class TokenStats:
    """Moments of a workload's request sizes: what capacity and price depend on."""

    mean_input: float
    mean_output: float
    mean_input_sq: float
    mean_input_output: float
    mean_output_sq: float

    @classmethod
    def of(cls, inputs: object, outputs: object) -> TokenStats:
        import numpy as np

        i = np.asarray(inputs, dtype=float)
        o = np.asarray(outputs, dtype=float)
        if i.size == 0 or i.size != o.size:
            raise ValueError("token stats need matching, non-empty input and output arrays")
        return cls(
            float(i.mean()), float(o.mean()), float((i * i).mean()), float((i * o).mean()),
            float((o * o).mean()),
        )  # fmt: skip

    @classmethod
    def fixed(cls, input_tokens: int, output_tokens: int) -> TokenStats:
        i, o = float(input_tokens), float(output_tokens)
        return cls(i, o, i * i, i * o, o * o)


REFERENCE_TOKENS = TokenStats(1154.70, 211.13, 2_562_750.1, 223_497.3, 71_099.6)
"""The Azure conversation trace (19,366 requests): prompts 1,155 tokens and outputs 211 on
average; the second moments are measured on the trace (`tests/test_sim_workload.py` checks
them against the file when it is present)."""


def engine_seconds_per_request(spec: EngineSpec, stats: TokenStats) -> tuple[float, float, float]:
    """Engine time one request costs when the engine is saturated: (total, prompt share, output
    share) in seconds.

    With N sequences running at once (the scheduler's limit or the KV cache's, whichever is
    smaller), each iteration decodes up to N tokens and carries at most the token budget, so a
    request needs max(output / N, (prompt + output) / budget) iterations' worth of the fixed
    cost; the per-token, context and attention terms follow the request's own tokens: decode
    step k reads prompt + k tokens of context, and the prompt's causal attention is prompt^2 / 2
    pairs. Exact for fixed sizes up to the granularity of a batch, an approximation (first and
    second moments) for mixed ones.
    """
    i, o = stats.mean_input, stats.mean_output
    n = max(1.0, min(float(spec.max_num_seqs), spec.kv_capacity_tokens / max(i + o, 1.0)))
    iters = max(o / n, (i + o) / spec.max_num_batched_tokens)
    base = spec.iter_base_ms * 1e-3 * iters
    tok = spec.per_token_us * 1e-6
    ctx = spec.per_context_token_ns * 1e-9
    pair = spec.per_attention_pair_ps * 1e-12
    # Decode steps 1..o-1 read prompt + k tokens: (o - 1) * prompt + (o - 1) * o / 2.
    decode_ctx = stats.mean_input_output - i + (stats.mean_output_sq - o) / 2.0
    prompt_s = tok * i + pair * stats.mean_input_sq / 2.0
    output_s = tok * o + ctx * max(decode_ctx, 0.0)
    total = base + prompt_s + output_s
    share_in = prompt_s / (prompt_s + output_s) if prompt_s + output_s > 0 else 0.5
    return total, base * share_in + prompt_s, base * (1.0 - share_in) + output_s


def capacity_rps(spec: EngineSpec, stats: TokenStats = REFERENCE_TOKENS) -> float:
    """Requests/s the engine completes when saturated with this token mix (its capacity)."""
    return 1.0 / engine_seconds_per_request(spec, stats)[0]


def fleet_capacity_rps(
    fleet: tuple[EngineSpec, ...], stats: TokenStats = REFERENCE_TOKENS
) -> float:
    return sum(capacity_rps(s, stats) for s in fleet)


@dataclass(frozen=True)
class GpuClass:
    """A GPU model's datasheet figures and its price; `derive` turns them into an engine."""

    name: str
    memory_gb: float
    bandwidth_gbs: float
    bf16_tflops: float
    """Dense bf16 tensor throughput (no sparsity)."""
    hourly_usd: float

    def derive(self, name: str, **overrides: object) -> EngineSpec:
        bw = self.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY
        flops = self.bf16_tflops * 1e12 * COMPUTE_EFFICIENCY
        kv_bytes = (
            self.memory_gb * 1e9 * GPU_MEMORY_UTILISATION
            - LLAMA31_8B_WEIGHT_BYTES
            - ACTIVATION_RESERVE_BYTES
        )
        if kv_bytes <= 0:
            raise ValueError(f"{self.name}: the model does not fit in {self.memory_gb} GB")
        fields: dict[str, object] = {
            "name": name,
            "gpu": self.name,
            "iter_base_ms": LLAMA31_8B_WEIGHT_BYTES / bw * 1e3,
            "per_token_us": 2 * LLAMA31_8B_PARAMS / flops * 1e6,
            "per_context_token_ns": LLAMA31_8B_KV_BYTES_PER_TOKEN / bw * 1e9,
            "per_attention_pair_ps": LLAMA31_8B_FLOPS_PER_PAIR / flops * 1e12,
            "kv_capacity_tokens": int(kv_bytes // LLAMA31_8B_KV_BYTES_PER_TOKEN),
            "hourly_usd": self.hourly_usd,
            "cost_per_1k_input": 0.0,
            "cost_per_1k_output": 0.0,
        }
        fields.update(overrides)
        spec = EngineSpec.model_validate(fields)
        if "cost_per_1k_input" in overrides or "cost_per_1k_output" in overrides:
            return spec
        return priced(spec)


def priced(spec: EngineSpec, stats: TokenStats = REFERENCE_TOKENS) -> EngineSpec:
    """`spec` with per-token prices from its hourly price (see the module docstring)."""
    _, prompt_s, output_s = engine_seconds_per_request(spec, stats)
    usd_per_s = spec.hourly_usd / 3600.0 / REFERENCE_UTILISATION
    per_in = usd_per_s * prompt_s / stats.mean_input * 1000.0 if stats.mean_input else 0.0
    per_out = usd_per_s * output_s / stats.mean_output * 1000.0 if stats.mean_output else 0.0
    return spec.model_copy(update={"cost_per_1k_input": per_in, "cost_per_1k_output": per_out})


H100 = GpuClass("h100", memory_gb=80, bandwidth_gbs=3350, bf16_tflops=989, hourly_usd=2.99)
A100 = GpuClass("a100", memory_gb=80, bandwidth_gbs=2039, bf16_tflops=312, hourly_usd=1.79)
L40S = GpuClass("l40s", memory_gb=48, bandwidth_gbs=864, bf16_tflops=181, hourly_usd=1.15)
GPU_CLASSES: dict[str, GpuClass] = {g.name: g for g in (H100, A100, L40S)}

DEFAULT_FLEET: tuple[EngineSpec, ...] = (
    H100.derive("b0"),  # the primary: the fastest, half the fleet's capacity
    L40S.derive("b1"),  # slow, half the KV cache, the dearest per token
    A100.derive("b2"),
    A100.derive("b3"),
)
"""Four backends in three classes. Capacities on the reference (conversation) mix: b0 about
16.7 req/s, b2 and b3 about 6.2 each, b1 about 3.2: 32 req/s in all (`capacity_rps`). Per
token the H100 is the cheapest (2.7 times the A100's speed for 1.7 times its price)."""


def request_cost(spec: EngineSpec, input_tokens: int, output_tokens: int) -> float:
    """Dollars for the tokens a backend processed for one request."""
    return (spec.cost_per_1k_input * input_tokens + spec.cost_per_1k_output * output_tokens) / 1e3


def idle_ttft_ms(spec: EngineSpec, input_tokens: int) -> float:
    """Time to first token of a lone request on an idle engine (prefill in budget-sized chunks)."""
    b = spec.max_num_batched_tokens
    t = 0.0
    done = 0
    while done < input_tokens:
        c = min(b, input_tokens - done)
        t += (
            spec.iter_base_ms * 1e-3
            + spec.per_token_us * 1e-6 * c
            + spec.per_attention_pair_ps * 1e-12 * (c * done + c * c // 2)
        )
        done += c
    return 1000.0 * t + spec.rtt_ms


def backend_infos(
    fleet: tuple[EngineSpec, ...] | list[EngineSpec], stats: TokenStats = REFERENCE_TOKENS
) -> tuple[BackendInfo, ...]:
    """What a router is configured with for each backend: the price of the workload's mean
    request there and its capacity for the workload's token mix."""
    return tuple(
        BackendInfo(
            s.name,
            request_cost(s, round(stats.mean_input), round(stats.mean_output)),
            capacity_rps(s, stats),
        )
        for s in fleet
    )


def check_fleet(fleet: tuple[EngineSpec, ...] | list[EngineSpec]) -> tuple[EngineSpec, ...]:
    specs = tuple(fleet)
    if not specs:
        raise ValueError("the fleet is empty")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate backend names in the fleet: {names}")
    if not all(math.isfinite(capacity_rps(s)) for s in specs):
        raise ValueError("every backend needs a finite capacity")
    return specs
