"""`sync-service` as a real subprocess: the console script the README runs, its stderr kept in a file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.ports import free_port
from tests.helpers.support import SECRET

# The console script next to this interpreter: `.venv/bin/sync-service`, as in the README.
SYNC_SERVICE = str(Path(sys.executable).with_name("sync-service"))

# Variables a developer's shell may carry that would change what the subprocess does.
_SCRUBBED = ("DATABASE_URL", "MIGRATIONS_DATABASE_URL", "EMBEDDED_PG_DIR", "BETTER_AUTH_URL", "JWT_JWKS_URL")


def service_environment(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith(("DB_", "JWT_"))}
    base.update({"WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    base.update(env)
    return base


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30)

    def terminate(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        """SIGTERM (or `signum`: SIGINT is Ctrl-C), then wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)


@contextlib.contextmanager
def serve(
    tmp_path: Path, env: Mapping[str, str], *, args: tuple[str, ...] = (), ready_within: float = 60
) -> Iterator[ServeProcess]:
    """`sync-service serve` on a free loopback port, in `tmp_path` (no stray `.env`), until ready.

    Killed on the way out if the test did not stop it (a failing test must not leak a server)."""
    port = free_port()
    stderr_path = tmp_path / f"serve-{port}.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [SYNC_SERVICE, "serve", "--port", str(port), *args],
            cwd=tmp_path,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
        )
    running = ServeProcess(process, f"http://127.0.0.1:{port}", stderr_path)
    try:
        _wait_ready(running, ready_within)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(running: ServeProcess, within: float) -> None:
    deadline = time.monotonic() + within
    with httpx.Client(base_url=running.base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                raise RuntimeError(
                    f"sync-service exited with {running.process.returncode}:\n{running.stderr}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health/ready").status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"sync-service not ready within {within} s:\n{running.stderr}")
