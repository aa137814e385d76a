"""PostgreSQL failing under the service: stopped, crashed, backends killed, pool exhausted, statements
timing out. Promise: while the database cannot commit, every webhook answer is 503 with Retry-After
(never a 200 without a commit, never a 500); nothing acknowledged is lost; the newest update wins;
the service recovers by itself, without a restart.

All of it runs against a PostgreSQL the test started itself (`faulty_postgres`), never a shared one.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.helpers.databases import connected
from tests.helpers.support import make_settings, start_service
from tests.reliability.load import (
    UpdateStream,
    assert_converged,
    deliver_until_acknowledged,
    run_load,
    send,
    status_counts,
    unexpected_answers,
)
from tests.reliability.own_postgres import OwnPostgres

# Short timeouts so that an outage is noticed (and answered 503) quickly.
FAULT_ENV = {
    "DB_POOL_SIZE": "4",
    "DB_MAX_OVERFLOW": "4",
    "DB_CONNECT_TIMEOUT": "2",
    "DB_ACQUIRE_TIMEOUT": "2",
    "DB_COMMAND_TIMEOUT": "5",
    "INGEST_TIMEOUT_SECONDS": "6",
    "RETRY_AFTER_SECONDS": "3",
}
CLIENTS = 12


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_database_outage_under_load(
    faulty_postgres: OwnPostgres, faulty_database_url: str, mode: str
) -> None:
    """Stop PostgreSQL (`pg_ctl stop -m fast`, or `immediate`, i.e. a crash) for 3 s while 12 clients
    send updates, then start it again."""
    stream = UpdateStream(users=40)
    stop_load = asyncio.Event()
    with start_service(make_settings(faulty_database_url, **FAULT_ENV)) as service:
        async with service.client(limits=_pool_limits()) as client:
            load = asyncio.create_task(run_load(client, stream, workers=CLIENTS, stop=stop_load))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(faulty_postgres.stop, mode)
            down_since = time.monotonic()
            await asyncio.sleep(3.0)
            down_until = time.monotonic()
            await asyncio.to_thread(faulty_postgres.start)
            up_since = time.monotonic()
            await asyncio.sleep(2.5)
            stop_load.set()
            await load

            sent = list(stream.sent)
            assert not unexpected_answers(sent), unexpected_answers(sent)[:5]
            during = [
                a for d in sent for a in d.answers if a.started >= down_since and a.finished <= down_until
            ]
            assert during, "no request was answered while the database was down: the test proved nothing"
            assert {a.status for a in during} == {503}, status_counts(sent)

            # Recovery without a restart: a second after PostgreSQL is back, everything is acknowledged.
            after = [a for d in sent for a in d.answers if a.started >= up_since + 1.0]
            assert after, "no request was sent after the restart"
            assert {a.status for a in after} == {200}, [a for a in after if a.status != 200][:3]

            await deliver_until_acknowledged(client, sent)
    async with connected(faulty_database_url) as conn:
        await assert_converged(conn, sent)


async def test_service_started_while_the_database_is_down(
    faulty_postgres: OwnPostgres, faulty_database_url: str
) -> None:
    """The service starts (and is live, not ready) with PostgreSQL down, answers 503, and works as
    soon as PostgreSQL is back, with no restart."""
    stream = UpdateStream(users=2)
    await asyncio.to_thread(faulty_postgres.stop, "fast")
    with start_service(make_settings(faulty_database_url, **FAULT_ENV)) as service:
        async with service.client() as client:
            assert (await client.get("/health/live")).status_code == 200
            assert (await client.get("/health/ready")).status_code == 503
            early = stream.next()
            answer = await send(client, early)
            assert answer.status == 503, answer
            assert answer.retry_after, answer
            await asyncio.to_thread(faulty_postgres.start)
            assert (await client.get("/health/ready")).status_code == 200
            assert (await send(client, stream.next())).outcome == "applied"
            await deliver_until_acknowledged(client, stream.sent)
    async with connected(faulty_database_url) as conn:
        await assert_converged(conn, stream.sent)


@pytest.mark.slow
async def test_backends_killed_mid_transaction(faulty_database_url: str) -> None:
    """`pg_terminate_backend` on the service's connections, again and again, while it ingests."""
    stream = UpdateStream(users=40)
    stop_load = asyncio.Event()
    killed = 0
    with start_service(make_settings(faulty_database_url, **FAULT_ENV)) as service:
        async with service.client(limits=_pool_limits()) as client, connected(faulty_database_url) as admin:
            load = asyncio.create_task(run_load(client, stream, workers=CLIENTS, stop=stop_load))
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                killed += await admin.fetchval(
                    """
                    SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                    FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()
                      AND backend_type = 'client backend' AND state <> 'idle'
                    """
                )
            stop_load.set()
            await load
            sent = list(stream.sent)
            assert not unexpected_answers(sent), unexpected_answers(sent)[:5]
            counts = status_counts(sent)
            assert killed > 0, "no backend was killed while busy: the test proved nothing"
            assert counts["503"] > 0, (killed, counts)
            assert counts["applied"] > 0, counts

            await deliver_until_acknowledged(client, sent)
        async with connected(faulty_database_url) as conn:
            await assert_converged(conn, sent)


async def test_pool_exhaustion_answers_503(faulty_database_url: str) -> None:
    """One pooled connection (DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0), held by a batch stuck on a lock:
    other deliveries cannot get a connection within DB_ACQUIRE_TIMEOUT and are answered 503; the
    stuck one is answered 503 after INGEST_TIMEOUT_SECONDS. Nothing is a 500, and once the lock goes,
    retries converge (the stuck delivery did commit later: its retry is a duplicate)."""
    env = FAULT_ENV | {
        "DB_POOL_SIZE": "1",
        "DB_MAX_OVERFLOW": "0",
        "DB_ACQUIRE_TIMEOUT": "0.5",
        "INGEST_TIMEOUT_SECONDS": "2",
        "INGEST_WRITERS": "2",
        "DB_COMMAND_TIMEOUT": "30",
    }
    stream = UpdateStream(users=4)
    with start_service(make_settings(faulty_database_url, **env)) as service:
        async with service.client() as client, connected(faulty_database_url) as locker:
            locker_tx = locker.transaction()
            await locker_tx.start()
            await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            # One user each: two updates of one user retried concurrently may land newest first, and the
            # older is then rightly stale (the stream's random users had made this test flaky).
            stuck = stream.next(stream.user_ids[0])
            stuck_answer = asyncio.create_task(send(client, stuck))
            await asyncio.sleep(0.3)  # its batch now holds the only connection, waiting on the lock

            others = [stream.next(user_id) for user_id in stream.user_ids[1:]]
            started = time.monotonic()
            answers = await asyncio.gather(*(send(client, d) for d in others))
            waited = time.monotonic() - started
            ready = await client.get("/health/ready")
            stuck_result = await stuck_answer

            assert [a.status for a in answers] == [503, 503, 503], answers
            assert all(a.retry_after for a in answers)
            assert waited < 1.8, f"acquire should time out after 0.5 s, took {waited:.1f} s"
            assert stuck_result.status == 503, stuck_result
            assert stuck_result.retry_after, stuck_result
            assert ready.status_code == 503, ready.text

            await locker_tx.rollback()
            await deliver_until_acknowledged(client, stream.sent)
            assert stuck.answers[-1].outcome == "duplicate", stuck.answers
            assert [d.answers[-1].outcome for d in others] == ["applied"] * 3
            assert (await client.get("/health/ready")).status_code == 200
        async with connected(faulty_database_url) as conn:
            await assert_converged(conn, stream.sent)


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("command_timeout", id="DB_COMMAND_TIMEOUT"),
        pytest.param("statement_timeout", id="server-statement_timeout"),
        pytest.param("lock_timeout", id="server-lock_timeout"),
    ],
)
async def test_statement_timeout_answers_503_then_recovers(faulty_database_url: str, how: str) -> None:
    """The users table is locked by someone else, so the batch's statement cannot finish in time:
    the client-side DB_COMMAND_TIMEOUT, or the server's statement_timeout / lock_timeout set by an
    operator, cancels it. Answer 503 (not 500, not a hang), write nothing, recover when it is gone."""
    env = FAULT_ENV | {
        "DB_COMMAND_TIMEOUT": "1" if how == "command_timeout" else "30",
        "INGEST_TIMEOUT_SECONDS": "8",
    }
    if how != "command_timeout":
        async with connected(faulty_database_url) as conn:
            database = await conn.fetchval("SELECT current_database()")
            await conn.execute(f"ALTER DATABASE \"{database}\" SET {how} = '700ms'")
    stream = UpdateStream(users=2)
    with start_service(make_settings(faulty_database_url, **env)) as service:
        async with service.client() as client, connected(faulty_database_url) as locker:
            await locker.execute("SET statement_timeout = 0; SET lock_timeout = 0")
            locker_tx = locker.transaction()
            await locker_tx.start()
            await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            blocked = stream.next(stream.user_ids[0])
            answer = await send(client, blocked)
            assert answer.status == 503, answer
            assert answer.retry_after, answer
            assert answer.finished - answer.started < 5, "answered by the ingest timeout, not the statement's"
            await locker_tx.rollback()

            assert await locker.fetchval("SELECT count(*) FROM users") == 0
            assert await locker.fetchval("SELECT count(*) FROM webhook_events") == 0

            later = stream.next(stream.user_ids[1])
            assert (await send(client, later)).outcome == "applied"
            await deliver_until_acknowledged(client, stream.sent)
            assert blocked.answers[-1].outcome == "applied"
        async with connected(faulty_database_url) as conn:
            await assert_converged(conn, stream.sent)


def _pool_limits() -> httpx.Limits:
    return httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
