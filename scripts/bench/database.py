"""The run's throwaway databases on the PostgreSQL server it is given, and what it reads from them."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench.progress import log


@contextlib.contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    name = f"sync_bench_{secrets.token_hex(4)}"
    admin = with_database(server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"dropped database {name}")


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


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return urlunsplit((scheme, parts.netloc, f"/{name}", parts.query, ""))


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(
        (parts.scheme, parts.netloc.replace(f":{parts.password}@", ":***@"), parts.path, "", "")
    )
