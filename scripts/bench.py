#!/usr/bin/env python3
"""Benchmark sync-service against the framework ceiling, on loopback, against a real PostgreSQL.

    .venv/bin/python scripts/bench.py --database-url postgresql://postgres@127.0.0.1:5432/postgres [--quick]

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
   - `sync-service replay --direct` events/s (skipped when the verb is not there);
4. prints req/s, ratios, p50/p99 latency, CPU used by the service, PostgreSQL and wrk, the service's
   RSS after the warm-up and after the N deliveries, its peak RSS (VmHWM) and the core count; checks
   that every acknowledged delivery is in the inbox, every user row equals the newest update sent and
   no deleted user is left.

Exit status: 0 when every correctness check passed (targets missed are reported, not fatal), 1 when a
check failed, 2 when something needed is missing (wrk, a database URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from bench import checks, procfs, workload
from bench.jwks import JwksServer
from bench.profile_summary import comparison, per_request, summarise
from bench.wrk import WrkMissing, WrkResult, find_wrk, run_wrk
from svix.webhooks import Webhook

HERE = Path(__file__).resolve().parent
# Run as modules of the `bench` package (scripts/ on PYTHONPATH): the per-request receiver shares the
# no-op app's way of serving.
NOOP_APP = "bench.noop_app"
PER_REQUEST_APP = "bench.per_request_app"
SECRET = "whsec_" + "YmVuY2htYXJrLXNlY3JldC0zMi1ieXRlcy1sb25nISE="  # 32 bytes; a throwaway
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

PROFILE_RATE_HZ = 250

TARGET_INGEST_RATIO = 0.85
TARGET_P99_MS = 50.0
TARGET_READ_RATIO = 0.80
TARGET_RSS_GROWTH = 0.10


@dataclass(frozen=True, slots=True)
class Plan:
    phase_seconds: float  # each time-bounded phase (no-op POST, no-op GET, /users/me)
    warmup: int  # deliveries before the RSS baseline
    deliveries: int  # deliveries measured (RSS growth is across these)
    ingest_cap_seconds: float  # stop the ingest phase there even if not all were sent
    noop_requests: int  # distinct requests the no-op POST phase cycles through
    tokens: int  # distinct users/tokens for the read phase
    replay_events: int
    per_request_deliveries: int  # unique deliveries the per-request receiver phase may send


DELETION_MIX = "ingest 5% deletions"

DEFAULT = Plan(10, 10_000, 200_000, 170, 20_000, 1_000, 20_000, 40_000)
QUICK = Plan(3, 2_000, 20_000, 30, 5_000, 200, 3_000, 10_000)


@dataclass
class Figures:
    name: str
    result: WrkResult | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # cores used on average: app, postgres, wrk
    note: str = ""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        return Benchmark(args, plan, server_url).run()
    except KeyboardInterrupt:
        print("bench: interrupted; cleaned up", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL server URL (or BENCH_DATABASE_URL, TEST_DATABASE_URL)"
    )
    parser.add_argument("--quick", action="store_true", help="a shorter run (under a minute)")
    parser.add_argument("--deliveries", type=int, help="deliveries in the measured ingest phase")
    parser.add_argument("--connections", type=int, default=32)
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
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Benchmark:
    def __init__(self, args: argparse.Namespace, plan: Plan, server_url: str) -> None:
        self.args = args
        self.plan = plan
        self.server_url = server_url
        cores, usable = procfs.core_count()
        self.cores = cores
        self.threads = max(1, min(args.threads, 2, usable))
        self.connections = args.connections
        self.figures: dict[str, Figures] = {}
        self.checks: list[checks.Check] = []
        self.notes: list[str] = []
        self.rss: dict[str, int] = {}
        self.profiles: dict[str, str] = {}  # phase -> summary

    # --- the run -------------------------------------------------------------------------------------

    def run(self) -> int:
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sync-bench-")))
            self.tmp = tmp
            log(f"throwaway database on {_redacted(self.server_url)}")
            self.db_url = stack.enter_context(throwaway_database(self.server_url))
            self.pg_info = _postgres_info(self.db_url)
            self.cli = _service_command()
            _run_checked(
                [*self.cli, "migrate"], env=self._service_env({}), cwd=tmp, what="sync-service migrate"
            )
            # The per-request receiver writes to a database of its own, so that the service's checks and
            # its batch counts see only the service's rows.
            baseline_db = stack.enter_context(throwaway_database(self.server_url))
            _run_checked(
                [*self.cli, "migrate"], env=_clean_env({"DATABASE_URL": baseline_db}), cwd=tmp,
                what="sync-service migrate (per-request receiver's database)",
            )  # fmt: skip
            jwks = stack.enter_context(JwksServer())
            noop_port, service_port, baseline_port = _free_port(), _free_port(), _free_port()
            noop = stack.enter_context(
                running(
                    [sys.executable, "-m", NOOP_APP, "--port", str(noop_port)],
                    env=_clean_env({"PYTHONPATH": str(HERE)}), cwd=tmp, log_path=tmp / "noop.log",
                    ready_url=f"http://{HOST}:{noop_port}/users/me", name="no-op app",
                )
            )  # fmt: skip
            service = stack.enter_context(
                running(
                    [*self.cli, "serve", "--no-migrate", "--host", HOST, "--port", str(service_port)],
                    env=self._service_env(jwks.env()), cwd=tmp, log_path=tmp / "service.log",
                    ready_url=f"http://{HOST}:{service_port}/health/ready", name="service",
                )
            )  # fmt: skip
            baseline = stack.enter_context(
                running(
                    [sys.executable, "-m", PER_REQUEST_APP, "--port", str(baseline_port)],
                    env=_clean_env(
                        {"DATABASE_URL": baseline_db, "WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(HERE)}
                    ),
                    cwd=tmp,
                    log_path=tmp / "per-request.log", ready_url=f"http://{HOST}:{baseline_port}/health",
                    name="per-request receiver",
                )
            )  # fmt: skip
            self.baseline_url = f"http://{HOST}:{baseline_port}"
            self.baseline_pid = baseline.pid
            if self.args.keep_logs:
                stack.callback(self._keep_logs, tmp)
            self.noop_url = f"http://{HOST}:{noop_port}"
            self.service_url = f"http://{HOST}:{service_port}"
            self.service_pid = service.pid
            self.noop_pid = noop.pid

            self.phase_noop_post()
            sent, answered_all, acknowledged = self.phase_ingest()
            self.phase_per_request()
            deleted = {e.user.id for e in sent if e.event_type == "user.deleted"}
            self.phase_reads(jwks, [e for e in sent if e.user.id not in deleted])
            self.rss["peak"] = procfs.status_kib(service.pid, "VmHWM")
            self.rss["noop_peak"] = procfs.status_kib(noop.pid, "VmHWM")
            log("checking the database")
            self.checks += asyncio.run(
                checks.check_ingest(self.db_url, sent, acknowledged=acknowledged, answered_all=answered_all)
            )
            self.phase_replay()
            self.elapsed = time.monotonic() - started
        self.report()
        return 0 if all(c.passed for c in self.checks) else 1

    def _service_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = _clean_env({"DATABASE_URL": self.db_url, "WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "WARNING"})
        env.update(extra)
        for item in self.args.service_env:
            name, _, value = item.partition("=")
            env[name] = value
        return env

    def _keep_logs(self, tmp: Path) -> None:
        target: Path = self.args.keep_logs
        target.mkdir(parents=True, exist_ok=True)
        for name in ("service.log", "noop.log", "per-request.log"):
            if (tmp / name).exists():
                shutil.copy(tmp / name, target / name)

    # --- phases --------------------------------------------------------------------------------------

    def measure(
        self, name: str, url: str, app_pid: int, prefix: Path, *, mode: str, seconds: float
    ) -> Figures:
        log(f"{name}: {'up to ' if mode == 'once' else ''}{seconds:g} s")
        app_before, pg_before = procfs.cpu_seconds(app_pid), procfs.cpu_seconds_named("postgres")
        busy_before = procfs.machine_busy_seconds()
        wall = time.monotonic()
        result = run_wrk(
            url, prefix, mode=mode, threads=self.threads, connections=self.connections, duration_s=seconds
        )
        wall = time.monotonic() - wall
        figures = Figures(name, result)
        figures.cpu = {
            "app": (procfs.cpu_seconds(app_pid) - app_before) / wall,
            "postgres": (procfs.cpu_seconds_named("postgres") - pg_before) / wall,
            "wrk": result.wrk_cpu_s / wall,
        }
        # Everything else that ran meanwhile (other work on the machine skews the figures: look here).
        busy = (procfs.machine_busy_seconds() - busy_before) / wall
        figures.cpu["other"] = max(0.0, busy - sum(figures.cpu.values()))
        self.figures[name] = figures
        log(
            f"{name}: {result.rate:,.0f} req/s, p99 {result.latency_ms['p99']:.1f} ms, "
            f"answers {result.status_summary()}"
        )
        return figures

    def phase_noop_post(self) -> None:
        events = workload.Workload(seed=7).events(self.plan.noop_requests)
        self._write(self.tmp / "noop-post", events)
        with self._profiled("no-op POST", self.noop_pid):
            self.measure(
                "no-op POST", self.noop_url, self.noop_pid, self.tmp / "noop-post", mode="cycle",
                seconds=self.plan.phase_seconds,
            )  # fmt: skip

    def _write(self, prefix: Path, events: Sequence[workload.Event]) -> list[list[int]]:
        """Sign every event now (svix accepts timestamps up to 5 minutes old) and write wrk's files."""
        signer = Webhook(SECRET)
        now = datetime.now(UTC)
        requests = [workload.signed_request(e, signer, HOST, now) for e in events]
        return workload.write_thread_files(prefix, requests, self.threads)

    def phase_ingest(self) -> tuple[list[workload.Event], bool, int]:
        stream = workload.Workload(seed=1)
        sent: list[workload.Event] = []
        acknowledged = 0
        answered_all = True
        phases = (
            ("ingest warm-up", self.plan.warmup, 0.0),
            ("webhook ingest", self.plan.deliveries, 0.0),
            # The same stream going on, 5% of it deleting users created before (in any earlier phase).
            (DELETION_MIX, self.plan.deliveries, 0.05),
        )
        for name, count, delete_share in phases:
            events = stream.events(count, delete_share=delete_share)
            log(f"{name}: signing {count:,} deliveries")
            prefix = self.tmp / name.replace(" ", "-")
            order = self._write(prefix, events)
            batches_before = _batches(self.db_url)
            with self._profiled(name, self.service_pid, enabled=name == "webhook ingest"):
                figures = self.measure(
                    name, self.service_url, self.service_pid, prefix, mode="once",
                    seconds=self.plan.ingest_cap_seconds,
                )  # fmt: skip
            result = figures.result
            assert result is not None
            for thread, indexes in enumerate(order):
                sent += [events[i] for i in indexes[: result.issued[thread]]]
            acknowledged += result.ok
            if not result.finished:
                answered_all = False
                self.notes.append(
                    f"{name}: stopped at the {self.plan.ingest_cap_seconds:g} s cap after "
                    f"{sum(result.issued):,} of {count:,} deliveries"
                )
            if result.not_ok:
                answered_all = False
            self.rss[name] = procfs.status_kib(self.service_pid, "VmRSS")
            if not delete_share:
                self.ingest_counts = (name, sum(result.issued))
            batches = _batches(self.db_url) - batches_before
            figures.note = (
                f"{batches:,} transactions wrote the inbox: {sum(result.issued) / max(batches, 1):.1f} "
                "deliveries per commit on average (group commit)"
            )
        return sent, answered_all, acknowledged

    def phase_per_request(self) -> None:
        """The issue's straightforward receiver (verify, decode, one transaction per request) on the same
        kind of stream: the baseline that group commit is measured against."""
        events = workload.Workload(seed=3).events(self.plan.per_request_deliveries)
        self._write(self.tmp / "per-request", events)
        self.measure(
            "per-request receiver", self.baseline_url, self.baseline_pid, self.tmp / "per-request",
            mode="once", seconds=self.plan.phase_seconds,
        )  # fmt: skip

    def phase_reads(self, jwks: JwksServer, sent: Sequence[workload.Event]) -> None:
        newest: dict[str, workload.UserVersion] = {}
        for event in sent:
            held = newest.get(event.user.id)
            if held is None or event.user.updated_at > held.updated_at:
                newest[event.user.id] = event.user
        users = list(newest.values())[: self.plan.tokens]
        tokens = [jwks.token(user) for user in users]
        requests = [
            workload.http_request("GET", "/users/me", HOST, [("Authorization", f"Bearer {token}")])
            for token in tokens
        ]
        prefix = self.tmp / "read"
        workload.write_thread_files(prefix, requests, self.threads)
        with self._profiled("no-op GET", self.noop_pid):
            self.measure(
                "no-op GET", self.noop_url, self.noop_pid, prefix, mode="cycle",
                seconds=self.plan.phase_seconds,
            )  # fmt: skip

        status, body = _get(f"{self.service_url}/users/me", {"Authorization": f"Bearer {tokens[0]}"})
        if status == 404 and all(
            _get(f"{self.service_url}/users/me", {"Authorization": f"Bearer {t}"})[0] == 404
            for t in tokens[1:5]
        ):
            self.figures["GET /users/me"] = Figures(
                "GET /users/me", note="skipped: GET /users/me answers 404 (not there yet in this build)"
            )
            log("GET /users/me: skipped (404)")
            return
        if status != 200 or users[0].id.encode() not in body:
            self.figures["GET /users/me"] = Figures(
                "GET /users/me", note=f"skipped: a valid token was answered {status}: {body[:200]!r}"
            )
            self.checks.append(
                checks.Check(False, f"GET /users/me with a valid EdDSA token answers 200 (got {status})")
            )
            return
        with self._profiled("GET /users/me", self.service_pid):
            self.measure(
                "GET /users/me", self.service_url, self.service_pid, prefix, mode="cycle",
                seconds=self.plan.phase_seconds,
            )  # fmt: skip

    def phase_replay(self) -> None:
        help_run = subprocess.run(
            [*self.cli, "replay", "--help"], capture_output=True, text=True, env=self._service_env({}),
            cwd=self.tmp, stdin=subprocess.DEVNULL, timeout=60, check=False,
        )  # fmt: skip
        if help_run.returncode != 0 or "--direct" not in help_run.stdout:
            self.figures["replay --direct"] = Figures(
                "replay --direct", note="skipped: this build has no `sync-service replay --direct`"
            )
            log("replay --direct: skipped (no such verb)")
            return
        events = workload.Workload(seed=3).new_users(self.plan.replay_events)
        source = self.tmp / "replay.jsonl"
        with open(source, "wb") as out:
            for event in events:
                out.write(b'{"id":"%s","payload":%s}\n' % (event.message_id.encode(), event.body))
        command = [*self.cli, "replay", "--direct", *_replay_args(help_run.stdout, source)]
        before = asyncio.run(checks.count_inbox(self.db_url))
        log(f"replay --direct: {len(events):,} events (replay {' '.join(command[len(self.cli) + 1 :])})")
        wall = time.monotonic()
        run = subprocess.run(
            command, capture_output=True, text=True, env=self._service_env({}), cwd=self.tmp,
            stdin=subprocess.DEVNULL, timeout=240, check=False,
        )  # fmt: skip
        wall = time.monotonic() - wall
        added = asyncio.run(checks.count_inbox(self.db_url)) - before
        tail = (run.stdout + run.stderr).strip().splitlines()[-3:]
        self.figures["replay --direct"] = Figures(
            "replay --direct",
            note=f"{len(events) / wall:,.0f} events/s ({len(events):,} events in {wall:.1f} s, process start "
            f"included; exit code {run.returncode})",
        )
        self.checks.append(
            checks.Check(
                run.returncode == 0 and added == len(events),
                f"replay --direct applied {len(events):,} events: exit code {run.returncode}, "
                f"inbox +{added:,}" + (f"; last output: {' | '.join(tail)}" if run.returncode else ""),
            )
        )

    def _profile_path(self, phase: str) -> Path:
        directory: Path = self.args.profile
        return directory / (phase.replace("/", "").replace(" ", "-").strip("-") + ".txt")

    @contextlib.contextmanager
    def _profiled(self, phase: str, pid: int, *, enabled: bool = True) -> Iterator[None]:
        """With --profile, record `pid` with py-spy while the block runs (the no-op phases too, so that the
        service's profile can be compared with the ceiling's)."""
        profiler = self._start_profiler(phase, pid) if enabled else None
        try:
            yield
        finally:
            if profiler is not None:
                self._stop_profiler(phase, profiler)

    def _per_request(self, phase: str) -> dict[str, float]:
        result = self.figures[phase].result
        return per_request(self._profile_path(phase), result.answered if result else 0, PROFILE_RATE_HZ)

    def _start_profiler(self, phase: str, pid: int) -> subprocess.Popen[bytes] | None:
        if self.args.profile is None:
            return None
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(py_spy).exists():
            self.notes.append("--profile: py-spy not found (pip install py-spy)")
            return None
        self.args.profile.mkdir(parents=True, exist_ok=True)
        command = [
            py_spy, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE_HZ), "--nonblocking",
            "--format", "raw", "--output", str(self._profile_path(phase)),
        ]  # fmt: skip
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        return proc

    def _stop_profiler(self, phase: str, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            err = b""
        path = self._profile_path(phase)
        if path.exists():
            self.profiles[phase] = f"{path}\n" + summarise(path, top=15)
        else:
            self.notes.append(f"--profile: py-spy wrote nothing: {err.decode(errors='replace')[-300:]}")

    # --- report --------------------------------------------------------------------------------------

    def report(self) -> None:
        out: list[str] = []
        usable = procfs.core_count()[1]
        out.append(
            f"sync-service benchmark{' (--quick)' if self.args.quick else ''}: {self.cores} cores "
            f"({usable} usable), {platform.python_implementation()} {platform.python_version()}, "
            f"wrk {self.threads} thread(s) x {self.connections} connections, loopback, nothing pinned; "
            f"run took {self.elapsed:.0f} s"
        )
        out.append(f"PostgreSQL {self.pg_info}")
        out.append("")
        out.append(
            f"{'phase':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'answers':>10}{'non-2xx':>9}"
            f"{'app CPU/req':>13}   CPU cores used: app / postgres / wrk / other"
        )
        for name in (
            "no-op POST",
            "ingest warm-up",
            "webhook ingest",
            DELETION_MIX,
            "per-request receiver",
            "no-op GET",
            "GET /users/me",
            "replay --direct",
        ):
            fig = self.figures.get(name)
            if fig is None:
                continue
            if fig.result is None:
                out.append(f"{name:<22}{fig.note}")
                continue
            r = fig.result
            out.append(
                f"{name:<22}{r.rate:>9,.0f}{r.latency_ms['p50']:>9.1f}{r.latency_ms['p99']:>9.1f}"
                f"{r.latency_ms['max']:>9.1f}{r.answered:>10,}{r.not_ok:>9,}"
                f"{fig.cpu['app'] / r.rate * 1e6 if r.rate else 0:>10,.0f} us"
                "   " + " / ".join(f"{fig.cpu[k]:.2f}" for k in ("app", "postgres", "wrk", "other"))
            )
        out.append(
            "(app CPU/req: the app's CPU time per answer, the steadiest figure on a busy machine; postgres:"
            " every PostgreSQL process on the machine; other: everything else that ran meanwhile)"
        )
        out += [f"{name}: {fig.note}" for name, fig in self.figures.items() if fig.result and fig.note]
        out.append("")
        out.append("targets:")
        out += self._targets()
        out.append("")
        out.append(
            f"memory: service peak RSS (VmHWM) {_mib(self.rss['peak'])}; no-op app peak "
            f"{_mib(self.rss['noop_peak'])}"
        )
        out.append("")
        out.append("correctness:")
        out += [f"  {c.line()}" for c in self.checks]
        if self.notes:
            out.append("")
            out += [f"note: {n}" for n in self.notes]
        for phase, summary in self.profiles.items():
            out += ["", f"py-spy profile during {phase}:"]
            out += [f"  {line}" for line in summary.splitlines()]
        for ceiling, phase in (("no-op POST", "webhook ingest"), ("no-op GET", "GET /users/me")):
            if ceiling in self.profiles and phase in self.profiles:
                out += ["", f"where the CPU of a request goes (py-spy samples), {phase} against {ceiling}:"]
                out.append(comparison(ceiling, self._per_request(ceiling), phase, self._per_request(phase)))
        print("\n".join(out))

    def _targets(self) -> list[str]:
        lines = []

        def rate(name: str) -> float | None:
            fig = self.figures.get(name)
            return fig.result.rate if fig is not None and fig.result is not None else None

        ingest, ceiling = rate("webhook ingest"), rate("no-op POST")
        if ingest is not None and ceiling:
            ratio = ingest / ceiling
            lines.append(
                _target(
                    f"ingest / no-op POST = {ingest:,.0f} / {ceiling:,.0f} = {ratio:.2f}",
                    ratio >= TARGET_INGEST_RATIO,
                    f">= {TARGET_INGEST_RATIO}",
                )
            )
            result = self.figures["webhook ingest"].result
            assert result is not None
            p99 = result.latency_ms["p99"]
            lines.append(
                _target(
                    f"ingest p99 at {self.connections} connections = {p99:.1f} ms",
                    p99 <= TARGET_P99_MS,
                    f"<= {TARGET_P99_MS:g} ms",
                )
            )
        baseline = rate("per-request receiver")
        if ingest is not None and baseline:
            lines.append(
                f"  -     ingest / per-request receiver = {ingest:,.0f} / {baseline:,.0f} = "
                f"{ingest / baseline:.2f}   (no target: group commit against one transaction per request)"
            )
        read, noop_get = rate("GET /users/me"), rate("no-op GET")
        if read is not None and noop_get:
            ratio = read / noop_get
            lines.append(
                _target(
                    f"/users/me / no-op GET = {read:,.0f} / {noop_get:,.0f} = {ratio:.2f}",
                    ratio >= TARGET_READ_RATIO,
                    f">= {TARGET_READ_RATIO}",
                )
            )
        else:
            lines.append(
                f"  -     /users/me / no-op GET: not measured ({self.figures['GET /users/me'].note})"
            )
        before, after = self.rss.get("ingest warm-up"), self.rss.get("webhook ingest")
        if before and after:
            growth = after / before - 1
            count = self.ingest_counts[1]
            text = f"RSS growth across {count:,} deliveries = {growth:+.1%} ({_mib(before)} after warm-up"
            text += f" -> {_mib(after)})"
            lines.append(_target(text, growth < TARGET_RSS_GROWTH, f"< {TARGET_RSS_GROWTH:.0%}"))
        return lines


def _target(text: str, met: bool, goal: str) -> str:
    return f"  {'met   ' if met else 'MISSED'} {text}   (target {goal})"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


# --- processes, ports, database ----------------------------------------------------------------------


def _service_command() -> list[str]:
    """`sync-service` as installed next to this interpreter (what production runs), else `-m`."""
    script = Path(sys.executable).with_name("sync-service")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sync_service"]


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
    response = httpx.get(url, headers=dict(headers), timeout=10)
    return response.status_code, response.content


def _run_checked(command: list[str], *, env: Mapping[str, str], cwd: Path, what: str) -> None:
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
                if _get(ready_url, {})[0] == 200:
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


@contextlib.contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    name = f"sync_bench_{secrets.token_hex(4)}"
    admin = _with_database(server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"dropped database {name}")


def _batches(url: str) -> int:
    """Transactions that have written the inbox so far: its rows take `processed_at` from now(), which
    is the start time of their transaction."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(DISTINCT processed_at) FROM webhook_events").fetchone()
    return int(row[0]) if row else 0


def _postgres_info(url: str) -> str:
    """The server settings that move these figures most."""
    with psycopg.connect(url) as conn:
        shown = {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "autovacuum", "synchronous_commit", "fsync", "shared_buffers")
        }
    version = shown.pop("server_version")
    return f"{version} (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return urlunsplit((scheme, parts.netloc, f"/{name}", parts.query, ""))


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(
        (parts.scheme, parts.netloc.replace(f":{parts.password}@", ":***@"), parts.path, "", "")
    )


def _replay_args(help_text: str, source: Path) -> list[str]:
    """How this build's replay takes a JSON Lines file (an option if its help names one, else
    positional), keeping our message ids and skipping migrations (both already done) where it can."""
    args = [str(source)]
    for option in ("--file", "--input", "--from-file", "--jsonl"):
        if re.search(rf"{option}\b", help_text):
            args = [option, str(source)]
            break
    return args + [flag for flag in ("--keep-ids", "--no-migrate") if re.search(rf"{flag}\b", help_text)]


if __name__ == "__main__":
    sys.exit(main())
