#!/usr/bin/env python3
"""Benchmark `sync-service replay`: N generated events into a fresh throwaway database; prints events/s.

    scripts/bench_replay.py                       # 100,000 events, --direct
    scripts/bench_replay.py --events 20000 --target url

PostgreSQL: --server-url, else BENCH_DATABASE_URL, else TEST_DATABASE_URL, else the local server
(postgresql://postgres@127.0.0.1:5432/postgres). Loopback only. The benchmark creates a database named
replay_bench_<random>, runs the real CLI in a subprocess (`python -m sync_service replay ...`), checks
the resulting rows against what the events should produce, and drops the database.

Events: user.created for fresh users, and (by default) one in five a user.updated of an earlier user
with a newer updatedAt, in the Better Auth envelope, about 300 bytes each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from bench.database import database_name, throwaway_database

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a throwaway key for the local service only
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
RUN_TIMEOUT = 900


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="how many events (1 to 2,000,000)")
    parser.add_argument("--update-share", type=float, default=0.2, help="share of user.updated events")
    parser.add_argument("--target", choices=("direct", "url"), default="direct")
    parser.add_argument("--server-url", help="PostgreSQL server to create the throwaway database on")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("replay_args", nargs="*", help="extra replay arguments, after --")
    args = parser.parse_args()
    if not 1 <= args.events <= 2_000_000 or not 0 <= args.update_share < 1:
        parser.error("--events must be 1 to 2,000,000 and --update-share in [0, 1)")

    server = (
        args.server_url
        or os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    host = urlsplit(server).hostname or ""
    if host not in LOOPBACK and not host.startswith("/"):
        parser.error(f"refusing a non-loopback PostgreSQL host {host!r}")

    with throwaway_database(server, "replay_bench") as database_url:
        name = database_name(database_url)
        with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
            path = Path(tmp) / "events.jsonl"
            expected = _generate(path, args.events, args.update_share, random.Random(args.seed))
            size = path.stat().st_size
            print(f"generated {args.events:,} events ({size / args.events:.0f} bytes each), "
                  f"{len(expected):,} users", file=sys.stderr)  # fmt: skip
            env = {
                **os.environ,
                "DATABASE_URL": database_url,
                "WEBHOOK_SECRET": SECRET,
                "LOG_LEVEL": "WARNING",
            }
            _migrate(env)
            if args.target == "direct":
                summary, wall = _replay(env, [str(path), "--direct", "--no-migrate", *args.replay_args], name)
            else:
                with _service(env) as base_url:
                    summary, wall = _replay(env, [str(path), "--url", base_url, *args.replay_args], name)
            _check(database_url, expected)

    events = summary["events"]
    print(json.dumps(summary["outcomes"]), file=sys.stderr)
    print(
        f"replay --{args.target}: {events:,} events in {summary['seconds']:.2f} s = "
        f"{summary['events_per_second']:,.0f} events/s (whole process {wall:.2f} s = {events / wall:,.0f}/s)"
    )
    replay_us = summary["replay_cpu"] / events * 1e6
    line = f"CPU per event: replay process {replay_us:.1f} us"
    if summary["postgres_cpu"] is not None:
        postgres_us = summary["postgres_cpu"] / events * 1e6
        ceiling = min(1e6 / replay_us, 2e6 / (replay_us + postgres_us))
        line += f", PostgreSQL backends {postgres_us:.1f} us; idle 2-core ceiling ~{ceiling:,.0f} events/s"
    print(line + f" (load average now {os.getloadavg()[0]:.1f})")
    return 0 if summary["not_done"] == 0 else 1


def _generate(path: Path, count: int, update_share: float, rng: random.Random) -> dict[str, tuple[str, str]]:
    """Write the events; return each user's expected final (name, updatedAt)."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    users: list[tuple[str, datetime]] = []
    final: dict[str, tuple[str, str]] = {}
    with path.open("w") as out:
        for i in range(count):
            moment = base + timedelta(milliseconds=i)
            if users and rng.random() < update_share:
                index = rng.randrange(len(users))
                user_id, created = users[index]
                kind, name = "user.updated", f"Renamed {i}"
            else:
                user_id, created = str(uuid.UUID(int=rng.getrandbits(128), version=4)), moment
                users.append((user_id, created))
                kind, name = "user.created", f"User {i}"
            data = {
                "id": user_id, "email": f"{user_id[:8]}.{user_id[-12:]}@example.com", "emailVerified": False,
                "name": name, "createdAt": _iso(created), "updatedAt": _iso(moment),
            }  # fmt: skip
            out.write(json.dumps({"type": kind, "timestamp": _iso(moment), "data": data}) + "\n")
            final[user_id] = (name, _iso(moment))
    return final


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "sync_service", "migrate"], env=env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, timeout=120)  # fmt: skip


def _replay(env: dict[str, str], replay_args: list[str], database: str) -> tuple[dict[str, Any], float]:
    """Run the CLI; also account the CPU it and its PostgreSQL backends used (this machine is shared,
    so CPU per event says more than wall time about what an idle machine would do)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    backends = _BackendCpu(database)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "sync_service", "replay", "--json", *replay_args],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with backends:
        try:
            out, err = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            sys.exit(f"replay took longer than {RUN_TIMEOUT} s")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode not in (0, 1):
        sys.exit(f"replay failed ({process.returncode}): {err[-2000:]}")
    summary: dict[str, Any] = json.loads(out)
    summary["replay_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    summary["postgres_cpu"] = backends.seconds
    return summary, wall


class _BackendCpu:
    """Samples /proc for the CPU time of the PostgreSQL backends serving `database` (local server)."""

    def __init__(self, database: str) -> None:
        self._database = database
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def seconds(self) -> float | None:
        return sum(self._seen.values()) if self._seen else None

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> None:
        """Re-reads the known backends' CPU often and looks for new backends seldom: scanning /proc takes
        CPU from the run being measured."""
        ticks = os.sysconf("SC_CLK_TCK")
        known: set[Path] = set()
        rounds = 0
        while not self._stop.wait(0.1):
            if rounds % 10 == 0:
                known |= {stat for stat in Path("/proc").glob("[0-9]*/stat") if self._is_backend(stat.parent)}
            rounds += 1
            for stat in list(known):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    known.discard(stat)  # the backend has exited; its last reading stays
                    continue
                self._seen[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / ticks

    def _is_backend(self, process: Path) -> bool:
        try:
            cmdline = (process / "cmdline").read_bytes()
        except OSError:
            return False
        return cmdline.startswith(b"postgres: ") and self._database.encode() in cmdline


class _service:  # a context manager named for what it gives
    """`sync-service serve` on a free loopback port, stopped afterwards."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sync_service", "serve", "--no-migrate", "--port", str(port)],
            env=self._env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/health/ready", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return base
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        sys.exit("the service did not become ready")

    def __exit__(self, *_exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()


def _check(database_url: str, expected: dict[str, tuple[str, str]]) -> None:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, name, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            " FROM users"
        ).fetchall()
    actual = {row[0]: (row[1], row[2]) for row in rows}
    if actual != expected:
        wrong = sum(1 for k, v in expected.items() if actual.get(k) != v)
        sys.exit(
            f"rows differ from the events: {wrong:,} users wrong, {len(actual):,} rows for {len(expected):,}"
        )
    print(f"checked: {len(actual):,} users rows match the newest event of each user", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
