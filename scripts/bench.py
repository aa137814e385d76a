#!/usr/bin/env python3
"""Benchmark sync-service against the framework ceiling, on loopback, against a real PostgreSQL.

    .venv/bin/python scripts/bench.py --database-url postgresql://postgres@127.0.0.1:5432/postgres [--quick]
        [--ingest-at 256]

One run, bounded in time (about 2-4 minutes; --quick under 1 minute), that stops by itself:
1. creates a throwaway database on the server (dropped at the end) and applies the migrations with
   `sync-service migrate`;
2. starts the service as production does (`sync-service serve --no-migrate`, one uvicorn worker,
   LOG_LEVEL=WARNING, default pool and ingest settings) and a no-op Litestar app under the same uvicorn
   options (scripts/bench/noop_app.py), plus a JWKS with an Ed25519 key on loopback for the read API;
3. measures with wrk (32 connections, at most 2 threads):
   - no-op POST with the same JSON decode (the framework ceiling);
   - webhook ingest: a warm-up, then N deliveries (default 200,000) with unique message ids, half
     user.created of new users and half user.updated of earlier users, each signed with svix's signer
     right before its phase; every request is sent once; then as many again of the same stream with
     5% user.deleted of earlier users (the deletion mix: the row goes, a tombstone, the erasure);
   - the same kind of stream against a straightforward receiver (scripts/bench/per_request_app.py:
     svix, msgspec, one transaction per request, its own database): what group commit gains;
   - no-op GET and GET /users/me with EdDSA tokens (skipped when the route is not there);
   - with --ingest-at C, after the rest: more deliveries at C connections (checked as well);
   - `sync-service replay --direct` events/s (skipped when the verb is not there);
4. prints req/s, ratios, p50/p99 latency, CPU used by the service, PostgreSQL and wrk, the app's and
   PostgreSQL's CPU per acknowledged delivery and per read against the no-op's app CPU per request,
   the service's RSS after the warm-up and after the N deliveries, its peak RSS (VmHWM) and the core
   count; checks that every acknowledged delivery is in the inbox, every user row equals the newest
   update sent and no deleted user is left.

Each phase is a module of scripts/bench/phases/; what they share (the plan, the apps, the figures so
far) is scripts/bench/session.py; scripts/bench/report.py prints the report.

Exit status: 0 when every correctness check passed (targets missed are reported, not fatal), 1 when a
check failed, 2 when something needed is missing (wrk, a database URL).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench import apps, procfs, report
from bench.phases import ingest, many_connections, noop_post, per_request, reads, replay
from bench.progress import log
from bench.session import DEFAULT, QUICK, Plan, Session
from bench.wrk import WrkMissing, find_wrk


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.workers < 1:
        print("bench: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.profile and args.workers > 1:
        print("bench: --profile records one process: use it with --workers 1", file=sys.stderr)
        return 2
    try:
        find_wrk()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    server_url = (
        args.database_url
        or os.environ.get("BENCH_DATABASE_URL", "").strip()
        or os.environ.get("TEST_DATABASE_URL", "").strip()
    )
    if not server_url:
        print(
            "bench: no PostgreSQL: pass --database-url or set BENCH_DATABASE_URL or TEST_DATABASE_URL to a "
            "server URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres); the benchmark creates and "
            "drops its own database there",
            file=sys.stderr,
        )
        return 2
    plan = QUICK if args.quick else DEFAULT
    if args.deliveries is not None:
        plan = dataclasses.replace(plan, deliveries=args.deliveries)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args, plan, server_url)
    except KeyboardInterrupt:
        print("bench: interrupted; cleaned up", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, plan: Plan, server_url: str) -> int:
    """Every phase in order, then the report; 0 when every check passed, else 1."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sync-bench-")))
        running = stack.enter_context(apps.started(server_url, tmp, args.service_env, args.workers))
        if args.keep_logs:
            stack.callback(apps.copy_logs, tmp, args.keep_logs)
        session = Session(
            plan, running, tmp, threads=max(1, min(args.threads, 2, procfs.core_count()[1])),
            connections=args.connections, profile_dir=args.profile, workers=args.workers,
        )  # fmt: skip

        noop_post.run(session)
        ingested = ingest.run(session)
        per_request.run(session)
        reads.run(session, ingested.surviving())
        session.rss["peak"] = procfs.family_status_kib(running.service.pid, "VmHWM")
        session.rss["noop_peak"] = procfs.family_status_kib(running.noop.pid, "VmHWM")
        log("checking the database")
        session.checks += ingested.check(running.database_url)
        if args.ingest_at:
            # After the main figures and checks (and the peak RSS), so that the flag changes none of them;
            # before replay, whose rows are not deliveries the checks know.
            ingested += many_connections.run(session, args.ingest_at)
            log("checking the database again")
            label = f"after the ingest at {args.ingest_at} connections: "
            session.checks += ingested.check(running.database_url, label)
        replay.run(session)
        elapsed = time.monotonic() - started
    print(report.render(session, quick=args.quick, elapsed=elapsed, ingest_at=args.ingest_at))
    return 0 if all(c.passed for c in session.checks) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL server URL (or BENCH_DATABASE_URL, TEST_DATABASE_URL)"
    )
    parser.add_argument("--quick", action="store_true", help="a shorter run (under a minute)")
    parser.add_argument("--deliveries", type=int, help="deliveries in the measured ingest phase")
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk's connections (every phase but --ingest-at's)"
    )
    parser.add_argument(
        "--ingest-at", type=int, metavar="CONNECTIONS",
        help="after the main phases, send more deliveries at that many connections (e.g. 256) and print\n"
        "req/s, latency, non-2xx and socket errors\n"
        "(50,000 deliveries, --quick 5,000; at most 170 s, --quick 30 s)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (at most 2, at most the cores)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the apps with py-spy during ingest, /users/me and the no-op phases (raw files in DIR)",
    )
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="NAME=VALUE",
        help="an extra environment variable for the service (to compare settings)",
    )  # fmt: skip
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy the service logs there")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="uvicorn worker processes of every app (the service, the no-op app, the per-request\n"
        "receiver); CPU and memory are then the sum over each app's processes",
    )  # fmt: skip
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
