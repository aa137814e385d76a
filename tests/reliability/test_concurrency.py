"""Concurrent deliveries: two service instances (each its own uvicorn server, event loop and asyncpg
pool, like two processes) on one database, duplicate storms, and out-of-order updates of one user.

Promise: each message id is applied at most once whoever receives it (one `applied` or `stale` answer
per message id, every other answer `duplicate`), and the newest update of each user wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator, Sequence

import asyncpg
import httpx
import pytest

from tests.helpers.support import ServiceUnderTest, make_settings, start_service
from tests.reliability.load import (
    Delivery,
    UpdateStream,
    answers_by_message,
    assert_converged,
    send,
    status_counts,
    unexpected_answers,
)

ENV = {"DB_POOL_SIZE": "4", "DB_MAX_OVERFLOW": "4"}


@pytest.fixture
def two_instances(migrated_database_url: str, db: asyncpg.Connection) -> Iterator[list[ServiceUnderTest]]:
    with (
        start_service(make_settings(migrated_database_url, **ENV)) as first,
        start_service(make_settings(migrated_database_url, **ENV)) as second,
    ):
        yield [first, second]


@contextlib.asynccontextmanager
async def clients(services: Sequence[ServiceUnderTest]):  # type: ignore[no-untyped-def]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(s.client(limits=limits)) for s in services]


async def send_all(
    plan: list[tuple[Delivery, int]], instances: list[httpx.AsyncClient], *, concurrency: int
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(delivery: Delivery, instance: int) -> None:
        async with gate:
            await send(instances[instance], delivery, instance=instance)

    await asyncio.gather(*(one(d, i) for d, i in plan))


def assert_applied_once(deliveries: Sequence[Delivery]) -> None:
    """Per message id: exactly one answer decided it (applied or stale); all others are duplicates."""
    for message_id, answers in answers_by_message(deliveries).items():
        outcomes = sorted(a.outcome or str(a.status) for a in answers)
        deciding = [o for o in outcomes if o in ("applied", "stale")]
        assert len(deciding) == 1, (message_id, outcomes)
        assert outcomes.count("duplicate") == len(outcomes) - 1, (message_id, outcomes)


@pytest.mark.slow
async def test_two_instances_split_and_doubled_deliveries(
    two_instances: list[ServiceUnderTest], db: asyncpg.Connection
) -> None:
    """400 updates of 25 users, shuffled; each goes to one instance or the other, and a third of them
    to both at once (and some twice to the same one), 32 requests in flight."""
    rng = random.Random(11)
    stream = UpdateStream(users=25, seed=11)
    deliveries = [stream.next() for _ in range(400)]
    plan: list[tuple[Delivery, int]] = []
    for delivery in deliveries:
        first = rng.randrange(2)
        plan.append((delivery, first))
        roll = rng.random()
        if roll < 0.33:
            plan.append((delivery, 1 - first))
        elif roll < 0.43:
            plan.append((delivery, first))
    rng.shuffle(plan)

    async with clients(two_instances) as instances:
        await send_all(plan, instances, concurrency=32)

    assert not unexpected_answers(deliveries), unexpected_answers(deliveries)[:5]
    assert {a.status for d in deliveries for a in d.answers} == {200}, status_counts(deliveries)
    counts = status_counts(deliveries)
    assert counts["duplicate"] >= len(plan) - len(deliveries), counts
    assert {a.instance for d in deliveries for a in d.answers if a.outcome == "applied"} == {0, 1}
    assert_applied_once(deliveries)
    await assert_converged(db, deliveries)
    await _assert_stale_only_when_superseded(db, deliveries)


@pytest.mark.parametrize("instances", [1, 2], ids=["one-instance", "two-instances"])
async def test_storm_of_50_copies_is_applied_once(
    two_instances: list[ServiceUnderTest], db: asyncpg.Connection, instances: int
) -> None:
    stream = UpdateStream(users=1, seed=5)
    delivery = stream.next()
    plan = [(delivery, i % instances) for i in range(50)]
    async with clients(two_instances) as clients_:
        await send_all(plan, clients_, concurrency=50)
    outcomes = sorted(a.outcome or str(a.status) for a in delivery.answers)
    assert outcomes.count("applied") == 1, status_counts([delivery])
    assert outcomes.count("duplicate") == 49, status_counts([delivery])
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1
    assert await db.fetchval("SELECT attempts FROM webhook_events") == 1
    await assert_converged(db, [delivery])


async def test_concurrent_updates_of_one_user_end_at_the_newest(
    two_instances: list[ServiceUnderTest], db: asyncpg.Connection
) -> None:
    """100 updates of one user sent all at once, in random order, to both instances."""
    rng = random.Random(3)
    stream = UpdateStream(users=1, seed=3)
    deliveries = [stream.next() for _ in range(100)]
    plan = [(d, rng.randrange(2)) for d in deliveries]
    rng.shuffle(plan)
    async with clients(two_instances) as instances:
        await send_all(plan, instances, concurrency=100)
    assert {a.status for d in deliveries for a in d.answers} == {200}, status_counts(deliveries)
    assert deliveries[-1].answers[0].outcome == "applied"
    assert_applied_once(deliveries)
    await assert_converged(db, deliveries)
    await _assert_stale_only_when_superseded(db, deliveries)


async def _assert_stale_only_when_superseded(db: asyncpg.Connection, deliveries: Sequence[Delivery]) -> None:
    """A `stale` answer is right only if a newer update of that user had been applied."""
    applied_seqs: dict[str, list[int]] = {}
    for d in deliveries:
        if any(a.outcome == "applied" for a in d.answers):
            applied_seqs.setdefault(d.user_id, []).append(d.seq)
    for d in deliveries:
        if any(a.outcome == "stale" for a in d.answers):
            assert any(seq > d.seq for seq in applied_seqs.get(d.user_id, [])), (d.message_id, d.seq)
    statuses = dict(await db.fetch("SELECT message_id, status FROM webhook_events"))
    for d in deliveries:
        decided = next(a.outcome for a in d.answers if a.outcome in ("applied", "stale"))
        assert statuses[d.message_id] == decided, (d.message_id, decided, statuses[d.message_id])
