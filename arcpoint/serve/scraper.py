"""Scrape each backend's Prometheus `/metrics` page (vLLM's metric names) on an interval.

One GET per backend per interval with a timeout, all backends at once; a failure is counted
(`arcpoint_telemetry_scrapes_total{source="scrape",result="error"}`) and logged without the
URL's credentials, and the backend's last good scrape simply ages out of use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from arcpoint.serve.engine_metrics import parse_prometheus

if TYPE_CHECKING:
    from arcpoint.serve.service import Service

log = logging.getLogger("arcpoint.serve.scrape")


def _safe(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


async def scrape_once(service: Service, client: httpx.AsyncClient, targets: dict[str, str]) -> int:
    """Scrape every target once; returns how many succeeded."""

    async def one(backend: str, url: str) -> bool:
        try:
            resp = await client.get(url)
            resp.raise_for_status()
            scrape = parse_prometheus(backend, resp.text)
        except (httpx.HTTPError, ValueError) as exc:
            service.metrics.telemetry.labels("scrape", "error").inc()
            log.warning("scrape of %s at %s failed: %s", backend, _safe(url), type(exc).__name__)
            return False
        scrape = scrape.model_copy(update={"scraped_at": time.time()})
        return service.take_scrape(scrape, "scrape") is None

    results = await asyncio.gather(*(one(b, u) for b, u in targets.items()))
    return sum(results)


async def scrape_loop(service: Service, targets: dict[str, str]) -> None:
    cfg = service.config
    async with httpx.AsyncClient(timeout=cfg.scrape_timeout_s, follow_redirects=False) as client:
        while True:
            await scrape_once(service, client, targets)
            await asyncio.sleep(cfg.scrape_interval_s)
