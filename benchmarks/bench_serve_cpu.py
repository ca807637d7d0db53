"""CPU per request of `/v1/route` against `/v1/noop`, in process, through the ASGI app.

    python benchmarks/bench_serve_cpu.py [--requests 20000] [--profile route|noop]

No sockets and no server process: each request is one call of the app (the same middleware,
token check, validation and handler as `arcpoint serve`, without uvicorn's HTTP parsing), so
the figures are the service's own work per request and move less with other load on the
machine than `bench_serve.py`'s latencies. Printed per endpoint (best of 3 rounds of
`--requests` each, interleaved): the event loop thread's CPU and the whole serving process's
CPU (the loop plus the decision writer's sender, the advice worker and the escalation worker);
and the decision writer process's CPU per decision (building each stored row, inserting it:
`arcpoint.serve.decision_process`, read from /proc on Linux). `--profile` runs cProfile over one
more round of that endpoint (the loop thread only) and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from arcpoint.serve.app import create_app
from arcpoint.serve.config import ServeConfig
from arcpoint.serve.run import tune_gc

BODY = b'{"tier":"standard","input_tokens":512}'
PATHS = {"noop": "/v1/noop", "route": "/v1/route"}
ROUNDS = 3


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8787),
    }


def _process_cpu_s(pid: int) -> float | None:
    """A process's CPU seconds (user + system) from /proc; None where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(requests: int, profile: str | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(ServeConfig(db=str(Path(tmp) / "cpu.db"), run_monitors=False))
        svc = app.state.service
        svc.open()
        await svc.start()
        statuses: set[int] = set()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": BODY, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.add(message["status"])

        async def drive(path: str, n: int) -> None:
            scope = _scope(path)
            for _ in range(n):
                await app(dict(scope), receive, send)

        try:
            for path in PATHS.values():  # warm both (lazy imports, first-call compiles)
                await drive(path, 2000)
            tune_gc()  # as `arcpoint serve` does before it serves
            svc.writer.flush_through(svc.writer.submitted)
            child = getattr(svc.writer, "proc", None)
            w0, d0 = _process_cpu_s(child.pid) if child else None, svc.writer.submitted
            loop_us: dict[str, list[float]] = {k: [] for k in PATHS}
            proc_us: dict[str, list[float]] = {k: [] for k in PATHS}
            for _ in range(ROUNDS):
                for name, path in PATHS.items():
                    p0, l0 = time.process_time(), time.thread_time()
                    await drive(path, requests)
                    loop_us[name].append((time.thread_time() - l0) / requests * 1e6)
                    proc_us[name].append((time.process_time() - p0) / requests * 1e6)
            svc.writer.flush_through(svc.writer.submitted, timeout=60)
            w1, decisions = _process_cpu_s(child.pid) if child else None, svc.writer.submitted - d0
            if statuses != {200}:
                print(f"error: answers other than 200: {sorted(statuses)}", file=sys.stderr)
                return 1
            for name in PATHS:
                print(
                    f"{name:>6}: loop thread {min(loop_us[name]):6.1f} us/request, "
                    f"process {min(proc_us[name]):6.1f} us/request (best of {ROUNDS} x {requests})"
                )
            print(
                f"route - noop: loop {min(loop_us['route']) - min(loop_us['noop']):.1f} us, "
                f"process {min(proc_us['route']) - min(proc_us['noop']):.1f} us"
            )
            if w0 is not None and w1 is not None:
                print(
                    f"decision writer process: {(w1 - w0) / max(1, decisions) * 1e6:.1f} us "
                    f"CPU per decision ({decisions:,} decisions)"
                )
            if profile:
                prof = cProfile.Profile()
                prof.enable()
                await drive(PATHS[profile], requests)
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        finally:
            await svc.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000, help="requests per round (20000)")
    ap.add_argument("--profile", choices=sorted(PATHS), help="cProfile one more round of this")
    args = ap.parse_args(argv)
    if args.requests < 1:
        ap.error("--requests must be >= 1")
    return asyncio.run(run(args.requests, args.profile))


if __name__ == "__main__":
    sys.exit(main())
