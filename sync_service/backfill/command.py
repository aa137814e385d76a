"""`sync-service backfill`: Better Auth's user table -> the ingest core, or (--dry-run) a drift report.

The source is read in keyset pages (`backfill.source`); each row becomes the `user.updated` webhook Better
Auth would send and goes through `replay.targets.DirectTarget` (`parse_delivery` + `apply_batch`, what the
webhook route and `replay --direct` use), so validation, ordering, idempotency and tombstones are not
written a second time. `extra` users (ours, not Better Auth's) are found by merging our ids with the
source's page by page, both in byte order, so memory stays flat on any size; `--delete-missing` then
deletes them with `user.deleted` deliveries through the same core, after the whole source was read.

What it means for operators (exit status, the drift line) is in `backfill.options.DESCRIPTION`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from sync_service import sql
from sync_service.backfill.options import BackfillOptions, resolve
from sync_service.backfill.source import (
    SourceError,
    SourceRow,
    SourceTable,
    event_body,
    message_id,
    open_table,
)
from sync_service.config import DatabaseSettings, Settings
from sync_service.database import connection_failure, create_pool
from sync_service.ingest.records import Outcome
from sync_service.replay.command import few_gc_passes, run_bulk
from sync_service.replay.report import NOT_DONE, OUTCOMES, Progress
from sync_service.replay.sources import ReplayEvent
from sync_service.replay.targets import DirectTarget, parse_event
from sync_service.webhooks.events import Rules

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DRIFT = 0, 1, 2, 3
DRIFT_KINDS = ("missing", "different", "extra", "rejected")
_LISTED = 1_000  # ids per kind in the --json summary
_SHOWN = 50  # ids per kind on stderr
_OUR_PAGE = 10_000
_DELETE_BATCH = 1_000
_CONFLICT_PASSES = 3
_MAX_HELD = 100_000
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def main(
    args: argparse.Namespace,
    settings: Settings,
    *,
    migration_url: Callable[[Settings], tuple[str, str]] | None = None,
) -> int:
    options = resolve(args, settings)
    return run_bulk("backfill", run(options), settings, migration_url if options.migrate else None)


class Stop(Exception):
    """Ends the run early with exit status 2 and one line saying why."""


@dataclass
class IdList:
    """One drift kind: how many, the first ids (never emails), the first few also on stderr."""

    kind: str
    count: int = 0
    ids: list[str] = field(default_factory=list)
    details: list[str | None] = field(default_factory=list)

    def add(self, user_id: str, detail: str | None = None) -> None:
        self.count += 1
        if len(self.ids) < _LISTED:
            self.ids.append(user_id)
            self.details.append(detail)
        if self.count <= _SHOWN:
            reason = f": {detail}" if detail else ""
            print(f"backfill: {self.kind} user {user_id}{reason}", file=sys.stderr)
        elif self.count == _SHOWN + 1:
            print(f"backfill: further {self.kind} users are not shown here (see --json)", file=sys.stderr)

    def as_json(self) -> list[Any]:
        if self.kind != "rejected":
            return list(self.ids)
        return [{"id": i, "detail": d} for i, d in zip(self.ids, self.details, strict=True)]


@dataclass
class Summary:
    options: BackfillOptions
    source_label: str = ""
    rows: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    drift: dict[str, IdList] = field(default_factory=lambda: {k: IdList(k) for k in DRIFT_KINDS})
    deleted: int = 0
    not_deleted: dict[str, int] = field(default_factory=dict)
    refused: str | None = None
    stopped: str | None = None
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    @property
    def drift_total(self) -> int:
        return sum(d.count for d in self.drift.values())

    def exit_status(self) -> int:
        if self.refused is not None or (self.stopped is not None and self.rows == 0):
            return EXIT_USAGE
        if self.stopped is not None:
            return EXIT_FAILED
        if self.options.dry_run:  # a monitor's question: in sync (0) or not (3), rejected rows included
            return EXIT_DRIFT if self.drift_total else EXIT_OK
        failed = sum(self.outcomes[o] for o in NOT_DONE)
        return EXIT_FAILED if failed or self.not_deleted else EXIT_OK

    def drift_line(self) -> str:
        counts = " ".join(f"{k}={d.count}" for k, d in self.drift.items())
        return f"backfill: drift={self.drift_total} {counts}"

    def as_dict(self) -> dict[str, Any]:
        o = self.options
        return {
            "source": self.source_label,
            "target": o.database.redacted,
            "dry_run": o.dry_run,
            "rows": self.rows,
            "outcomes": {} if o.dry_run else self.outcomes,
            "drift": {"total": self.drift_total, **{k: d.count for k, d in self.drift.items()}},
            "ids": {k: d.as_json() for k, d in self.drift.items()},
            "delete_missing": {
                "requested": o.delete_missing,
                "refused": self.refused,
                "deleted": self.deleted,
                "not_deleted": self.not_deleted,
            },
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "users_per_second": round(self.rows / max(self.seconds, 1e-9), 1),
            "exit_status": self.exit_status(),
        }

    def as_text(self) -> str:
        o = self.options
        mode = " (dry run: nothing written)" if o.dry_run else ""
        rate = self.rows / max(self.seconds, 1e-9)
        lines = [
            f"backfill {self.source_label} -> {o.database.redacted}{mode}",
            f"  {self.rows:,} Better Auth users in {self.seconds:.2f} s ({rate:,.0f} users/s)",
        ]
        if not o.dry_run:
            lines += [f"  {k:<10} {v:>10,}" for k, v in self.outcomes.items() if v or k in _SHOWN_OUTCOMES]
        kinds = DRIFT_KINDS if o.dry_run else ("extra",)
        lines += [f"  {k:<10} {self.drift[k].count:>10,}" for k in kinds]
        if o.delete_missing:
            lines.append(f"  deleted    {self.deleted:>10,}")
            for outcome, count in self.not_deleted.items():
                lines.append(f"  not deleted ({outcome}) {count:,}")
        if self.refused:
            lines.append(f"  --delete-missing refused: {self.refused}")
        if self.stopped:
            lines.append(f"  stopped early: {self.stopped}")
        return "\n".join(lines)


_SHOWN_OUTCOMES = frozenset({Outcome.APPLIED, Outcome.DUPLICATE, Outcome.STALE, Outcome.REJECTED})


async def run(options: BackfillOptions) -> int:
    summary = Summary(options)
    with few_gc_passes():
        try:
            await _run(options, summary)
        except Stop as exc:
            summary.stopped = str(exc)
    summary.seconds = time.monotonic() - summary.started
    _print(summary)
    return summary.exit_status()


def _print(summary: Summary) -> None:
    if summary.stopped is not None and summary.rows == 0 and not summary.options.as_json:
        print(f"sync-service backfill: {summary.stopped}", file=sys.stderr)
        return
    if summary.options.as_json:
        sys.stdout.write(msgspec.json.encode(summary.as_dict()).decode() + "\n")
    else:
        print(summary.as_text())
    sys.stdout.flush()
    if summary.stopped:
        print(f"backfill: stopped: {summary.stopped}", file=sys.stderr)
    print(summary.drift_line(), file=sys.stderr)


async def _run(options: BackfillOptions, summary: Summary) -> None:
    source_pool = await _connect(options.source, "BETTER_AUTH_DATABASE_URL")
    try:
        ours_pool = await _connect(replace(options.database, pool_size=1, max_overflow=0), "DATABASE_URL")
        try:
            async with source_pool.acquire() as source, ours_pool.acquire() as ours:
                try:
                    table = await open_table(source, options.table)
                except SourceError as exc:
                    raise Stop(str(exc)) from None
                summary.source_label = f"{options.source.redacted} table {table.label}"
                if not await ours.fetchval(sql.USERS_TABLE_EXISTS):
                    raise Stop("DATABASE_URL has no users table yet: run `sync-service migrate`")
                await _reconcile(options, summary, table, source, ours)
        finally:
            await ours_pool.close()
    finally:
        await source_pool.close()


async def _connect(database: DatabaseSettings, what: str) -> asyncpg.Pool:
    pool = await create_pool(replace(database, pool_size=1, max_overflow=0))
    try:
        async with pool.acquire(timeout=database.acquire_timeout):
            pass
    except (*_CONNECTION_ERRORS, TimeoutError) as exc:
        pool.terminate()
        raise Stop(connection_failure(what, database.url, exc)) from None
    return pool


def _brief(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return f"{exc.__class__.__name__} (SQLSTATE {sqlstate})"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


class _OurIds:
    """Our user ids in byte order, a page at a time, merged against the source's pages: an id of ours
    that the source skipped over is `extra`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._page: list[str] = []
        self._at = 0
        self._last: str | None = None
        self._done = False

    async def _fill(self) -> bool:
        if self._at < len(self._page):
            return True
        if self._done:
            return False
        if self._last is None:
            records = await self._conn.fetch(sql.BACKFILL_OUR_FIRST_IDS, _OUR_PAGE)
        else:
            records = await self._conn.fetch(sql.BACKFILL_OUR_NEXT_IDS, self._last, _OUR_PAGE)
        self._page, self._at = [r[0] for r in records], 0
        self._done = len(self._page) < _OUR_PAGE
        if self._page:
            self._last = self._page[-1]
        return bool(self._page)

    async def extras(self, source_ids: list[str], *, final: bool = False) -> list[str]:
        """Our ids up to the last of `source_ids` (all of ours left, when `final`) not among them."""
        seen = set(source_ids)
        high = source_ids[-1] if source_ids else None
        found: list[str] = []
        while await self._fill():
            ours = self._page[self._at]
            if not final and high is not None and ours > high:
                break
            if not final and high is None:
                break
            if ours not in seen:
                found.append(ours)
            self._at += 1
        return found


async def _reconcile(
    options: BackfillOptions,
    summary: Summary,
    table: SourceTable,
    source: asyncpg.Connection,
    ours: asyncpg.Connection,
) -> None:
    rules = options.rules
    progress = Progress(sys.stderr, await source.fetchval(table.count), label="backfill", unit="users") if (
        sys.stderr.isatty()
    ) else None  # fmt: skip
    applier = None if options.dry_run else _Applier(options, rules, summary, progress)
    our_ids = _OurIds(ours)
    if applier is not None:
        await applier.start()
    try:
        try:
            async for rows in table.pages(source, options.page_size):
                summary.rows += len(rows)
                if applier is not None:
                    await applier.submit(rows)
                else:
                    await _compare(rows, rules, summary, ours)
                    if progress is not None:
                        progress.update(summary.rows, summary.drift_total)
                for user_id in await our_ids.extras([row.id for row in rows]):
                    summary.drift["extra"].add(user_id)
            for user_id in await our_ids.extras([], final=True):
                summary.drift["extra"].add(user_id)
        except SourceError as exc:
            raise Stop(str(exc)) from None
        except _CONNECTION_ERRORS as exc:
            raise Stop(f"database error: {_brief(exc)}") from None
        finally:
            if applier is not None:
                await applier.finish()
        if progress is not None:
            progress.close()
        if options.delete_missing:
            await _delete_missing(options, summary, table, source, ours, applier)
    finally:
        if applier is not None:
            await applier.close()


async def _compare(rows: list[SourceRow], rules: Rules, summary: Summary, ours: asyncpg.Connection) -> None:
    """--dry-run: what a real run would do with these rows, judged against our rows as they are."""
    received_at = datetime.now(UTC)
    valid: dict[str, SourceRow] = {}
    for row in rows:
        delivery = parse_event(rules, _event(row), message_id(row), received_at)
        if delivery.rejection is not None:
            summary.drift["rejected"].add(row.id, str(delivery.rejection))
        else:
            valid[row.id] = row
    stored = {r[0]: tuple(r) for r in await ours.fetch(sql.SELECT_USERS, list(valid))}
    absent = [user_id for user_id in valid if user_id not in stored]
    deleted = {r[0] for r in await ours.fetch(sql.BACKFILL_TOMBSTONED, absent)} if absent else set()
    for user_id, row in valid.items():
        mine = stored.get(user_id)
        if mine is None:
            if user_id not in deleted:
                summary.drift["missing"].add(user_id)
        elif mine != (
            row.id,
            row.email,
            row.emailVerified,
            row.name,
            row.image,
            row.createdAt,
            row.updatedAt,
        ):
            summary.drift["different"].add(user_id)


def _event(row: SourceRow) -> ReplayEvent:
    return ReplayEvent(0, event_body(row), None, row.id)


class _Applier:
    """The real run: rows go through `DirectTarget` (the ingest core); outcomes are counted, rejected
    rows listed by user id, conflicts (an email swap met out of order) retried at the end."""

    def __init__(
        self, options: BackfillOptions, rules: Rules, summary: Summary, progress: Progress | None
    ) -> None:
        self._summary = summary
        self._progress = progress
        self._held: list[tuple[ReplayEvent, str]] = []
        self._deleting = False
        self._database_url = options.database.url
        self.target = DirectTarget(
            options.database, rules, self._sink, connections=options.connections,
            batch_size=options.batch_size, dry_run=False, max_attempts=8,
        )  # fmt: skip
        self._done = 0

    async def start(self) -> None:
        try:
            await self.target.start()
        except _CONNECTION_ERRORS as exc:
            raise Stop(connection_failure("DATABASE_URL", self._database_url, exc)) from None

    async def submit(self, rows: list[SourceRow]) -> None:
        await self.target.submit([(_event(row), message_id(row)) for row in rows])
        if self.target.aborted is not None:
            raise Stop(self.target.aborted)

    async def finish(self) -> None:
        await self.target.drain()
        for _ in range(_CONFLICT_PASSES):
            if not self._held or self.target.aborted is not None:
                break
            held, self._held = self._held, []
            await self.target.submit(held)
            await self.target.drain()
            if len(self._held) >= len(held):
                break
        for event, _ in self._held:
            self._count(Outcome.CONFLICT, event, "email is held by another user id")
        self._held = []
        if self.target.aborted is not None:
            self._summary.stopped = self.target.aborted

    async def delete(self, user_ids: list[str], moment: str) -> None:
        self._deleting = True
        events = []
        for user_id in user_ids:
            body = msgspec.json.encode({"type": "user.deleted", "timestamp": moment, "data": {"id": user_id}})
            key = f"{user_id}\x00{moment}".encode()
            events.append((ReplayEvent(0, body, None, user_id), "backfill-delete-" + _digest(key)))
        await self.target.submit(events)
        await self.target.drain()

    async def close(self) -> None:
        await self.target.close()

    def _sink(
        self,
        event: ReplayEvent,
        message_id: str | None,
        outcome: str,
        detail: str | None = None,
        status: int | None = None,
    ) -> None:
        if self._deleting:
            if outcome == Outcome.APPLIED:
                self._summary.deleted += 1
            else:
                self._summary.not_deleted[outcome] = self._summary.not_deleted.get(outcome, 0) + 1
            return
        if outcome == Outcome.CONFLICT and message_id is not None and len(self._held) < _MAX_HELD:
            self._held.append((event, message_id))
            return
        self._count(outcome, event, detail)

    def _count(self, outcome: str, event: ReplayEvent, detail: str | None) -> None:
        self._summary.outcomes[outcome] = self._summary.outcomes.get(outcome, 0) + 1
        if outcome in NOT_DONE:
            self._summary.drift["rejected"].add(
                event.user_id or "?", f"{outcome}: {detail}" if detail else outcome
            )
        self._done += 1
        if self._progress is not None:
            self._progress.update(self._done, self._summary.drift["rejected"].count)


def _digest(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:32]


async def _delete_missing(
    options: BackfillOptions,
    summary: Summary,
    table: SourceTable,
    source: asyncpg.Connection,
    ours: asyncpg.Connection,
    applier: _Applier | None,
) -> None:
    """After the whole source was read without error: the guards, then (a real run) the deletions."""
    if summary.stopped is not None:
        summary.refused = "the source was not read to the end; nothing deleted"
        return
    extra = summary.drift["extra"].count
    if summary.rows == 0:
        summary.refused = f"the source table {table.label} has no users; a wrong URL must never empty users"
        return
    if extra == 0:
        return
    total = int(await ours.fetchval(sql.COUNT_USERS))
    if extra > options.max_delete_fraction * total and not options.force:
        summary.refused = (
            f"{extra:,} of {total:,} users would be deleted, more than --max-delete-fraction "
            f"{options.max_delete_fraction:g}; check the source, or add --force"
        )
        return
    if applier is None:
        return  # --dry-run: the extra list is what would be deleted
    # A second merge, fresh: the ids to delete are never all held in memory, and each batch is checked
    # against the source once more just before, so a user who signed up meanwhile stays.
    moment = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    our_ids = _OurIds(ours)
    async for batch in _extra_batches(table, source, our_ids, options.page_size):
        present = await table.present_ids(source, batch)
        await applier.delete([i for i in batch if i not in present], moment)


async def _extra_batches(
    table: SourceTable, source: asyncpg.Connection, our_ids: _OurIds, page_size: int
) -> AsyncIterator[list[str]]:
    pending: list[str] = []
    async for rows in table.pages(source, page_size):
        pending += await our_ids.extras([row.id for row in rows])
        while len(pending) >= _DELETE_BATCH:
            yield pending[:_DELETE_BATCH]
            pending = pending[_DELETE_BATCH:]
    pending += await our_ids.extras([], final=True)
    for start in range(0, len(pending), _DELETE_BATCH):
        yield pending[start : start + _DELETE_BATCH]
