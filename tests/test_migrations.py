"""yoyo migrations: apply, roll back, apply again; the resulting schema; concurrent migrators."""

from __future__ import annotations

import threading

import psycopg
import pytest

from sync_service.ops import migrations
from tests.helpers.support import make_settings

ALL = [
    "0001_create_users",
    "0002_create_webhook_events",
    "0003_create_deleted_users",
    "0004_serialize_user_writes",
]


def _yoyo(url: str) -> str:
    database = make_settings(url).database
    assert database is not None
    return database.yoyo_url


def _columns(url: str, table: str) -> dict[str, tuple[str, str, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        ).fetchall()
    return {name: (kind, nullable, default) for name, kind, nullable, default in rows}


def _indexes(url: str, table: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", (table,)
        ).fetchall()
    return dict(rows)


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows if not r[0].startswith(("_yoyo", "yoyo"))}


def _functions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        ).fetchall()
    return {r[0] for r in rows}


def test_apply_rollback_apply_and_resulting_schema(fresh_database_url: str) -> None:
    url = _yoyo(fresh_database_url)
    assert migrations.apply(url) == ALL
    assert migrations.apply(url) == []
    assert [s.applied for s in migrations.status(url)] == [True] * len(ALL)
    assert _functions(fresh_database_url) == {"sync_service_erased", "sync_service_guard_batch"}

    assert migrations.rollback(url, len(ALL)) == ALL[::-1]
    assert _tables(fresh_database_url) == set()
    assert _functions(fresh_database_url) == set()
    assert [s.applied for s in migrations.status(url)] == [False] * len(ALL)

    assert migrations.apply(url) == ALL
    assert _tables(fresh_database_url) == {"users", "webhook_events", "deleted_users"}
    assert _columns(fresh_database_url, "deleted_users") == {
        "id": ("text", "NO", None),
        "deleted_at": ("timestamp with time zone", "NO", "now()"),
    }

    users = _columns(fresh_database_url, "users")
    assert users == {
        "id": ("text", "NO", None),
        "email": ("text", "NO", None),
        "email_verified": ("boolean", "NO", "false"),
        "name": ("text", "YES", None),
        "image": ("text", "YES", None),
        "created_at": ("timestamp with time zone", "NO", "now()"),
        "updated_at": ("timestamp with time zone", "NO", "now()"),
    }
    user_indexes = _indexes(fresh_database_url, "users")
    assert "UNIQUE INDEX users_pkey ON public.users USING btree (id)" in user_indexes["users_pkey"]
    assert (
        "UNIQUE INDEX users_email_key ON public.users USING btree (email)" in user_indexes["users_email_key"]
    )

    events = _columns(fresh_database_url, "webhook_events")
    assert events["message_id"] == ("text", "NO", None)
    assert events["payload"] == ("jsonb", "NO", None)
    assert events["received_at"] == ("timestamp with time zone", "NO", "now()")
    assert {"event_type", "user_id", "event_timestamp", "status", "error", "attempts"} <= events.keys()
    event_indexes = _indexes(fresh_database_url, "webhook_events")
    assert set(event_indexes) == {
        "webhook_events_pkey",
        "webhook_events_received_at_idx",
        "webhook_events_status_received_at_idx",
        "webhook_events_user_id_received_at_idx",
        "webhook_events_unowned_email_idx",
    }


def test_rollback_one_then_list(fresh_database_url: str) -> None:
    url = _yoyo(fresh_database_url)
    migrations.apply(url)
    assert migrations.rollback(url, 3) == [
        "0004_serialize_user_writes", "0003_create_deleted_users", "0002_create_webhook_events",
    ]  # fmt: skip
    assert [(s.migration_id, s.applied) for s in migrations.status(url)] == [
        ("0001_create_users", True),
        ("0002_create_webhook_events", False),
        ("0003_create_deleted_users", False),
        ("0004_serialize_user_writes", False),
    ]
    assert _tables(fresh_database_url) == {"users"}


def test_status_column_only_takes_known_outcomes(fresh_database_url: str) -> None:
    migrations.apply(_yoyo(fresh_database_url))
    with psycopg.connect(fresh_database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO webhook_events (message_id, event_type, status, payload) "
            "VALUES ('m', 't', 'bogus', '{}')"
        )


def test_concurrent_migrators_are_safe(fresh_database_url: str) -> None:
    url = _yoyo(fresh_database_url)
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def migrate() -> None:
        start.wait()
        try:
            results.append(migrations.apply(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results, key=len) == [[], [], [], ALL]
    assert _tables(fresh_database_url) == {"users", "webhook_events", "deleted_users"}


def test_migrate_cli(fresh_database_url: str) -> None:
    import os
    import subprocess
    import sys

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "sync_service", "migrate", *args],
            env={**os.environ, "DATABASE_URL": fresh_database_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return result.stdout

    assert "pending  0001_create_users" in run("--list")
    assert run() == f"applied: {', '.join(ALL)}\n"
    assert run() == "applied: nothing (schema at head)\n"
    assert run("--rollback", "1") == "rolled back: 0004_serialize_user_writes\n"
    assert run("--list").splitlines() == [
        "applied  0001_create_users",
        "applied  0002_create_webhook_events",
        "applied  0003_create_deleted_users",
        "pending  0004_serialize_user_writes",
    ]
