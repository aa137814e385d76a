"""`user.deleted`: the row goes, a tombstone stays, the user's inbox payloads are erased, the email is free
for a new sign-up, all in the group commit's one statement; tables referencing users decide by ON DELETE."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sync_service import sql
from sync_service.ingest.core import apply_batch, lock_keys
from sync_service.ingest.records import Delivery
from sync_service.webhooks.events import Rules, parse_delivery
from tests.helpers.support import ServiceUnderTest, deliver, encode, envelope, iso, user_data
from tests.test_replay import outcomes, replay

BASE = datetime.now(UTC) - timedelta(hours=1)


def _delivery(message_id: str, payload: Any) -> Delivery:
    return parse_delivery(message_id, encode(payload), Rules("uuid", timedelta(minutes=5)))


class _CountingConnection:
    """A real connection that counts the statements the core sends: a batch that falls back to one by one
    sends more than its read and its write."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.writes = 0

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self.writes += query == sql.WRITE_BATCH
        rows: list[asyncpg.Record] = await self._conn.fetch(query, *args)
        return rows


async def everywhere(db: asyncpg.Connection, needle: str) -> list[str]:
    """Every table.column of the database (text, jsonb, any type cast to text) whose value holds `needle`."""
    columns = await db.fetch(
        """
        SELECT table_schema, table_name, column_name FROM information_schema.columns
        WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
        """
    )
    found = []
    for schema, table, column in columns:
        query = f'SELECT count(*) FROM "{schema}"."{table}" WHERE "{column}"::text ILIKE $1'
        if await db.fetchval(query, f"%{needle}%"):
            found.append(f"{table}.{column}")
    return found


async def test_deletion_and_re_sign_up_in_one_batch(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    """Creation, update, deletion of one user and a new id signing up with the same email, plus another
    user's events, in one batch: one read, one write (no fallback), every outcome as one by one."""
    alice = user_data(created=BASE, email="alice@example.com")
    renamed = {**alice, "name": "Alice B", "updatedAt": iso(BASE + timedelta(seconds=1))}
    again = user_data(created=BASE + timedelta(seconds=2), email="alice@example.com", name="Alice 2")
    bob = user_data(created=BASE)
    stream = [
        _delivery("c", envelope(alice)),
        _delivery("b", envelope(bob)),
        _delivery("u", envelope(renamed, "user.updated")),
        _delivery("d", envelope(renamed, "user.deleted")),
        _delivery("late", envelope({**renamed, "name": "late"}, "user.updated")),  # after the deletion
        _delivery("new", envelope(again)),
    ]
    conn = await asyncpg.connect(migrated_database_url)
    try:
        counting = _CountingConnection(conn)
        results = await apply_batch(counting, stream)  # type: ignore[arg-type,unused-ignore]
    finally:
        await conn.close()
    assert [r.outcome.value for r in results] == [
        "applied",
        "applied",
        "applied",
        "applied",
        "stale",
        "applied",
    ]
    assert counting.writes == 1  # the deletion did not make the batch fall back to one by one
    rows = {r["id"]: r["email"] for r in await db.fetch("SELECT id, email FROM users")}
    assert rows == {bob["id"]: bob["email"], again["id"]: "alice@example.com"}
    assert await db.fetchval("SELECT id FROM deleted_users") == alice["id"]
    erased = {r["message_id"]: r["payload"] for r in await db.fetch(
        "SELECT message_id, payload::text FROM webhook_events WHERE user_id = $1", alice["id"]
    )}  # fmt: skip
    assert set(erased) == {"c", "u", "d", "late"}
    assert all("alice@" not in p and "Alice" not in p and alice["id"] in p for p in erased.values())


async def test_deletion_erases_earlier_rows_and_rows_without_a_user_id(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    alice = user_data(created=BASE, email="erase.me@example.com", name="Erase Me")
    other = user_data(created=BASE, email="keep.me@example.com")
    conn = await asyncpg.connect(migrated_database_url)
    try:
        await apply_batch(conn, [_delivery("c", envelope(alice)), _delivery("o", envelope(other))])
        await apply_batch(conn, [_delivery("bad", envelope({**alice, "email": "nope", "name": "Erase Me"}))])
        # A rejected event whose id could not be read: no user id, but the deleted user's email.
        await apply_batch(conn, [_delivery("noid", envelope({**alice, "id": 7}))])
        # Another user's conflicting sign-up with that email is that user's row: left as it is.
        await apply_batch(
            conn,
            [_delivery("conflict", envelope({**other, "id": user_data()["id"], "email": alice["email"]}))],
        )
        [result] = await apply_batch(conn, [_delivery("d", envelope(alice, "user.deleted"))])
        assert result.outcome.value == "applied"
        [again] = await apply_batch(conn, [_delivery("d2", envelope(alice, "user.deleted"))])
        assert again.outcome.value == "stale"  # a second deletion of the id changes nothing
        [late] = await apply_batch(conn, [_delivery("late", envelope(alice))])
        assert late.outcome.value == "stale"
    finally:
        await conn.close()
    holders = await everywhere(db, "erase.me@example.com")
    assert holders == ["webhook_events.payload"]  # only in the other user's conflicting delivery
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_events WHERE payload::text LIKE '%erase.me@%'") == 1
    )
    assert await everywhere(db, "Erase Me") == []
    noid = await db.fetchval("SELECT payload FROM webhook_events WHERE message_id = 'noid'")
    assert noid.startswith('{"data": {}')
    assert await db.fetchval("SELECT email FROM users") == other["email"]


async def test_deletion_before_creation_leaves_a_tombstone(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    alice = user_data(created=BASE)
    conn = await asyncpg.connect(migrated_database_url)
    try:
        first = await apply_batch(conn, [_delivery("d", envelope({"id": alice["id"]}, "user.deleted"))])
        late = await apply_batch(
            conn, [_delivery("c", envelope(alice)), _delivery("d", envelope(alice, "user.deleted"))]
        )
    finally:
        await conn.close()
    assert [r.outcome.value for r in first + late] == ["applied", "stale", "duplicate"]
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await everywhere(db, alice["email"]) == []


async def test_deletion_only_needs_a_valid_id(migrated_database_url: str, db: asyncpg.Connection) -> None:
    conn = await asyncpg.connect(migrated_database_url)
    try:
        loose = {"id": user_data()["id"], "email": 42, "createdAt": "yesterday", "role": ["x"]}
        results = await apply_batch(conn, [
            _delivery("ok", envelope(loose, "user.deleted")),
            _delivery("bad", envelope({"id": "not-a-uuid\n", "email": "x@example.com"}, "user.deleted")),
            _delivery("none", envelope(None, "user.deleted")),
        ])  # fmt: skip
    finally:
        await conn.close()
    assert [(r.outcome.value, r.field) for r in results] == [
        ("applied", None), ("rejected", "data.id"), ("rejected", "data"),
    ]  # fmt: skip
    assert await everywhere(db, "x@example.com") == []  # a deletion's payload is stored erased


@pytest.mark.parametrize("on_delete", ["CASCADE", "NO ACTION", "RESTRICT"])
async def test_tables_referencing_users_decide_by_their_on_delete(
    migrated_database_url: str, db: asyncpg.Connection, on_delete: str
) -> None:
    alice, bob = user_data(created=BASE), user_data(created=BASE)
    await db.execute("DROP TABLE IF EXISTS todos")
    await db.execute(
        "CREATE TABLE todos (id serial PRIMARY KEY, title text, "
        f"user_id text NOT NULL CONSTRAINT todos_user_id_fkey REFERENCES users (id) ON DELETE {on_delete})"
    )
    conn = await asyncpg.connect(migrated_database_url)
    try:
        await apply_batch(conn, [_delivery("a", envelope(alice)), _delivery("b", envelope(bob))])
        await db.execute("INSERT INTO todos (title, user_id) VALUES ('buy milk', $1)", alice["id"])
        carol = user_data(created=BASE)
        results = await apply_batch(conn, [
            _delivery("d", envelope(alice, "user.deleted")),
            _delivery("c", envelope(carol)),
            _delivery("b2", envelope({**bob, "updatedAt": iso(BASE + timedelta(seconds=1))}, "user.updated")),
        ])  # fmt: skip
        # Nothing of a blocked deletion is written: the row stays, no tombstone.
        kept = (await db.fetchval("SELECT name FROM users WHERE id = $1", alice["id"]),
                await db.fetchval("SELECT count(*) FROM deleted_users"))  # fmt: skip
        after_fix = None
        if on_delete != "CASCADE":
            await db.execute("DELETE FROM todos")
            after_fix = (await apply_batch(conn, [_delivery("d", envelope(alice, "user.deleted"))]))[0]
    finally:
        await conn.close()
        await db.execute("DROP TABLE todos")
    assert [r.outcome.value for r in results[1:]] == ["applied", "applied"]  # the others are unaffected
    if on_delete == "CASCADE":
        assert results[0].outcome.value == "applied"
        assert kept == (None, 1)
        return
    assert results[0].outcome.value == "conflict"
    assert results[0].detail is not None
    assert "todos_user_id_fkey" in results[0].detail
    assert kept == ("Alice", 0)
    assert after_fix is not None
    assert after_fix.outcome.value == "applied"


async def test_blocked_deletion_is_a_409_naming_the_constraint(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    alice = user_data(created=BASE)
    await db.execute("DROP TABLE IF EXISTS todos")
    await db.execute("CREATE TABLE todos (user_id text CONSTRAINT todos_owner REFERENCES users (id))")
    try:
        async with service.client() as client:
            assert (await deliver(client, envelope(alice))).status_code == 200
            await db.execute("INSERT INTO todos VALUES ($1)", alice["id"])
            blocked = await deliver(client, envelope(alice, "user.deleted"), message_id="msg_del")
            await db.execute("DELETE FROM todos")
            retried = await deliver(client, envelope(alice, "user.deleted"), message_id="msg_del")
    finally:
        await db.execute("DROP TABLE todos")
    assert blocked.status_code == 409
    assert "todos_owner" in blocked.json()["detail"]
    assert retried.json() == {"status": "applied"}


async def test_sign_up_before_the_deletion_converges_on_retry(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    """Out of order: the new id's sign-up arrives while the old row still holds the email (409), the
    deletion comes, and the sender's retry of the same message is applied and readable."""
    old = user_data(created=BASE, email="again@example.com")
    new = user_data(created=BASE + timedelta(minutes=1), email="again@example.com", name="New")
    async with service.client() as client:
        assert (await deliver(client, envelope(old))).json() == {"status": "applied"}
        first = await deliver(client, envelope(new), message_id="msg_new")
        deleted = await deliver(client, envelope(old, "user.deleted"))
        retry = await deliver(client, envelope(new), message_id="msg_new")
        repeat = await deliver(client, envelope(old, "user.deleted"))  # a new message id: already gone
    assert first.status_code == 409
    assert deleted.json() == {"status": "applied"}
    assert retry.json() == {"status": "applied"}
    assert repeat.json() == {"status": "stale"}
    assert await db.fetchval("SELECT id FROM users WHERE email = 'again@example.com'") == new["id"]


async def test_a_deletion_racing_a_write_of_its_user_on_another_connection_wins(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    """Two writers (two instances, or a replay beside the service) apply, at the same moment, a write of a
    user (a creation, or an update of a stored row) and that user's deletion. Whichever commits first, the
    deletion wins: no row is left beside its tombstone and no inbox row of that user keeps its email.
    (Before the writes were serialized per user, a third to two thirds of these rounds left the row.)"""
    rounds = 60
    raced: list[str] = []
    writer = await asyncpg.connect(migrated_database_url)
    deleter = await asyncpg.connect(migrated_database_url)
    try:
        for i in range(rounds):
            user = user_data(created=BASE, email=f"race{i}@example.com")
            raced.append(user["id"])
            stored = i % 2 == 0
            if stored:
                await apply_batch(writer, [_delivery(f"c{i}", envelope(user))])
            newer = {**user, "name": "Newer", "updatedAt": iso(BASE + timedelta(seconds=1))}
            write = _delivery(f"w{i}", envelope(newer, "user.updated" if stored else "user.created"))
            # Other users in the writer's batch move its statement's timing against the deletion's.
            others = [_delivery(f"o{i}-{j}", envelope(user_data(created=BASE))) for j in range(i % 5)]
            written, deleted = await asyncio.gather(
                apply_batch(writer, [*others, write]),
                apply_batch(deleter, [_delivery(f"d{i}", envelope(newer, "user.deleted"))]),
            )
            assert written[-1].outcome.value in {"applied", "stale"}
            assert [r.outcome.value for r in deleted] == ["applied"]
    finally:
        await writer.close()
        await deleter.close()
    left = await db.fetch("SELECT id FROM users WHERE id = ANY($1::text[])", raced)
    assert left == [], f"{len(left)} of {rounds} deleted users were written back"
    assert await db.fetchval("SELECT count(*) FROM deleted_users WHERE id = ANY($1::text[])", raced) == rounds
    keeping_pii = await db.fetchval(
        "SELECT count(*) FROM webhook_events WHERE user_id = ANY($1::text[]) AND payload -> 'data' ? 'email'",
        raced,
    )
    assert keeping_pii == 0, f"{keeping_pii} inbox rows of deleted users keep their email"


def test_lock_keys_are_one_sorted_order_with_deletions_exclusive() -> None:
    """Every writer takes its users' locks in one order (sorted), one per bucket, so that batches cannot
    deadlock each other; a user's write and deletion take the same bucket, the deletion exclusively."""
    writes = [user_data()["id"] for _ in range(400)]
    deletions = [user_data()["id"] for _ in range(100)]
    keys = lock_keys(writes, deletions)
    buckets = [key >> 1 for key in keys]
    assert keys == sorted(keys)
    assert len(set(buckets)) == len(buckets) <= 256
    assert lock_keys(reversed(writes), reversed(deletions)) == keys
    for user_id in deletions:
        (shared,) = lock_keys([user_id], [])
        assert lock_keys([], [user_id]) == [shared + 1]
        assert shared + 1 in keys  # exclusive wins over the writes of its bucket
        assert shared not in keys


async def test_crossed_writes_and_deletions_on_two_connections_do_not_deadlock(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    """Each connection writes the user the other deletes, at the same moment: neither batch fails (a
    deadlock would fail one) and both deletions win."""
    rounds = 30
    first = await asyncpg.connect(migrated_database_url)
    second = await asyncpg.connect(migrated_database_url)
    pairs = []
    try:
        for i in range(rounds):
            x, y = user_data(created=BASE), user_data(created=BASE)
            pairs.append((x["id"], y["id"]))
            await apply_batch(first, [_delivery(f"cx{i}", envelope(x)), _delivery(f"cy{i}", envelope(y))])
            newer_x, newer_y = ({**u, "updatedAt": iso(BASE + timedelta(seconds=1))} for u in (x, y))
            await asyncio.gather(
                apply_batch(first, [_delivery(f"ux{i}", envelope(newer_x, "user.updated")),
                                    _delivery(f"dy{i}", envelope(newer_y, "user.deleted"))]),
                apply_batch(second, [_delivery(f"uy{i}", envelope(newer_y, "user.updated")),
                                     _delivery(f"dx{i}", envelope(newer_x, "user.deleted"))]),
            )  # fmt: skip
    finally:
        await first.close()
        await second.close()
    ids = [user_id for pair in pairs for user_id in pair]
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = ANY($1::text[])", ids) == 0
    assert await db.fetchval("SELECT count(*) FROM deleted_users WHERE id = ANY($1::text[])", ids) == len(ids)


async def test_replaying_a_deleted_users_inbox_changes_nothing(
    service: ServiceUnderTest, db: asyncpg.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = user_data(created=BASE, email="gone@example.com", name="Gone")
    renamed = {**alice, "name": "Gone B", "updatedAt": iso(BASE + timedelta(seconds=1))}
    async with service.client() as client:
        for payload in (
            envelope(alice),
            envelope(renamed, "user.updated"),
            envelope(renamed, "user.deleted"),
        ):
            assert (await deliver(client, payload)).json() == {"status": "applied"}
    snapshot = "SELECT xmin::text, * FROM {} ORDER BY 2"
    before = [await db.fetch(snapshot.format(t)) for t in ("users", "webhook_events", "deleted_users")]
    db_url = service.settings.database.url  # type: ignore[union-attr]
    where = ("--inbox", "--user-id", alice["id"])
    code, direct, _ = await replay(capsys, db_url, *where, "--direct", "--keep-ids")
    assert (code, outcomes(direct)) == (0, {"duplicate": 3})
    code, fresh, _ = await replay(capsys, db_url, *where, "--direct")
    assert (code, outcomes(fresh)) == (0, {"stale": 3})  # erased to their id, the tombstone decides
    code, sent, _ = await replay(capsys, db_url, *where, "--url", service.base_url, "--keep-ids")
    assert (code, outcomes(sent)) == (0, {"duplicate": 6})  # the three above, and the stale ones
    after = [await db.fetch(snapshot.format(t)) for t in ("users", "deleted_users")]
    assert after == [before[0], before[2]]
    assert await everywhere(db, "gone@example.com") == []
    assert await everywhere(db, "Gone") == []
