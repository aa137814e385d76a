"""The fault-injection proxy forwards to the server the URL names, over TCP or a Unix socket, and hands out
a TCP loopback URL that really goes through it (nothing in it still names the real server)."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.helpers.tcp_proxy import Target, TcpProxy, target_of


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("postgresql://postgres@127.0.0.1:5432/postgres", Target("127.0.0.1", 5432)),
        ("postgresql://u:p@db.example.com/app", Target("db.example.com", 5432)),
        ("postgresql://u@[::1]:6543/app", Target("::1", 6543)),
        # pgserver's form: empty host, the socket directory in the query.
        ("postgresql://postgres:@/postgres?host=/run/pg-x", Target("/run/pg-x", 5432)),
        ("postgresql://postgres@/postgres?host=/run/pg-x&port=5433", Target("/run/pg-x", 5433)),
        # A percent-encoded socket directory as the host (case kept: it is a path).
        ("postgresql://postgres@%2Frun%2FPg:5433/postgres", Target("/run/Pg", 5433)),
        # The query's host wins over the netloc's, as in libpq.
        ("postgresql://postgres@ignored:5432/postgres?host=/run/pg", Target("/run/pg", 5432)),
        ("postgresql:///postgres", Target("/var/run/postgresql", 5432)),
    ],
)
def test_target_of_reads_the_server_as_libpq_does(url: str, target: Target) -> None:
    assert target_of(url) == target


def test_unix_socket_file_is_libpqs() -> None:
    assert Target("/run/pg-x/", 5433).unix_socket == "/run/pg-x/.s.PGSQL.5433"
    assert Target("127.0.0.1", 5432).unix_socket is None


def test_proxy_url_is_tcp_loopback_without_the_real_server() -> None:
    proxy = TcpProxy("postgresql://postgres:@/app?host=/run/pg-x&port=5433&sslmode=disable")
    assert proxy.url == f"postgresql://postgres:@127.0.0.1:{proxy.port}/app?sslmode=disable"


async def test_proxy_forwards_to_the_test_server_and_down_means_refused(migrated_database_url: str) -> None:
    """Whatever the test server listens on (TCP, or the embedded server's Unix socket only), the proxy
    reaches it, and taking the proxy down refuses connections: no fallback to another server."""
    async with TcpProxy(migrated_database_url) as proxy:
        conn = await asyncpg.connect(proxy.url)
        try:
            name = urlsplit(migrated_database_url).path.removeprefix("/")
            assert await conn.fetchval("SELECT current_database()") == name
            await proxy.go_down()
            with pytest.raises(ConnectionRefusedError):
                await asyncpg.connect(proxy.url, timeout=2)
        finally:
            conn.terminate()
