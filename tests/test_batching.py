"""The batching shared by the group commit and the user reads, on a real pool: bounds, deadlines, failures.

The work function is a real one that waits for the test's go-ahead, so that batches can be held open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import pytest

from sync_service.batching import Batcher, Labels
from sync_service.errors import DatabaseUnavailable, Overloaded
from sync_service.users.reader import UserReader


class Gate:
    """apply(): waits until opened, then answers each item with the database's view of it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.batches: list[list[int]] = []

    async def apply(self, conn: asyncpg.Connection, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.opened.wait()
        return list(await conn.fetchval("SELECT array_agg(x * 10) FROM unnest($1::int[]) AS x", items))


def calling(
    pool: asyncpg.Pool,
    apply: Callable[[asyncpg.Connection, Sequence[int]], Awaitable[list[int]]],
    **settings: float,
) -> Batcher[int, int]:
    """A Batcher whose batches are handed to `apply`."""
    defaults: dict[str, float] = {"batch_size": 10, "queue_size": 100, "workers": 1, "timeout": 5}
    defaults.update(settings)
    return Batcher(
        pool,
        apply,
        labels=Labels(name="test", worker="test", queue_full="test queue is full", timed_out="timed out"),
        batch_size=int(defaults["batch_size"]),
        queue_size=int(defaults["queue_size"]),
        workers=int(defaults["workers"]),
        timeout=defaults["timeout"],
        acquire_timeout=1,
    )


@pytest.fixture
async def pool(migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(migrated_database_url, min_size=0, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def test_items_that_arrive_together_share_a_batch_and_get_their_own_results(pool: asyncpg.Pool) -> None:
    gate = Gate()
    work = calling(pool, gate.apply)
    await work.start()
    first = asyncio.create_task(work.submit(1))
    await asyncio.sleep(0.1)  # the worker holds 1 behind the gate; 2..25 queue up meanwhile
    rest = [asyncio.create_task(work.submit(i)) for i in range(2, 26)]
    await asyncio.sleep(0.1)
    gate.opened.set()
    assert await asyncio.gather(first, *rest) == [i * 10 for i in range(1, 26)]
    assert gate.batches == [[1], list(range(2, 12)), list(range(12, 22)), list(range(22, 26))]
    await work.close()


async def test_full_queue_and_late_answers_are_overloaded(pool: asyncpg.Pool) -> None:
    gate = Gate()
    work = calling(pool, gate.apply, queue_size=1, timeout=0.3)
    await work.start()
    held = asyncio.create_task(work.submit(1))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(work.submit(2))
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded, match="test queue is full"):
        await work.submit(3)
    for task in (held, queued):
        with pytest.raises(Overloaded, match="timed out"):
            await task
    gate.opened.set()  # the late batches finish; their expired waiters are skipped
    await asyncio.sleep(0.2)
    assert await work.submit(4) == 40
    await work.close()


async def test_database_failure_answers_the_whole_batch_unavailable(migrated_database_url: str) -> None:
    pool = await asyncpg.create_pool(migrated_database_url, min_size=0, max_size=1)
    try:

        async def lose_the_connection(conn: asyncpg.Connection, items: Sequence[int]) -> list[int]:
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            return list(items)

        work = calling(pool, lose_the_connection, queue_size=10)
        await work.start()
        answers = await asyncio.gather(*(work.submit(i) for i in range(3)), return_exceptions=True)
        assert all(isinstance(a, DatabaseUnavailable) for a in answers), answers
        await work.close()
    finally:
        await pool.close()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_bug_is_unavailable_not_acknowledged(pool: asyncpg.Pool) -> None:
    async def broken(conn: asyncpg.Connection, items: Sequence[int]) -> list[int]:
        raise ZeroDivisionError

    work = calling(pool, broken, queue_size=10)
    await work.start()
    logger = logging.getLogger("sync_service.batching")
    records = Records()
    logger.addHandler(records)
    try:
        with pytest.raises(DatabaseUnavailable):
            await work.submit(1)
    finally:
        logger.removeHandler(records)
    assert [r.exc_info[0] for r in records.records if r.exc_info] == [ZeroDivisionError]
    await work.close()


async def test_close_answers_everything_queued_then_refuses(pool: asyncpg.Pool) -> None:
    gate = Gate()
    work = calling(pool, gate.apply, batch_size=2)
    await work.start()
    tasks = [asyncio.create_task(work.submit(i)) for i in range(5)]
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(work.close())
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded, match="shutting down"):
        await work.submit(9)
    gate.opened.set()
    await closing
    assert await asyncio.gather(*tasks) == [0, 10, 20, 30, 40]


async def test_user_reader_answers_none_for_unknown_ids(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO users (id, email, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        "u1",
        "u1@example.com",
        # Sub-millisecond digits are cut, not rounded, and the year has 4 digits, as in JavaScript's
        # toISOString (Better Auth's format).
        datetime(5, 1, 2, 3, 4, 5, 6999, tzinfo=UTC),
    )
    reader = UserReader(pool, acquire_timeout=1, command_timeout=5)
    await reader.start()
    unknown, known, again = await asyncio.gather(
        reader.submit("nope"), reader.submit("u1"), reader.submit("u1")
    )
    await reader.close()
    assert unknown is None
    assert known == again
    assert known is not None
    assert (known.created_at, known.updated_at) == ("0005-01-02T03:04:05.006Z", "0005-01-02T03:04:05.006Z")
