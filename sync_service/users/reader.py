"""Users as the read API shows them: rows from PostgreSQL, snake_case JSON, read in batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import asyncpg
import msgspec

from sync_service import sql
from sync_service.batching import Batcher, Labels

# Better Auth's own date format (UTC, milliseconds, "Z"), so the frontend sees the values it sent.
# (`extra_json_schema["extra"]` is how Litestar takes extra OpenAPI schema keys from a msgspec field.)
IsoDateTime = Annotated[
    str,
    msgspec.Meta(examples=["2026-11-27T11:58:53.300Z"], extra_json_schema={"extra": {"format": "date-time"}}),
]

# Concurrent reads of one batch: `id = ANY(...)` with this many ids is still a handful of index lookups.
READ_BATCH_SIZE = 256
# Reads waiting for a batch before new ones are answered 503 (uvicorn's own limit, 1000 open requests by
# default, is usually reached first).
READ_QUEUE_SIZE = 4096
# Batches in flight at once, each on its own pooled connection. One: it takes every read that came in during
# its round trip as the next batch. A second reader took reads as they arrived, so batches were small and
# each paid a round trip of its own (measured: 175-200 against 212-288 us of CPU per read). A read stuck
# behind a table lock holds up the reads queued after it until their deadline; a second reader would
# have been stuck on the same lock.
READERS = 1


class User(msgspec.Struct, frozen=True):
    """`{"id", "email", "email_verified", "name", "image", "created_at", "updated_at"}`.

    Built positionally from a `sql.SELECT_USERS` row, whose columns are in this order.
    """

    id: str
    email: str
    email_verified: bool
    name: str | None
    image: str | None
    created_at: IsoDateTime
    updated_at: IsoDateTime


class UserReader(Batcher[str, User | None]):
    """`await reader.submit(user_id)`: the user, or None when there is no such row.

    Concurrent reads share one `SELECT ... WHERE id = ANY(...)` and one pooled connection, so a read costs
    neither a connection checkout nor a round trip of its own. A read is sent to PostgreSQL only after
    its request arrived, so it sees every write committed before that (read-your-writes).
    """

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float, command_timeout: float) -> None:
        super().__init__(
            pool,
            read_users,
            labels=_LABELS,
            batch_size=READ_BATCH_SIZE,
            queue_size=READ_QUEUE_SIZE,
            workers=READERS,
            # As long as a read could take before batching: a connection, then the statement.
            timeout=acquire_timeout + command_timeout,
            acquire_timeout=acquire_timeout,
        )


_LABELS = Labels(
    name="read",
    worker="user-reader",
    queue_full="read queue is full",
    timed_out="timed out waiting for the read",
)


async def read_users(conn: asyncpg.Connection, user_ids: Sequence[str]) -> list[User | None]:
    """One batch of reads: `fetch_users`, except that an id PostgreSQL refuses fails only its own read."""
    try:
        return await fetch_users(conn, user_ids)
    except _PER_ITEM_ERRORS:
        if len(user_ids) == 1:
            return [None]  # the one id PostgreSQL refused names no user
    # One id refused (the routes let none through that could be): the others are read on their own,
    # so it never fails another's request; a real outage still fails them all (503).
    return [(await read_users(conn, [user_id]))[0] for user_id in user_ids]


# Errors an id's own value can cause (22xxx: text PostgreSQL refuses; 54xxx: too long for an index).
_PER_ITEM_ERRORS = (asyncpg.exceptions.DataError, asyncpg.exceptions.ProgramLimitExceededError)


async def fetch_users(conn: asyncpg.Connection, user_ids: Sequence[str]) -> list[User | None]:
    """The user of each id, in order (None where there is none); an id may appear more than once."""
    users = {row[0]: User(*row) for row in await conn.fetch(sql.SELECT_USERS, user_ids)}
    return [users.get(user_id) for user_id in user_ids]
