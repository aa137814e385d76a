"""Shared fixtures: a real PostgreSQL, a throwaway database per run, the service on a loopback port.

PostgreSQL comes from, in order: TEST_DATABASE_URL (a server we may create databases on); a
testcontainers PostgreSQL where a Docker engine answers; an embedded PostgreSQL (pgserver wheel).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from sync_service.ops import migrations
from sync_service.ops.logs import HANDLER_NAME
from tests.helpers.databases import fresh_database
from tests.helpers.support import ServiceUnderTest, make_settings, start_service

pytest_plugins: list[str] = []


def _server_url() -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL", "").strip():
        yield url
        return
    if _docker_answers():
        yield from _testcontainers_url()
        return
    from sync_service.errors import ConfigError
    from sync_service.ops.embedded import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="sync-service-pg-") as data_dir:
        try:
            with embedded_postgres(Path(data_dir) / "pg") as url:
                yield url
        except ConfigError:
            pytest.exit("no PostgreSQL for tests: set TEST_DATABASE_URL, start Docker or install pgserver", 2)


def _docker_answers() -> bool:
    """Whether a Docker engine answers /_ping (the CLI alone, without an engine, is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            parts = urlsplit(host)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (parts.hostname or "127.0.0.1", parts.port or 2375)
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"OK" in sock.recv(1024)
    except OSError:
        return False


def _testcontainers_url() -> Iterator[str]:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        from testcontainers.postgres import PostgresContainer
    container = PostgresContainer("postgres:16-alpine", driver=None)
    container.start()
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    yield from _server_url()


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database for this run (migrated by `migrated_database_url`); dropped afterwards."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def fresh_database_url(postgres_server_url: str) -> Iterator[str]:
    """An empty database of a test's own, without the schema; dropped afterwards."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str) -> str:
    migrations.apply(make_settings(database_url).database.yoyo_url)  # type: ignore[union-attr]
    return database_url


@pytest.fixture(autouse=True)
def _cli_logging_undone() -> Iterator[None]:
    """`cli.main()` run in-process points the root logger at the stderr pytest captured for that one test;
    taken off afterwards, or a later test's server thread logs into a closed stream."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [handler for handler in root.handlers if handler.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database with empty tables."""
    conn = await asyncpg.connect(migrated_database_url)
    await conn.execute("TRUNCATE users, webhook_events, deleted_users")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def service(migrated_database_url: str, db: asyncpg.Connection) -> Iterator[ServiceUnderTest]:
    """The service on a loopback port, default settings, empty tables."""
    with start_service(make_settings(migrated_database_url)) as running:
        yield running
