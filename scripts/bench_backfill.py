#!/usr/bin/env python3
"""Benchmark `sync-service backfill`: N users in a Better Auth-shaped table -> a fresh, empty database.

    scripts/bench_backfill.py                  # 100,000 users
    scripts/bench_backfill.py --users 20000 -- --page-size 2000

PostgreSQL as for scripts/bench_replay.py (--server-url, BENCH_DATABASE_URL, TEST_DATABASE_URL, the local
server); loopback only. Creates two throwaway databases (Better Auth's, with the table its migrations
create and uuid ids, and ours, migrated), runs the real CLI in a subprocess, checks every row arrived,
and prints users/s over the whole process (start-up and imports included) and its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench.database import database_name, throwaway_database
from bench_replay import LOOPBACK, ROOT, SECRET, _BackendCpu, _migrate

RUN_TIMEOUT = 900
BETTER_AUTH_USER_TABLE = """
CREATE TABLE "user" (
    id uuid PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE, "emailVerified" boolean NOT NULL,
    image text, "createdAt" timestamptz NOT NULL, "updatedAt" timestamptz NOT NULL
)
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000, help="how many users (1 to 2,000,000)")
    parser.add_argument("--server-url", help="PostgreSQL server to create the throwaway databases on")
    parser.add_argument("backfill_args", nargs="*", help="extra backfill arguments, after --")
    args = parser.parse_args()
    if not 1 <= args.users <= 2_000_000:
        parser.error("--users must be 1 to 2,000,000")
    server = (
        args.server_url
        or os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    host = urlsplit(server).hostname or ""
    if host not in LOOPBACK and not host.startswith("/"):
        parser.error(f"refusing a non-loopback PostgreSQL host {host!r}")

    with (
        throwaway_database(server, "backfill_bench_ba") as source_url,
        throwaway_database(server, "backfill_bench") as ours_url,
    ):
        started = time.perf_counter()
        _fill_source(source_url, args.users)
        print(f"source: {args.users:,} users in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        env = {**os.environ, "DATABASE_URL": ours_url, "WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "WARNING"}
        _migrate(env)
        summary, wall, peak_rss_mb, backends = _backfill(
            env,
            ["--better-auth-database-url", source_url, "--no-migrate", *args.backfill_args],
            database_name(ours_url),
        )
        with psycopg.connect(ours_url) as conn:
            row = conn.execute("SELECT count(*) FROM users").fetchone()
        arrived = row[0] if row else 0

    print(json.dumps(summary["outcomes"]), file=sys.stderr)
    users = summary["rows"]
    print(
        f"backfill: {users:,} users in {summary['seconds']:.2f} s = "
        f"{summary['users_per_second']:,.0f} users/s; "
        f"whole process {wall:.2f} s = {users / wall:,.0f} users/s; peak RSS {peak_rss_mb:.0f} MB"
        + (f"; PostgreSQL backends {backends / users * 1e6:.1f} us CPU per user" if backends else "")
        + f" (load average now {os.getloadavg()[0]:.1f})"
    )
    if arrived != args.users or summary["outcomes"].get("applied") != args.users:
        print(f"FAILED: {arrived:,} of {args.users:,} users in the database", file=sys.stderr)
        return 1
    return 0


def _fill_source(url: str, count: int) -> None:
    """Better Auth's table with `count` users, written with COPY (seconds, not the benchmark)."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(url) as conn:
        conn.execute(BETTER_AUTH_USER_TABLE)
        with conn.cursor().copy(
            'COPY "user" (id, name, email, "emailVerified", image, "createdAt", "updatedAt") FROM STDIN'
        ) as copy:
            for i in range(count):
                user_id = uuid.uuid4()
                created = base + timedelta(milliseconds=i)
                email = f"{user_id.hex[:8]}.{user_id.hex[-12:]}@example.com"
                copy.write_row((user_id, f"User {i}", email, i % 3 == 0, None, created, created))
        conn.execute('ANALYZE "user"')


def _backfill(
    env: dict[str, str], argv: list[str], database: str
) -> tuple[dict[str, Any], float, float, float]:
    """Run the CLI; (summary, wall seconds, the child's peak RSS in MB, our backends' CPU seconds)."""
    backends = _BackendCpu(database)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "sync_service", "backfill", "--json", *argv],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with backends:
        try:
            out, err = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            sys.exit(f"backfill took longer than {RUN_TIMEOUT} s")
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"backfill failed ({process.returncode}): {err[-2000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child: this one
    return json.loads(out), wall, peak_kb / 1024, backends.seconds or 0.0


if __name__ == "__main__":
    sys.exit(main())
