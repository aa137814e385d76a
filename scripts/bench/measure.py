"""One measured phase: wrk against an app, and the CPU the app, PostgreSQL, wrk and the rest used."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from svix.webhooks import Webhook

from bench import procfs, workload
from bench.apps import SECRET, App
from bench.processes import HOST
from bench.progress import log
from bench.session import Figures, Session
from bench.wrk import run_wrk


def measure(
    session: Session,
    name: str,
    app: App,
    prefix: Path,
    *,
    mode: str,
    seconds: float,
    connections: int | None = None,
) -> Figures:
    """wrk with the requests in `prefix.N` (see wrk.run_wrk for `mode`) at `connections` (the run's by
    default); the figures are kept in `session.figures[name]` and returned."""
    log(f"{name}: {'up to ' if mode == 'once' else ''}{seconds:g} s")
    app_before, pg_before = procfs.family_cpu_seconds(app.pid), procfs.postgres_cpu()
    busy_before = procfs.machine_busy_seconds()
    wall = time.monotonic()
    result = run_wrk(
        app.url, prefix, mode=mode, threads=session.threads,
        connections=connections or session.connections, duration_s=seconds,
    )  # fmt: skip
    wall = time.monotonic() - wall
    postgres, postgres_all = procfs.postgres_cpu_between(
        pg_before, procfs.postgres_cpu(), session.apps.databases
    )
    app_used = procfs.family_cpu_seconds(app.pid) - app_before
    used = {"app": app_used, "postgres": postgres, "wrk": result.wrk_cpu_s}
    # Everything else that ran meanwhile (other work on the machine skews the figures: look here).
    used["other"] = max(0.0, procfs.machine_busy_seconds() - busy_before - sum(used.values()))
    used["postgres_all"] = postgres_all
    figures = Figures(name, result, used, wall)
    session.figures[name] = figures
    errors = result.socket_errors()
    log(
        f"{name}: {result.rate:,.0f} req/s, p99 {result.latency_ms['p99']:.1f} ms, "
        f"answers {result.status_summary()}"
        + (f", socket errors {errors}" if result.socket_error_count else "")
    )
    return figures


def write_signed(session: Session, prefix: Path, events: Sequence[workload.Event]) -> list[list[int]]:
    """Sign every event now (svix accepts timestamps up to 5 minutes old) and write wrk's files; returns,
    per wrk thread, the indexes of `events` in the order it sends them."""
    signer = Webhook(SECRET)
    now = datetime.now(UTC)
    requests = [workload.signed_request(e, signer, HOST, now) for e in events]
    return workload.write_thread_files(prefix, requests, session.threads)
