"""The asyncpg pool: created and closed by a lifespan, connections taken with a bounded wait.

Also the one place that decides which database errors mean "PostgreSQL is unavailable, try later"
(answered 503) as opposed to a bug or a bad value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg

from sync_service.config import DatabaseSettings
from sync_service.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# Failures of the connection or the server, not of the statement: the same work can succeed later.
_UNAVAILABLE = (
    OSError,  # refused, reset, unreachable, DNS
    TimeoutError,  # connect, acquire or command timeout
    asyncpg.InterfaceError,  # connection closed under us, pool closing
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.InsufficientResourcesError,  # 53xxx: too many connections, out of memory, disk full
    asyncpg.exceptions.OperatorInterventionError,  # 57xxx: admin shutdown, cannot connect now, canceled
    asyncpg.exceptions.TransactionRollbackError,  # 40xxx: serialization failure, deadlock
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a failover left us on a replica
    asyncpg.exceptions.InternalClientError,
)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, _UNAVAILABLE)


async def create_pool(settings: DatabaseSettings) -> asyncpg.Pool:
    """A pool that opens connections on demand, so the service starts (and reports not ready) while
    PostgreSQL is down, and recovers by itself when it returns."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn=settings.asyncpg_dsn,
        min_size=0,
        max_size=settings.pool_size + settings.max_overflow,
        max_inactive_connection_lifetime=settings.pool_recycle,
        # PgBouncer in transaction mode cannot keep named prepared statements across transactions.
        statement_cache_size=1024 if settings.statement_cache else 0,
        command_timeout=settings.command_timeout,
        timeout=settings.connect_timeout,
        ssl=_ssl_for(settings.asyncpg_dsn),
        reset=_keep_session,
        # With cached prepared statements PostgreSQL switches to one generic plan after five runs, and on
        # a young database that plan is a sequential scan for `id = ANY($1) OR email = ANY($2)`: every
        # batch then reads the whole table (measured: 139 -> 1,294 us per event from 2k to 12k users).
        # Custom plans keep the index lookups. Without the cache (PgBouncer) every plan is custom anyway,
        # and PgBouncer may refuse unknown startup parameters.
        server_settings={"plan_cache_mode": "force_custom_plan"} if settings.statement_cache else None,
    )
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset round trip (`RESET ALL; UNLISTEN *; CLOSE ALL; ...`).

    The service's pool never changes session state (no SET, LISTEN, cursors or session advisory locks;
    `replay --direct` SETs its planner settings on a pool of its own), and asyncpg still rolls back an
    unfinished transaction before calling this; skipping the extra query makes each acquire/release
    several times cheaper.
    """


async def warm_up(pool: asyncpg.Pool, count: int) -> None:
    """Open up to `count` connections now (DB_POOL_SIZE), best effort."""

    async def _one() -> None:
        async with pool.acquire():
            await asyncio.sleep(0)

    results = await asyncio.gather(*(_one() for _ in range(count)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        log.warning(
            "database not reachable at startup; connections will be opened on demand",
            extra={"error": failures[0].__class__.__name__},
        )


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool, wait_seconds: float) -> AsyncIterator[asyncpg.Connection]:
    """A connection from the pool; `DatabaseUnavailable` when none can be had in `wait_seconds`."""
    try:
        conn = await pool.acquire(timeout=wait_seconds)
    except Exception as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailable(exc.__class__.__name__) from exc
        raise
    try:
        yield conn
    finally:
        # release() resets the session; if the connection broke, the pool discards it and reconnects later.
        with contextlib.suppress(Exception):
            await pool.release(conn)


def _ssl_for(dsn: str) -> ssl.SSLContext | None:
    """asyncpg reads sslmode from the DSN itself; we only supply a system-CA context for verify-full
    without a root certificate file, which libpq would otherwise require."""
    if "sslmode=verify-full" in dsn and "sslrootcert=" not in dsn:
        return ssl.create_default_context()
    return None


def connection_failure(variable: str, url: str, exc: BaseException) -> str:
    """One line for an operator: which variable, where (password masked), what PostgreSQL or the OS
    said, and where to look next. asyncpg's and libpq's messages name the host and user, never the
    password."""
    from sync_service.config import redact_url

    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    elif isinstance(exc, TimeoutError):
        reason = "timed out"
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0] if lines else exc.__class__.__name__
    reason = reason.removeprefix("connection failed: ")
    try:
        parts = urlsplit(url)
        where = f"{parts.hostname or 'local socket'}:{parts.port or 5432}{parts.path or '/'}"
    except ValueError:
        where = redact_url(url)
    return f"cannot connect to {variable} ({where}): {reason}; see `sync-service check-config`"
