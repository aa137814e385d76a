"""`sync-service backfill`: Better Auth-shaped tables (plain SQL, as Better Auth's migrations and Drizzle /
Prisma schemas create them) in a throwaway database of their own, applied to the service's database.

Runs in-process (`resolve` + `run`, what the CLI calls after parsing) against real PostgreSQL; webhooks
that race the backfill are signed with svix's signer and posted to the real service.
The end-to-end test with a real Better Auth server is tests/test_backfill_better_auth.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from sync_service.backfill.command import run
from sync_service.backfill.options import resolve
from sync_service.cli import _parser
from tests.helpers.databases import connected, unreachable_database_url, with_database
from tests.helpers.support import ServiceUnderTest, deliver, envelope, make_settings, user_data

# What Better Auth 1.7's own migrations create on PostgreSQL (generateId: "uuid" gives a uuid id).
BETTER_AUTH_USER_TABLE = """
CREATE TABLE "user" (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    "emailVerified" boolean NOT NULL,
    image text,
    "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""

INSERT_USER = """
INSERT INTO "user" (id, name, email, "emailVerified", image, "createdAt", "updatedAt")
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

T0 = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)


def a_user(n: int, **changes: Any) -> dict[str, Any]:
    row = {
        "id": str(uuid.uuid4()), "name": f"User {n}", "email": f"user{n}@example.com",
        "emailVerified": n % 2 == 0, "image": None, "createdAt": T0, "updatedAt": T0 + timedelta(seconds=n),
    }  # fmt: skip
    row.update(changes)
    return row


async def make_source(url: str, rows: list[dict[str, Any]], ddl: str = BETTER_AUTH_USER_TABLE) -> None:
    async with connected(url) as conn:
        await conn.execute(ddl)
        if rows:
            await add_rows(conn, rows)


async def add_rows(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    await conn.executemany(
        INSERT_USER,
        [(r["id"], r["name"], r["email"], r["emailVerified"], r["image"], r["createdAt"], r["updatedAt"])
         for r in rows],
    )  # fmt: skip


async def backfill(
    capsys: pytest.CaptureFixture[str], ours: str, source: str, *argv: str
) -> tuple[int, dict[str, Any], str]:
    """`sync-service backfill --better-auth-database-url SOURCE ARGV --json` in-process."""
    args = _parser().parse_args(["backfill", "--better-auth-database-url", source, *argv, "--json"])
    code = await run(resolve(args, make_settings(ours)))
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def outcomes(summary: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in summary["outcomes"].items() if v}


async def stored(db: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    return {r["id"]: dict(r) for r in await db.fetch("SELECT * FROM users")}


# --- a real run ----------------------------------------------------------------------------------------


async def test_every_row_is_applied_and_a_rerun_is_all_duplicate(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    rows = [a_user(n) for n in range(7)] + [a_user(7, image="https://example.com/7.png")]
    await make_source(fresh_database_url, rows)

    code, summary, err = await backfill(capsys, migrated_database_url, fresh_database_url)
    assert code == 0, err
    assert summary["rows"] == 8
    assert outcomes(summary) == {"applied": 8}
    users = await stored(db)
    for row in rows:
        user = users[row["id"]]
        assert (user["email"], user["name"], user["email_verified"], user["image"]) == (
            row["email"], row["name"], row["emailVerified"], row["image"],
        )  # fmt: skip
        assert (user["created_at"], user["updated_at"]) == (row["createdAt"], row["updatedAt"])
    events = await db.fetch("SELECT event_type, status, payload FROM webhook_events")
    assert {(e["event_type"], e["status"]) for e in events} == {("user.updated", "applied")}
    payload = json.loads(events[0]["payload"])
    assert payload["timestamp"] == payload["data"]["updatedAt"]  # the same row, the same bytes
    assert "backfill: drift=0 " in err

    code, again, _ = await backfill(capsys, migrated_database_url, fresh_database_url)
    assert code == 0
    assert outcomes(again) == {"duplicate": 8}
    assert await stored(db) == users

    # A row changed in Better Auth since (a newer updatedAt) is a new message, applied.
    async with connected(fresh_database_url) as source:
        await source.execute(
            'UPDATE "user" SET name = $2, "updatedAt" = $3 WHERE id = $1', rows[0]["id"], "Renamed",
            T0 + timedelta(hours=1),
        )  # fmt: skip
    code, third, _ = await backfill(capsys, migrated_database_url, fresh_database_url)
    assert code == 0
    assert outcomes(third) == {"applied": 1, "duplicate": 7}
    assert (await stored(db))[rows[0]["id"]]["name"] == "Renamed"


async def test_a_webhook_newer_than_the_source_row_wins(
    capsys: pytest.CaptureFixture[str], service: ServiceUnderTest, db: asyncpg.Connection,
    migrated_database_url: str, fresh_database_url: str,
) -> None:  # fmt: skip
    row = a_user(1)
    await make_source(fresh_database_url, [row])
    newer = user_data(
        user_id=row["id"], email=row["email"], name="Live Update", created=T0, updated=T0 + timedelta(days=1)
    )
    async with service.client() as client:
        answer = await deliver(client, envelope(newer, "user.updated"))
    assert answer.json() == {"status": "applied"}

    code, summary, err = await backfill(capsys, migrated_database_url, fresh_database_url)
    assert code == 0, err
    assert outcomes(summary) == {"stale": 1}
    user = (await stored(db))[row["id"]]
    assert user["name"] == "Live Update"
    assert user["updated_at"] == T0 + timedelta(days=1)


async def test_a_deleted_user_is_not_resurrected(
    capsys: pytest.CaptureFixture[str], service: ServiceUnderTest, db: asyncpg.Connection,
    migrated_database_url: str, fresh_database_url: str,
) -> None:  # fmt: skip
    deleted, kept = a_user(1), a_user(2)
    await make_source(fresh_database_url, [deleted, kept])  # Better Auth still has it (its hook ran first)
    async with service.client() as client:
        answer = await deliver(client, envelope({"id": deleted["id"]}, "user.deleted"))
    assert answer.status_code == 200

    code, summary, _ = await backfill(capsys, migrated_database_url, fresh_database_url)
    assert code == 0
    assert set(await stored(db)) == {kept["id"]}
    assert outcomes(summary) == {"applied": 1, "stale": 1}
    # A dry run agrees: the tombstoned user is not "missing" (a real run leaves it deleted).
    code, summary, _ = await backfill(capsys, migrated_database_url, fresh_database_url, "--dry-run")
    assert (code, summary["drift"]["total"]) == (0, 0)


# --- --dry-run: drift ----------------------------------------------------------------------------------


async def test_dry_run_reports_each_kind_of_drift_by_id_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    in_sync, different, missing = a_user(1), a_user(2), a_user(3)
    rejected = a_user(4, email="not-an-email")
    extra = a_user(5)
    await make_source(fresh_database_url, [in_sync, different, missing, rejected])
    # Our side: in_sync and different (with another name) and extra, applied as the backfill would.
    await _seed_ours(capsys, migrated_database_url, fresh_database_url, [in_sync, different, extra])
    await db.execute("UPDATE users SET name = 'Changed Here' WHERE id = $1", different["id"])
    before_users = await stored(db)
    before_events = await db.fetchval("SELECT count(*) FROM webhook_events")

    code, summary, err = await backfill(capsys, migrated_database_url, fresh_database_url, "--dry-run")
    assert code == 3, err  # drift found
    assert summary["drift"] == {"total": 4, "missing": 1, "different": 1, "extra": 1, "rejected": 1}
    assert summary["ids"]["missing"] == [missing["id"]]
    assert summary["ids"]["different"] == [different["id"]]
    assert summary["ids"]["extra"] == [extra["id"]]
    assert [r["id"] for r in summary["ids"]["rejected"]] == [rejected["id"]]
    assert "data.email" in summary["ids"]["rejected"][0]["detail"]
    assert "backfill: drift=4 missing=1 different=1 extra=1 rejected=1" in err
    for kind, row in (("missing", missing), ("different", different), ("extra", extra)):
        assert f"backfill: {kind} user {row['id']}" in err
    out = json.dumps(summary)
    for row in (in_sync, different, missing, extra):  # ids only, never emails
        assert row["email"] not in err
        assert row["email"] not in out
    assert await stored(db) == before_users
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == before_events


async def _seed_ours(
    capsys: pytest.CaptureFixture[str], ours: str, server_db: str, rows: list[dict[str, Any]]
) -> None:
    """Put `rows` in our users table through a backfill from a source of their own."""
    # (A URL may carry its socket folder in the query, as the embedded server's does: name, then URL.)
    seed_name = urlsplit(server_db).path.lstrip("/") + "_seed"
    seed = with_database(server_db, seed_name)
    async with connected(server_db) as conn:
        await conn.execute(f'CREATE DATABASE "{seed_name}"')
    try:
        await make_source(seed, rows)
        code, _, err = await backfill(capsys, ours, seed)
        assert code == 0, err
    finally:
        async with connected(server_db) as conn:
            await conn.execute(f'DROP DATABASE "{seed_name}" WITH (FORCE)')


async def test_extra_users_are_found_across_many_pages_on_both_sides(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    everyone = [a_user(n) for n in range(600)]
    extra = everyone[::7]
    await make_source(fresh_database_url, [r for r in everyone if r not in extra])
    await _seed_ours(capsys, migrated_database_url, fresh_database_url, everyone)

    code, summary, err = await backfill(
        capsys, migrated_database_url, fresh_database_url, "--dry-run", "--page-size", "100"
    )
    assert code == 3, err
    assert summary["drift"]["extra"] == len(extra)
    assert sorted(summary["ids"]["extra"]) == sorted(r["id"] for r in extra)
    assert summary["drift"]["total"] == len(extra)

    # A real run reports them too (and leaves them: no --delete-missing).
    code, real, _ = await backfill(capsys, migrated_database_url, fresh_database_url, "--page-size", "100")
    assert code == 0
    assert outcomes(real) == {"duplicate": len(everyone) - len(extra)}
    assert real["drift"]["extra"] == len(extra)
    assert len(await stored(db)) == len(everyone)


async def test_dry_run_in_sync_exits_0(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    await make_source(fresh_database_url, [a_user(n) for n in range(3)])
    assert (await backfill(capsys, migrated_database_url, fresh_database_url))[0] == 0
    code, summary, err = await backfill(capsys, migrated_database_url, fresh_database_url, "--dry-run")
    assert code == 0
    assert summary["drift"]["total"] == 0
    assert "backfill: drift=0 missing=0 different=0 extra=0 rejected=0" in err


# --- --delete-missing ----------------------------------------------------------------------------------


async def test_delete_missing_refuses_an_empty_source(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    ours = [a_user(n) for n in range(3)]
    await _seed_ours(capsys, migrated_database_url, fresh_database_url, ours)
    await make_source(fresh_database_url, [])
    before = await stored(db)
    for extra_args in ((), ("--force",), ("--dry-run",)):
        code, summary, _ = await backfill(
            capsys, migrated_database_url, fresh_database_url, "--delete-missing", *extra_args
        )
        assert code == 2
        assert "has no users" in summary["delete_missing"]["refused"]
        assert summary["delete_missing"]["deleted"] == 0
        assert await stored(db) == before


async def test_delete_missing_refuses_more_than_the_fraction(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    ours = [a_user(n) for n in range(10)]
    await _seed_ours(capsys, migrated_database_url, fresh_database_url, ours)
    await make_source(fresh_database_url, ours[:8])  # 2 of 10 would go: more than 0.1
    before = await stored(db)
    code, summary, err = await backfill(capsys, migrated_database_url, fresh_database_url, "--delete-missing")
    assert code == 2, err
    assert "2 of 10 users" in summary["delete_missing"]["refused"]
    assert await stored(db) == before
    code, summary, _ = await backfill(
        capsys, migrated_database_url, fresh_database_url, "--delete-missing", "--max-delete-fraction", "0.15"
    )
    assert code == 2
    assert await stored(db) == before


async def test_delete_missing_deletes_the_extra_users(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    ours = [a_user(n) for n in range(20)]
    await _seed_ours(capsys, migrated_database_url, fresh_database_url, ours)
    await make_source(fresh_database_url, ours[:18])
    code, summary, err = await backfill(
        capsys, migrated_database_url, fresh_database_url, "--delete-missing", "--max-delete-fraction", "0.1"
    )
    assert code == 0, err
    assert summary["delete_missing"]["deleted"] == 2
    assert set(await stored(db)) == {r["id"] for r in ours[:18]}
    # Past the fraction with --force.
    async with connected(fresh_database_url) as source:
        await source.execute('DELETE FROM "user" WHERE id = ANY($1::uuid[])', [r["id"] for r in ours[:9]])
    code, summary, _ = await backfill(
        capsys, migrated_database_url, fresh_database_url, "--delete-missing", "--force"
    )
    assert code == 0
    assert set(await stored(db)) == {r["id"] for r in ours[9:18]}


# --- schemas and errors --------------------------------------------------------------------------------

SNAKE_CASE_TABLE = """
CREATE SCHEMA auth;
CREATE TABLE auth.users (
    id text PRIMARY KEY,
    name text,
    email text NOT NULL UNIQUE,
    email_verified boolean NOT NULL DEFAULT false,
    image text,
    created_at timestamp(3) NOT NULL,
    updated_at timestamp(3) NOT NULL
)
"""


async def test_a_snake_case_schema_with_timestamps_without_time_zone(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    rows = [a_user(n) for n in range(5)]
    async with connected(fresh_database_url) as conn:
        await conn.execute(SNAKE_CASE_TABLE)
        await conn.executemany(
            "INSERT INTO auth.users VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [(r["id"], r["name"], r["email"], r["emailVerified"], r["image"],
              r["createdAt"].replace(tzinfo=None), r["updatedAt"].replace(tzinfo=None)) for r in rows],
        )  # fmt: skip
    code, summary, err = await backfill(
        capsys, migrated_database_url, fresh_database_url, "--table", "auth.users"
    )
    assert code == 0, err
    assert outcomes(summary) == {"applied": 5}
    users = await stored(db)
    for row in rows:
        assert users[row["id"]]["updated_at"] == row["updatedAt"]  # UTC, milliseconds kept
        assert users[row["id"]]["email_verified"] is row["emailVerified"]


async def test_a_missing_table_is_one_clear_error(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    args = _parser().parse_args(["backfill", "--better-auth-database-url", fresh_database_url])
    code = await run(resolve(args, make_settings(migrated_database_url)))
    _, err = capsys.readouterr()
    assert code == 2
    assert "no table 'user' in the search_path (public)" in err
    assert "Traceback" not in err
    code, summary, _ = await backfill(
        capsys, migrated_database_url, fresh_database_url, "--table", "auth.accounts"
    )
    assert code == 2
    assert "no table 'accounts' in schema 'auth'" in summary["stopped"]


async def test_a_missing_column_is_one_clear_error(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    await make_source(
        fresh_database_url, [], ddl='CREATE TABLE "user" (id text PRIMARY KEY, email text, "createdAt" '
        'timestamptz, "updatedAt" timestamptz)',
    )  # fmt: skip
    code, summary, _ = await backfill(capsys, migrated_database_url, fresh_database_url)
    assert code == 2
    assert summary["stopped"] == (
        'table "public"."user" has no column for emailVerified (looked for "emailVerified", "email_verified")'
    )
    assert await stored(db) == {}


async def test_an_unreachable_source_exits_2(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str
) -> None:
    code, summary, _ = await backfill(capsys, migrated_database_url, unreachable_database_url())
    assert code == 2
    assert summary["stopped"].startswith("cannot connect to BETTER_AUTH_DATABASE_URL (127.0.0.1:")
    assert "check-config" in summary["stopped"]


def test_the_cli_without_a_source_url_is_a_usage_error(migrated_database_url: str) -> None:
    import subprocess
    import sys

    env = {"DATABASE_URL": migrated_database_url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "sync_service", "backfill"], capture_output=True, text=True, env=env,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--better-auth-database-url: is required" in result.stderr


async def test_opaque_mixed_case_ids_in_a_quoted_table_merge_in_byte_order(
    capsys: pytest.CaptureFixture[str], db: asyncpg.Connection, migrated_database_url: str,
    fresh_database_url: str,
) -> None:  # fmt: skip
    """Better Auth's native 32-character ids (USER_ID_FORMAT=opaque) in a text column: upper case sorts
    before lower case, `_` and `-` between; a table renamed with user.modelName, in its own schema."""
    import random

    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    rows = [a_user(n, id="".join(rng.choice(alphabet) for _ in range(32))) for n in range(450)]
    ddl = BETTER_AUTH_USER_TABLE.replace(
        "id uuid PRIMARY KEY DEFAULT gen_random_uuid()", "id text PRIMARY KEY"
    )
    async with connected(fresh_database_url) as conn:
        await conn.execute('CREATE SCHEMA "Auth"; SET search_path = "Auth"; ' + ddl)
        await conn.execute('ALTER TABLE "Auth"."user" RENAME TO "Member"')
        await conn.executemany(
            INSERT_USER.replace('"user"', '"Auth"."Member"'),
            [(r["id"], r["name"], r["email"], r["emailVerified"], r["image"], r["createdAt"], r["updatedAt"])
             for r in rows],
        )  # fmt: skip
    settings = make_settings(migrated_database_url, USER_ID_FORMAT="opaque")
    argv = [
        "--better-auth-database-url",
        fresh_database_url,
        "--table",
        '"Auth"."Member"',
        "--page-size",
        "100",
    ]
    args = _parser().parse_args(["backfill", *argv, "--json"])
    assert await run(resolve(args, settings)) == 0
    assert outcomes(json.loads(capsys.readouterr().out)) == {"applied": 450}

    extra = rows[::9]
    async with connected(fresh_database_url) as conn:
        await conn.execute('DELETE FROM "Auth"."Member" WHERE id = ANY($1)', [r["id"] for r in extra])
    args = _parser().parse_args(["backfill", *argv, "--dry-run", "--json"])
    assert await run(resolve(args, settings)) == 3
    summary = json.loads(capsys.readouterr().out)
    assert summary["drift"] == {"total": len(extra), "missing": 0, "different": 0, "extra": len(extra),
                                "rejected": 0}  # fmt: skip
    assert sorted(summary["ids"]["extra"]) == sorted(r["id"] for r in extra)
