"""The replay run: read the source, submit each event to the target, report, exit 0/1.

What it does for operators (message ids, conflicts, exit status) is told in `replay.options.DESCRIPTION`,
which is also the command's --help.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import sys
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import msgspec

from sync_service import sql
from sync_service.config import Settings
from sync_service.database import connection_failure, create_pool
from sync_service.ingest.records import Outcome
from sync_service.replay.options import Options, resolve
from sync_service.replay.report import FailedOut, Progress, Report
from sync_service.replay.sources import (
    InvalidLine,
    ReplayEvent,
    SourceItem,
    count_inbox,
    count_lines,
    file_chunks,
    inbox_chunks,
)
from sync_service.replay.targets import (
    Assigned,
    DirectTarget,
    HttpTarget,
    Sink,
    Target,
    ValidateOnlyTarget,
)

_CONFLICT_PASSES = 3
_MAX_HELD_CONFLICTS = 100_000


def main(
    args: argparse.Namespace,
    settings: Settings,
    *,
    migration_url: Callable[[Settings], tuple[str, str]] | None = None,
) -> int:
    """Run a replay from parsed arguments. Usage errors exit 2 (argparse); returns 0 or 1."""
    options = resolve(args, settings)
    return run_bulk("replay", run(options), settings, migration_url if options.migrate else None)


def run_bulk(
    label: str,
    work: Coroutine[Any, Any, int],
    settings: Settings,
    migration_url: Callable[[Settings], tuple[str, str]] | None,
) -> int:
    """A bulk command's run (replay, backfill): pending migrations first when asked, then `work` on the
    fastest event loop available."""
    if migration_url is not None:
        from sync_service.ops import migrations

        url, variable = migration_url(settings)
        applied = migrations.apply(url, variable=variable)
        if applied:
            print(f"{label}: applied migrations {', '.join(applied)}", file=sys.stderr)
    with asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
        return runner.run(work)


def fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop (installed with uvicorn[standard], and what the service runs on) where available: asyncpg
    and aiohttp spend less CPU per round trip on it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


@contextlib.contextmanager
def few_gc_passes() -> Iterator[None]:
    """A replay allocates millions of short-lived, acyclic objects that reference counting frees; the
    cyclic collector's default thresholds would rescan the live set thousands of times (measured: about
    a sixth of the CPU of a --direct run). Collect less often for the run, then restore."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def run(options: Options) -> int:
    with few_gc_passes():
        return await _run(options)


async def _run(options: Options) -> int:
    failed_out = FailedOut(options.failed_out) if options.failed_out else None
    report = Report(failed_out=failed_out)
    conflicts = _ConflictRetry(report, enabled=not options.dry_run)
    target = _target(options, conflicts.sink)
    stopped: str | None = None
    try:
        try:
            await target.start()
        except _CONNECTION_ERRORS as exc:
            stopped = (
                connection_failure("DATABASE_URL", options.database.url, exc)
                if options.database is not None
                else f"cannot connect: {_brief(exc)}"
            )
        else:
            stopped = await _feed(options, report, target)
            if stopped is None:
                await conflicts.retry(target)
    finally:
        conflicts.release()
        await target.close()
        report.finish()
    stopped = stopped or target.aborted
    _print_summary(report, options, stopped)
    return 0 if report.not_done == 0 and stopped is None else 1


_CONNECTION_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def _feed(options: Options, report: Report, target: Target) -> str | None:
    """Submit every event of the source, then wait for the target; why it stopped early, if it did."""
    pool = None
    if options.inbox_database is not None:
        pool = await create_pool(replace(options.inbox_database, pool_size=1, max_overflow=0))
    try:
        async with _open_source(options, pool, report) as chunks:
            async for chunk in chunks:
                events: list[Assigned] = []
                for item in chunk:
                    if isinstance(item, InvalidLine):
                        report.invalid(item)
                    else:
                        events.append((item, message_id_for(item, options.id_mode)))
                await target.submit(events)
    except (*_CONNECTION_ERRORS, EOFError, zlib.error) as exc:
        with contextlib.suppress(Exception):  # report what was already submitted; the source's error wins
            await target.drain()
        return f"cannot read the source: {_brief(exc)}"
    finally:
        if pool is not None:
            await pool.close()
    await target.drain()
    return None


def message_id_for(event: ReplayEvent, mode: str) -> str:
    if mode == "keep" and event.original_id:
        return event.original_id
    if mode == "random":
        return f"rpl_{uuid.uuid4().hex}"
    return f"rpl_{hashlib.sha256(event.payload).hexdigest()[:32]}"


class _ConflictRetry:
    """Holds `conflict` outcomes back until the end of the run, then submits them again in order."""

    def __init__(self, report: Report, *, enabled: bool) -> None:
        self._report = report
        self._enabled = enabled
        self._held: list[tuple[ReplayEvent, str | None, str | None, int | None]] = []

    def sink(
        self,
        event: ReplayEvent,
        message_id: str | None,
        outcome: str,
        detail: str | None = None,
        status: int | None = None,
    ) -> None:
        if outcome == Outcome.CONFLICT and self._enabled and len(self._held) < _MAX_HELD_CONFLICTS:
            self._held.append((event, message_id, detail, status))
            return
        self._report.record(event, message_id, outcome, detail, status)

    async def retry(self, target: Target) -> None:
        for _ in range(_CONFLICT_PASSES):
            if not self._held or target.aborted is not None:
                return
            held, self._held = self._held, []
            await target.submit([(event, message_id) for event, message_id, _, _ in held if message_id])
            await target.drain()
            if len(self._held) >= len(held):
                return  # no progress: these conflicts are real

    def release(self) -> None:
        for event, message_id, detail, status in self._held:
            self._report.record(event, message_id, Outcome.CONFLICT, detail, status)
        self._held = []


def _target(options: Options, sink: Sink) -> Target:
    if options.database is not None:
        return DirectTarget(
            options.database, options.rules, sink,
            connections=options.connections, batch_size=options.batch_size,
            dry_run=options.dry_run, max_attempts=options.max_attempts,
        )  # fmt: skip
    if options.dry_run:
        return ValidateOnlyTarget(options.rules, sink)
    assert options.url is not None
    assert options.secret is not None
    return HttpTarget(
        options.url, options.secret, sink,
        concurrency=options.concurrency, timeout=options.timeout, max_attempts=options.max_attempts,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _open_source(
    options: Options, pool: asyncpg.Pool | None, report: Report
) -> AsyncIterator[AsyncIterator[list[SourceItem]]]:
    """The source's items; on a terminal, the progress bar is set up once the source's size is known."""
    show_progress = sys.stderr.isatty()
    if options.file is not None:
        if show_progress:
            report.progress = Progress(sys.stderr, count_lines(options.file))
        yield file_chunks(options.file)
        return
    assert pool is not None
    assert options.inbox_filter is not None
    assert options.inbox_database is not None
    async with pool.acquire(timeout=options.inbox_database.acquire_timeout) as conn:
        if options.inbox_database.statement_cache:
            await conn.execute(sql.REPLAY_SESSION_SETTINGS)
        if show_progress:
            report.progress = Progress(sys.stderr, await count_inbox(conn, options.inbox_filter))
        yield inbox_chunks(conn, options.inbox_filter)


def _brief(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return f"{exc.__class__.__name__} (SQLSTATE {sqlstate})"
    return f"{exc.__class__.__name__}: {exc}"


def _print_summary(report: Report, options: Options, stopped: str | None) -> None:
    source, target = options.source_label, options.target_label
    if options.as_json:
        document = report.as_dict(source=source, target=target, dry_run=options.dry_run)
        document["stopped"] = stopped
        document["message_ids"] = options.id_mode
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    else:
        print(report.as_text(source=source, target=target, dry_run=options.dry_run))
        if stopped:
            print(f"  stopped early: {stopped}")
    sys.stdout.flush()
