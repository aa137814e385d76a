"""The run's throwaway databases on the PostgreSQL server it is given, and what it reads from them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench.progress import log
from tests.helpers.databases import fresh_database


@contextlib.contextmanager
def throwaway_database(server_url: str, prefix: str = "sync_bench") -> Iterator[str]:
    """A fresh database on the server, `prefix`_<random>, dropped (and said so) at the end."""
    with fresh_database(server_url, prefix) as url:
        try:
            yield url
        finally:
            log(f"dropping database {database_name(url)}")


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def inbox_transactions(url: str) -> int:
    """Transactions that have written the inbox so far: its rows take `processed_at` from now(), which
    is the start time of their transaction."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(DISTINCT processed_at) FROM webhook_events").fetchone()
    return int(row[0]) if row else 0


def server_settings(url: str) -> str:
    """The server settings that move these figures most."""
    with psycopg.connect(url) as conn:
        shown = {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "autovacuum", "synchronous_commit", "fsync", "shared_buffers")
        }
    version = shown.pop("server_version")
    return f"{version} (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(
        (parts.scheme, parts.netloc.replace(f":{parts.password}@", ":***@"), parts.path, "", "")
    )
