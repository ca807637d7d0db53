"""Start a real `arcpoint serve` process and wait until it is ready (tests, benchmarks, scripts).

    with ServerProcess(Path("arcpoint.db"), "--no-monitors") as server:
        Client(server.url).route()

The server binds port 0 (any free port) and prints the address it got; this reads it from its
standard output, then polls `/readyz`. Both of its output pipes are drained on threads for the
whole run (a pipe nobody reads fills at 64 KiB and then blocks every log call in the server);
the last `KEEP_BYTES` of its log are kept for `log()`. `stop()` kills the process (SIGKILL) if
it still runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO

import httpx

_LISTEN = re.compile(r"listening on (http://\S+)")
KEEP_BYTES = 1 << 20
"""How much of the server's log (standard error) is kept for `log()`."""


class _Tail:
    """Drains a pipe on a thread, keeping its last `limit` characters."""

    def __init__(self, stream: IO[str], limit: int = KEEP_BYTES) -> None:
        self._chunks: deque[str] = deque()
        self._size = 0
        self._limit = limit
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self._chunks.append(line)
                self._size += len(line)
                while self._size > self._limit and len(self._chunks) > 1:
                    self._size -= len(self._chunks.popleft())

    def text(self, wait_s: float = 0.0) -> str:
        """What was kept; `wait_s`: wait that long for the pipe's end first (a finished process)."""
        self._thread.join(wait_s)
        with self._lock:
            return "".join(self._chunks)


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
        self._err: _Tail | None = None
        self._out: _Tail | None = None
        try:
            self.url = self._wait_for_url()
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        """The server's log so far (its standard error); complete once the process has ended."""
        if self._err is None:
            return ""
        return self._err.text(wait_s=5.0 if self.proc.poll() is not None else 0.0)

    def _wait_for_url(self, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._err = _Tail(self.proc.stderr)
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log()[-2000:]}")
                continue
            m = _LISTEN.search(line)
            if m:
                self._out = _Tail(self.proc.stdout, limit=64 << 10)  # drain what else it prints
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
        for tail in (self._err, self._out):
            if tail is not None:
                tail.text(wait_s=5.0)  # the drain threads end with the pipes
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
