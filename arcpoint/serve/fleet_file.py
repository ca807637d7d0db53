"""The fleet file: which backends the service routes to, what they cost, where to scrape them.

    # fleet.yaml
    backends:
      - name: b0
        cost_per_request: 0.0010      # dollars
        capacity_rps: 32              # optional: lets the policy judge load
        metrics_url: http://10.0.0.5:8000/metrics   # optional: scraped (vLLM metric names)
      - name: b1
        cost_per_request: 0.0004

Without a file the service uses the simulator's default fleet (b0-b3), the fleet `arcpoint demo`
writes to the database, so a demo database can be served as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tools.routers.base import BackendProfile
from tools.routing import BackendInfo


class FleetFileError(ValueError):
    pass


class BackendEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    cost_per_request: float = Field(ge=0, allow_inf_nan=False)
    capacity_rps: float | None = Field(None, gt=0, allow_inf_nan=False)
    metrics_url: str | None = None
    kind: str = "default"
    cost_per_1k_input: float = Field(0.0, ge=0, allow_inf_nan=False)
    cost_per_1k_output: float = Field(0.0, ge=0, allow_inf_nan=False)

    @field_validator("metrics_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"metrics_url must be an http(s) URL, got {value!r}")
        return value


class FleetFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backends: tuple[BackendEntry, ...] = Field(min_length=1)

    @field_validator("backends")
    @classmethod
    def _unique(cls, value: tuple[BackendEntry, ...]) -> tuple[BackendEntry, ...]:
        names = [b.name for b in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate backend names: {', '.join(dupes)}")
        return value

    def infos(self) -> tuple[BackendInfo, ...]:
        return tuple(BackendInfo(b.name, b.cost_per_request, b.capacity_rps) for b in self.backends)

    def profiles(self) -> tuple[BackendProfile, ...]:
        return tuple(
            BackendProfile(b.name, b.cost_per_1k_input, b.cost_per_1k_output, b.kind)
            for b in self.backends
        )

    def scrape_targets(self) -> dict[str, str]:
        return {b.name: b.metrics_url for b in self.backends if b.metrics_url}


def default_fleet() -> FleetFile:
    from tools.sim.spec import DEFAULT_FLEET, backend_infos

    return FleetFile(
        backends=tuple(
            BackendEntry(
                name=s.name,
                cost_per_request=info.cost_per_request,
                capacity_rps=info.capacity_rps,
                kind=s.gpu,
                cost_per_1k_input=s.cost_per_1k_input,
                cost_per_1k_output=s.cost_per_1k_output,
            )
            for s, info in zip(DEFAULT_FLEET, backend_infos(DEFAULT_FLEET), strict=True)
        )
    )


def load_fleet(path: str | Path | None) -> FleetFile:
    """The fleet in `path` (YAML or JSON), or the default; FleetFileError says what is wrong."""
    if path is None:
        return default_fleet()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetFileError(f"cannot read fleet file {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise FleetFileError(f"{p} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FleetFileError(f"{p}: expected a mapping with a 'backends' list")
    try:
        return FleetFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'fleet'}: {e['msg']}" for e in exc.errors()
        )
        raise FleetFileError(f"{p}: {problems}") from None
