"""Start a real `arcpoint serve` process and wait until it is ready (tests, benchmarks, scripts).

    with ServerProcess(Path("arcpoint.db"), "--no-monitors") as server:
        Client(server.url).route()

The server binds port 0 (any free port) and prints the address it got; this reads it from its
standard output, then polls `/readyz`. `stop()` kills the process (SIGKILL) if it still runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

_LISTEN = re.compile(r"listening on (http://\S+)")


class ServerProcess:
    def __init__(self, db: Path, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "arcpoint", "serve", "--db", str(db), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.proc.stderr.read()[-2000:]}")
                continue
            m = _LISTEN.search(line)
            if m:
                url = m.group(1)
                self._wait_ready(url, deadline)
                return url
        raise TimeoutError("server did not start")

    @staticmethod
    def _wait_ready(url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("server never became ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
