"""Schema migrations: yoyo SQL files in `migrations/`, applied over psycopg 3.

yoyo's own lock is a row in a table it creates, so two processes starting on an empty database can
race while creating that table. A PostgreSQL advisory lock, held on a connection of our own for the
whole run, serialises them first. Point MIGRATIONS_DATABASE_URL at a direct (non-PgBouncer) host when
DATABASE_URL goes through a transaction pooler: session advisory locks need a real session.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from yoyo import get_backend, read_migrations

from sync_service.database import connection_failure
from sync_service.errors import MigrationError

# Any fixed 64-bit number; it only has to differ from other applications' advisory locks.
_MIGRATION_LOCK_KEY = 0x5953_4E43_4D49_4752  # "YSNCMIGR"


def migrations_dir() -> Path:
    """The SQL files: packaged inside the wheel, or at the repository root in a checkout."""
    package = Path(__file__).resolve().parent.parent  # sync_service/
    packaged = package / "migrations"
    if packaged.is_dir():
        return packaged
    return package.parent / "migrations"


@functools.cache
def expected_migration_ids() -> frozenset[str]:
    """The ids the schema at head has applied (file names without `.sql`)."""
    return frozenset(
        p.name.removesuffix(".sql")
        for p in migrations_dir().glob("*.sql")
        if not p.name.endswith(".rollback.sql")
    )


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    migration_id: str
    applied: bool


def apply(yoyo_url: str, *, variable: str = "DATABASE_URL") -> list[str]:
    """Apply every pending migration; returns the ids applied now. `variable` is where the URL came
    from, for the error an operator reads."""
    with _locked_backend(yoyo_url, variable) as backend:
        pending = backend.to_apply(read_migrations(str(migrations_dir())))
        backend.apply_migrations(pending)
        return [m.id for m in pending]


def rollback(yoyo_url: str, count: int, *, variable: str = "DATABASE_URL") -> list[str]:
    """Roll back the newest `count` applied migrations; returns their ids, newest first."""
    if count < 1:
        raise MigrationError("--rollback needs a positive number of migrations")
    with _locked_backend(yoyo_url, variable) as backend:
        applied = backend.to_rollback(read_migrations(str(migrations_dir())))
        chosen = applied[:count]
        backend.rollback_migrations(chosen)
        return [m.id for m in chosen]


def status(yoyo_url: str, *, variable: str = "DATABASE_URL") -> list[MigrationStatus]:
    """Every migration file in order, and whether it is applied."""
    with _backend(yoyo_url, variable) as backend:
        migrations = read_migrations(str(migrations_dir()))
        applied = {m.id for m in migrations if backend.is_applied(m)}
        return [MigrationStatus(m.id, m.id in applied) for m in migrations]


@contextlib.contextmanager
def _backend(yoyo_url: str, variable: str) -> Iterator[Any]:
    try:
        backend = get_backend(yoyo_url)
    except psycopg.Error as exc:
        raise MigrationError(connection_failure(variable, yoyo_url, exc)) from exc
    with backend:
        yield backend


@contextlib.contextmanager
def _locked_backend(yoyo_url: str, variable: str) -> Iterator[Any]:
    libpq_url = yoyo_url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        lock_conn = psycopg.connect(libpq_url, autocommit=True)
    except psycopg.Error as exc:
        raise MigrationError(connection_failure(variable, yoyo_url, exc)) from exc
    with lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        try:
            with _backend(yoyo_url, variable) as backend, backend.lock():
                yield backend
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
