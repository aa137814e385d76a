"""What the routes share while the app runs: the pool, the group commit, the user reader and the webhook
receiver, opened together by the lifespan and closed in the order that loses nothing.

One typed value, on `app.state.services`; each route reads the part it needs from there rather than
through dependency injection, which cost the webhook route about as much as verifying its signature.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from sync_service.config import DatabaseSettings, Settings
from sync_service.database import create_pool, warm_up
from sync_service.ingest.group_commit import GroupCommitter
from sync_service.ops import monitoring
from sync_service.users.reader import UserReader
from sync_service.webhooks.events import Rules
from sync_service.webhooks.receiver import WebhookReceiver
from sync_service.webhooks.signatures import SignatureVerifier

# At most this many connections are opened before the first request (the rest as load needs them).
_WARM_CONNECTIONS = 4


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    database: DatabaseSettings
    pool: asyncpg.Pool
    committer: GroupCommitter
    reader: UserReader
    webhooks: WebhookReceiver  # what the webhook route needs: the verifier, the committer, the rules


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, database: DatabaseSettings, signatures: SignatureVerifier
) -> AsyncIterator[Services]:
    pool = await create_pool(database)
    await warm_up(pool, min(database.pool_size, _WARM_CONNECTIONS))
    committer = GroupCommitter(
        pool,
        batch_size=settings.ingest_batch_size,
        queue_size=settings.ingest_queue_size,
        writers=settings.ingest_writers,
        timeout=settings.ingest_timeout_seconds,
        acquire_timeout=database.acquire_timeout,
        on_batch=monitoring.observe_batch,
    )
    reader = UserReader(
        pool, acquire_timeout=database.acquire_timeout, command_timeout=database.command_timeout
    )
    await committer.start()
    await reader.start()
    receiver = WebhookReceiver(
        verifier=signatures,
        committer=committer,
        rules=Rules.from_settings(settings),
        observe=monitoring.observe_delivery,
    )
    try:
        yield Services(settings, database, pool, committer, reader, receiver)
    finally:
        # uvicorn has stopped accepting and let in-flight requests finish: what is still queued belongs to
        # requests that wait for their answer, so it is committed before the pool closes.
        await committer.close()
        await reader.close()
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except TimeoutError:
            pool.terminate()
