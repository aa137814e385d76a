"""Extra throwaway databases on the test server, for tests that need a schema other than head."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg

from tests.helpers.ports import free_port


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "sync_service_extra") -> Iterator[str]:
    """An empty database (no migrations applied) named `prefix`_<random>, dropped afterwards (its
    connections closed by force). The tests' and the benchmarks' one way to make one."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = with_database(server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def unreachable_database_url() -> str:
    """A URL nothing listens on (a port just found free), so connecting is refused at once."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    """One asyncpg connection for the block, closed afterwards."""
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def users_locked(url: str) -> AsyncIterator[None]:
    """The users table locked (ACCESS EXCLUSIVE) for the block: every statement touching it waits."""
    async with connected(url) as locker:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await lock.rollback()
