"""The processes a run starts: servers that are up once a URL answers, commands that must succeed."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from bench.progress import log

HOST = "127.0.0.1"

# Environment variables the service reads: cleared so that the service runs on its defaults, whatever
# the shell running the benchmark has set (use --service-env to try other values).
SERVICE_VARIABLES = (
    "DATABASE_URL", "MIGRATIONS_DATABASE_URL", "DB_POOL_SIZE", "DB_MAX_OVERFLOW", "DB_POOL_RECYCLE",
    "DB_CONNECT_TIMEOUT", "DB_ACQUIRE_TIMEOUT", "DB_COMMAND_TIMEOUT", "DB_STATEMENT_CACHE", "WEBHOOK_SECRET",
    "WEBHOOK_MAX_BODY_BYTES", "WEBHOOK_CLOCK_SKEW_SECONDS", "USER_ID_FORMAT", "BETTER_AUTH_URL",
    "JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE", "JWT_ALGORITHMS", "JWT_LEEWAY_SECONDS",
    "CORS_ALLOW_ORIGINS", "LOG_LEVEL", "INGEST_BATCH_SIZE", "INGEST_QUEUE_SIZE", "INGEST_WRITERS",
    "INGEST_TIMEOUT_SECONDS", "RETRY_AFTER_SECONDS", "EMBEDDED_PG_DIR",
)  # fmt: skip


def service_command() -> list[str]:
    """`sync-service` as installed next to this interpreter (what production runs), else `-m`."""
    script = Path(sys.executable).with_name("sync-service")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sync_service"]


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
    response = httpx.get(url, headers=dict(headers), timeout=10)
    return response.status_code, response.content


def run_checked(command: list[str], *, env: Mapping[str, str], cwd: Path, what: str) -> None:
    run = subprocess.run(
        command, capture_output=True, text=True, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
        timeout=120, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        raise SystemExit(f"bench: {what} failed (exit code {run.returncode}):\n{run.stdout}{run.stderr}")


@contextlib.contextmanager
def running(
    command: list[str], *, env: Mapping[str, str], cwd: Path, log_path: Path, ready_url: str, name: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess, up once `ready_url` answers 200; stopped (SIGTERM, then SIGKILL) on exit."""
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command,
            env=dict(env),
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"bench: the {name} exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if http_get(ready_url, {})[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the {name} was not ready in 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        log(f"{name} up (pid {proc.pid})")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
