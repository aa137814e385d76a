"""The service exactly as operators run it: `python -m sync_service serve` in a child process, with
its stderr (the production log stream) written to a file the test reads afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.ports import free_port
from tests.helpers.support import SECRET


@dataclass
class ServedByCli:
    base_url: str
    port: int
    stderr: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.stderr.read_text(errors="replace")


@contextlib.contextmanager
def serve_with_cli(database_url: str, **env: str) -> Iterator[ServedByCli]:
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WEBHOOK_SECRET": SECRET,
        "LOG_LEVEL": "INFO",
        **env,
    }
    with tempfile.TemporaryDirectory(prefix="sync-service-cli-") as folder:
        stderr_path = Path(folder) / "stderr.log"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "sync_service", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--no-migrate"],
                env=environment, stdout=stderr, stderr=stderr, cwd=folder,
            )  # fmt: skip
        served = ServedByCli(f"http://127.0.0.1:{port}", port, stderr_path, process)
        try:
            _wait_until_live(served)
            yield served
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_until_live(served: ServedByCli) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise RuntimeError(f"sync-service serve exited:\n{served.log_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{served.base_url}/health/live", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"sync-service serve did not come up:\n{served.log_text()[-2000:]}")
