"""The apps under test, each on a loopback port of its own: the service as production runs it, the no-op
app (the ceiling), the per-request receiver (the baseline), their throwaway databases and a JWKS."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.database import redacted, server_settings, throwaway_database
from bench.processes import HOST, clean_env, free_port, run_checked, running, service_command
from bench.progress import log
from tests.helpers.jwks import Issuer

# Run as modules of the `bench` package (scripts/ on PYTHONPATH): the per-request receiver shares the
# no-op app's way of serving.
NOOP_APP = "bench.noop_app"
PER_REQUEST_APP = "bench.per_request_app"
SCRIPTS = Path(__file__).resolve().parent.parent
SECRET = "whsec_" + "YmVuY2htYXJrLXNlY3JldC0zMi1ieXRlcy1sb25nISE="  # 32 bytes; a throwaway
LOGS = ("service.log", "noop.log", "per-request.log")


@dataclass(frozen=True, slots=True)
class App:
    url: str
    pid: int


@dataclass(frozen=True, slots=True)
class Apps:
    service: App
    noop: App
    per_request: App
    database_url: str  # the service's
    databases: frozenset[str]  # the names of the run's databases (the service's, the receiver's)
    postgres: str  # the server's version and the settings that move the figures
    cli: list[str]  # how to run `sync-service`
    service_env: dict[str, str]  # what the service's other verbs (migrate, replay) run with
    issuer: Issuer  # the Better Auth stand-in the service trusts (its JWKS on loopback)


@contextlib.contextmanager
def started(server_url: str, tmp: Path, overrides: Sequence[str], workers: int = 1) -> Iterator[Apps]:
    """Every app up and migrated (stopped, and the databases dropped, on exit); `overrides`: NAME=VALUE
    settings for the service (--service-env); `workers`: uvicorn worker processes of each app."""
    with contextlib.ExitStack() as stack:
        log(f"throwaway database on {redacted(server_url)}")
        db_url = stack.enter_context(throwaway_database(server_url))
        postgres = server_settings(db_url)
        cli = service_command()
        verbs_env = _service_env(db_url, {}, overrides)
        run_checked([*cli, "migrate"], env=verbs_env, cwd=tmp, what="sync-service migrate")
        # The per-request receiver writes to a database of its own, so that the service's checks and
        # its batch counts see only the service's rows.
        baseline_db = stack.enter_context(throwaway_database(server_url))
        run_checked(
            [*cli, "migrate"], env=clean_env({"DATABASE_URL": baseline_db}), cwd=tmp,
            what="sync-service migrate (per-request receiver's database)",
        )  # fmt: skip
        issuer = stack.enter_context(Issuer())
        noop_port, service_port, baseline_port = free_port(), free_port(), free_port()
        processes = ["--workers", str(workers)]
        noop = stack.enter_context(
            running(
                [sys.executable, "-m", NOOP_APP, "--port", str(noop_port), *processes],
                env=clean_env({"PYTHONPATH": str(SCRIPTS)}), cwd=tmp, log_path=tmp / "noop.log",
                ready_url=f"http://{HOST}:{noop_port}/users/me", name="no-op app",
            )
        )  # fmt: skip
        serve = ["serve", "--no-migrate", "--host", HOST, "--port", str(service_port), *processes]
        service = stack.enter_context(
            running(
                [*cli, *serve],
                env=_service_env(db_url, issuer.env(), overrides), cwd=tmp, log_path=tmp / "service.log",
                ready_url=f"http://{HOST}:{service_port}/health/ready", name="service",
            )
        )  # fmt: skip
        baseline = stack.enter_context(
            running(
                [sys.executable, "-m", PER_REQUEST_APP, "--port", str(baseline_port), *processes],
                env=clean_env(
                    {"DATABASE_URL": baseline_db, "WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(SCRIPTS)}
                ),
                cwd=tmp,
                log_path=tmp / "per-request.log", ready_url=f"http://{HOST}:{baseline_port}/health",
                name="per-request receiver",
            )
        )  # fmt: skip
        yield Apps(
            service=App(f"http://{HOST}:{service_port}", service.pid),
            noop=App(f"http://{HOST}:{noop_port}", noop.pid),
            per_request=App(f"http://{HOST}:{baseline_port}", baseline.pid),
            database_url=db_url,
            databases=frozenset(urlsplit(url).path.lstrip("/") for url in (db_url, baseline_db)),
            postgres=postgres,
            cli=cli,
            service_env=verbs_env,
            issuer=issuer,
        )


def copy_logs(tmp: Path, target: Path) -> None:
    """--keep-logs: the apps' logs, copied out of the run's temporary directory."""
    target.mkdir(parents=True, exist_ok=True)
    for name in LOGS:
        if (tmp / name).exists():
            shutil.copy(tmp / name, target / name)


def _service_env(db_url: str, extra: Mapping[str, str], overrides: Sequence[str]) -> dict[str, str]:
    env = clean_env({"DATABASE_URL": db_url, "WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "WARNING"})
    env.update(extra)
    for item in overrides:
        name, _, value = item.partition("=")
        env[name] = value
    return env
