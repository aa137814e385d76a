"""A loopback TCP proxy in front of PostgreSQL that a test can take down and bring back up.

Taking it down closes every proxied connection and refuses new ones, which is what the service sees
when its database host dies; bringing it up again is the database coming back on the same address.

The server behind it may listen on TCP or on a Unix socket only (the embedded PostgreSQL: pgserver
hands out `postgresql://postgres:@/postgres?host=/tmp/...`); either way the proxy's own URL is a TCP
loopback URL, so the service under test really goes through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from tests.helpers.ports import free_port

# Query parameters that name the server (libpq's, which asyncpg and psycopg honour too). They would
# take precedence over the proxy's address in the URL handed out, so they are dropped from it.
_SERVER_PARAMS = ("host", "hostaddr", "port")


@dataclass(frozen=True)
class Target:
    """Where the real server listens: a TCP host and port, or the Unix socket file of a socket directory."""

    host: str
    port: int

    @property
    def unix_socket(self) -> str | None:
        """`<dir>/.s.PGSQL.<port>` when the host is a socket directory (an absolute path), as in libpq."""
        return f"{self.host.rstrip('/')}/.s.PGSQL.{self.port}" if self.host.startswith("/") else None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if (path := self.unix_socket) is not None:
            return await asyncio.open_unix_connection(path)
        return await asyncio.open_connection(self.host, self.port)


def target_of(database_url: str) -> Target:
    """The server a libpq-style URL points at. The host is the netloc's (percent-encoded for a socket
    directory: `postgresql://%2Fvar%2Frun%2Fpostgresql/db`) or the `host` query parameter, which wins
    as in libpq; likewise the port. No host at all means libpq's default, the Unix socket directory."""
    parts = urlsplit(database_url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    hostport = parts.netloc.rsplit("@", 1)[-1]
    if hostport.startswith("["):  # [IPv6]:port
        host, _, rest = hostport[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    host = params.get("host") or unquote(host)
    port = params.get("port") or port
    if "," in host or "," in port:
        raise ValueError(f"one server expected, not several: {host}:{port}")
    return Target(host or "/var/run/postgresql", int(port or 5432))


class TcpProxy:
    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        self.target = target_of(database_url)
        self.port = free_port()
        netloc = parts.netloc.rsplit("@", 1)
        auth = netloc[0] + "@" if len(netloc) == 2 else ""
        query = urlencode(
            [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _SERVER_PARAMS]
        )
        self.url = urlunsplit((parts.scheme, f"{auth}127.0.0.1:{self.port}", parts.path, query, ""))
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TcpProxy:
        await self.go_up()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.go_down()

    async def go_up(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def go_down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await self.target.connect()
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, upstream_writer))
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
        self._writers.discard(writer)
