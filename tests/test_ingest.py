"""The ingest core and group commit: a batch ends exactly as if its deliveries had come one by one."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from sync_service import sql
from sync_service.ingest.core import BatchState, apply_and_read_ahead, apply_batch
from sync_service.ingest.records import Delivery, Outcome
from sync_service.webhooks.events import Rules, parse_delivery
from tests.helpers.support import deliver, encode, envelope, iso, make_settings, start_service, user_data

BASE = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _delivery(message_id: str, payload: Any, user_id_format: str = "uuid") -> Delivery:
    return parse_delivery(
        message_id,
        encode(payload),
        Rules(user_id_format, timedelta(minutes=5)),  # type: ignore[arg-type]
        received_at=datetime.now(UTC),
    )


async def _reset(db: asyncpg.Connection) -> None:
    await db.execute("DELETE FROM users; DELETE FROM webhook_events; DELETE FROM deleted_users")


async def _state(db: asyncpg.Connection) -> tuple[list[tuple[Any, ...]], ...]:
    """Users, inbox rows (payloads included: erasure must end the same) and tombstones."""
    users = await db.fetch("SELECT * FROM users ORDER BY id")
    events = await db.fetch(
        "SELECT message_id, status, error, payload FROM webhook_events ORDER BY message_id"
    )
    tombstones = await db.fetch("SELECT id FROM deleted_users ORDER BY id")
    return [tuple(r) for r in users], [tuple(r) for r in events], [tuple(r) for r in tombstones]


def _random_stream(rng: random.Random, size: int) -> list[Delivery]:
    """Deliveries over few users, emails and message ids, so every rule meets every other one."""
    user_ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(4)]
    emails = [f"e{i}@example.com" for i in range(5)]
    deliveries = []
    for _ in range(size):
        message_id = f"m{rng.randrange(size)}"  # repeats: duplicates and retries
        kind = rng.random()
        data = {
            "id": rng.choice(user_ids),
            "email": rng.choice(emails),
            "emailVerified": rng.random() < 0.5,
            "name": rng.choice(["A", "B", None]),
            "createdAt": iso(BASE),
            "updatedAt": iso(BASE + timedelta(seconds=rng.randrange(6))),  # ties happen
        }
        if kind < 0.15:  # deletions: the row goes, its email frees, later events of the id are stale
            payload: Any = envelope(data, "user.deleted")
        elif kind < 0.25:
            payload = envelope({**data, "email": "not an email"})
        else:
            payload = envelope(data, rng.choice(["user.created", "user.updated"]))
        deliveries.append(_delivery(message_id, payload))
    return deliveries


async def test_random_batches_equal_one_by_one(migrated_database_url: str, db: asyncpg.Connection) -> None:
    rng = random.Random(20261127)
    conn = await asyncpg.connect(migrated_database_url)
    try:
        for _ in range(40):
            stream = _random_stream(rng, rng.randrange(2, 30))
            await _reset(db)
            batched = [r.outcome for r in await apply_batch(conn, stream)]
            batched_state = await _state(db)
            await _reset(db)
            one_by_one = [(await apply_batch(conn, [d]))[0].outcome for d in stream]
            assert batched == one_by_one
            assert batched_state == await _state(db)
    finally:
        await conn.close()


async def test_batches_reading_ahead_equal_one_by_one(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    """The group committer's way under load: each batch's write also reads the next batch's state (as it
    was before that write) and the core brings it up to date. Same answers, same rows as one by one."""
    rng = random.Random(20261202)
    conn = await asyncpg.connect(migrated_database_url)
    try:
        for _ in range(40):
            stream = _random_stream(rng, rng.randrange(2, 40))
            cuts = sorted(rng.sample(range(1, len(stream)), k=min(len(stream) - 1, rng.randrange(1, 5))))
            batches = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
            await _reset(db)
            pipelined: list[Outcome] = []
            state: BatchState | None = None
            for index, batch in enumerate(batches):
                upcoming = batches[index + 1] if index + 1 < len(batches) else []
                results, state = await apply_and_read_ahead(conn, batch, state, upcoming)
                pipelined += [r.outcome for r in results]
            pipelined_state = await _state(db)
            await _reset(db)
            one_by_one = [(await apply_batch(conn, [d]))[0].outcome for d in stream]
            assert pipelined == one_by_one
            assert pipelined_state == await _state(db)
    finally:
        await conn.close()


async def test_a_read_ahead_state_sees_what_the_batch_before_wrote(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    """The next batch's state is read before the current batch's write lands: an email the current batch
    releases must be free for the next one, a user it creates must be there, a message it finishes done."""
    await _reset(db)
    alice, carol = user_data(created=BASE), user_data(created=BASE)
    moved = {**alice, "email": "moved@example.com", "updatedAt": iso(BASE + timedelta(seconds=1))}
    conn = await asyncpg.connect(migrated_database_url)
    try:
        assert [r.outcome.value for r in await apply_batch(conn, [_delivery("a1", envelope(alice))])] == [
            "applied"
        ]
        current = [_delivery("a2", envelope(moved, "user.updated"))]
        upcoming = [
            _delivery("c1", envelope({**carol, "email": alice["email"]})),  # alice's old email: free now
            _delivery("a2", envelope(moved, "user.updated")),  # finished by the batch before
            _delivery("a0", envelope({**alice, "name": "older"}, "user.updated")),  # older than a2's row
        ]
        results, state = await apply_and_read_ahead(conn, current, None, upcoming)
        assert [r.outcome.value for r in results] == ["applied"]
        assert state is not None
        results, _ = await apply_and_read_ahead(conn, upcoming, state, [])
    finally:
        await conn.close()
    assert [r.outcome.value for r in results] == ["applied", "duplicate", "stale"]
    emails = dict(await db.fetch("SELECT id, email FROM users"))
    assert emails == {alice["id"]: "moved@example.com", carol["id"]: alice["email"]}


async def test_a_payload_jsonb_refuses_does_not_fail_the_batch(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    """jsonb cannot hold 1e999999 (here in a field the row does not use): the batch is retried one by
    one, and that event still applies, its payload a JSON object with the number as a string of its text
    (so replay re-applies it alike); the others are unaffected."""
    good = [_delivery(f"good{i}", envelope(user_data())) for i in range(3)]
    huge = _delivery("huge", envelope(user_data(score=1e308)))
    huge = msgspec.structs.replace(huge, payload=huge.payload.replace("1e308", "1e999999"))
    conn = await asyncpg.connect(migrated_database_url)
    try:
        results = await apply_batch(conn, [good[0], huge, good[1], good[2]])
    finally:
        await conn.close()
    assert [r.outcome.value for r in results] == ["applied"] * 4
    assert await db.fetchval("SELECT count(*) FROM users") == 4
    stored = await db.fetchval("SELECT payload FROM webhook_events WHERE message_id = 'huge'")
    assert json.loads(stored)["data"]["score"] == "1e999999"


async def test_concurrent_deliveries_in_one_group_commit_get_their_own_answers(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    """Duplicates, several updates of one user and an invalid event held back into one batch."""
    created = BASE
    alice = user_data(created=created, name="v0")
    updates = [
        {**alice, "name": f"v{i}", "updatedAt": iso(created + timedelta(seconds=i))} for i in (1, 3, 2)
    ]
    bob = user_data(email=alice["email"], created=created)  # wants Alice's email: 409
    invalid = {**user_data(), "email": "nope"}
    plan: list[tuple[str, dict[str, Any], str, int]] = [
        ("a0", envelope(alice), "applied", 200),
        ("a1", envelope(updates[0], "user.updated"), "applied", 200),
        ("a3", envelope(updates[1], "user.updated"), "applied", 200),
        ("a2", envelope(updates[2], "user.updated"), "stale", 200),
        ("a0", envelope(alice), "duplicate", 200),
        ("bad", envelope(invalid), "rejected", 422),
        ("bob", envelope(bob), "conflict", 409),
        ("other", envelope(alice, "session.created"), "ignored", 200),
    ]
    settings = make_settings(migrated_database_url, INGEST_WRITERS="1", INGEST_BATCH_SIZE="64")
    blocker = await asyncpg.connect(migrated_database_url)
    try:
        with start_service(settings) as service:
            async with service.client() as client:
                # Hold the writer's first batch behind a lock so everything below queues into one batch.
                lock = blocker.transaction()
                await lock.start()
                await blocker.execute("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
                warmup = asyncio.create_task(deliver(client, envelope(user_data())))
                await asyncio.sleep(0.3)
                tasks = []
                for message_id, payload, _, _ in plan:
                    tasks.append(asyncio.create_task(deliver(client, payload, message_id=message_id)))
                    await asyncio.sleep(0.02)  # keep arrival order
                await asyncio.sleep(0.3)
                await lock.rollback()
                assert (await warmup).status_code == 200
                answers = await asyncio.gather(*tasks)
    finally:
        await blocker.close()
    for (message_id, _, outcome, status), answer in zip(plan, answers, strict=True):
        assert answer.status_code == status, message_id
        body = answer.json()
        assert body.get("status", body.get("extra", {}).get("status")) == outcome, message_id
    row = await db.fetchrow("SELECT name, email FROM users WHERE id = $1", alice["id"])
    assert row is not None
    assert tuple(row) == ("v3", alice["email"])
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", bob["id"]) == 0
    statuses = dict(await db.fetch("SELECT message_id, status FROM webhook_events"))
    assert {k: statuses[k] for k in ("a0", "a1", "a2", "a3", "bad", "bob", "other")} == {
        "a0": "applied",
        "a1": "applied",
        "a2": "stale",
        "a3": "applied",
        "bad": "rejected",
        "bob": "conflict",
        "other": "ignored",
    }


async def test_two_connections_racing_on_new_users_keep_the_newest(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    """Batches on different connections (two processes) inserting the same new users concurrently."""
    users = [user_data(created=BASE) for _ in range(20)]
    older = [_delivery(f"old{i}", envelope(u)) for i, u in enumerate(users)]
    newer = [
        _delivery(f"new{i}", envelope({**u, "name": "newer", "updatedAt": iso(BASE + timedelta(seconds=1))}))
        for i, u in enumerate(users)
    ]
    first, second = await asyncpg.connect(migrated_database_url), await asyncpg.connect(migrated_database_url)
    try:
        results = await asyncio.gather(apply_batch(first, older), apply_batch(second, newer[::-1]))
    finally:
        await first.close()
        await second.close()
    assert {r.outcome.value for r in results[1]} == {"applied"}
    assert {r.outcome.value for r in results[0]} <= {"applied", "stale"}
    names = {r["name"] for r in await db.fetch("SELECT name FROM users")}
    assert names == {"newer"}
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 40


async def test_concurrent_batches_without_locks_end_as_the_rules_say(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    """Nothing is locked between a batch's read and its write: batches on four connections, over the
    same few users and with the same message ids delivered to several of them at once, must still end
    with each user at its newest update, each message id recorded once, and every answer matching the
    inbox."""
    await _reset(db)
    rng = random.Random(11)
    user_ids = [f"00000000-0000-4000-8000-0000000000{i:02d}" for i in range(6)]
    messages = []
    for index in range(240):
        user_id = rng.choice(user_ids)
        data = user_data(user_id=user_id, email=f"{user_id[-2:]}@example.com", created=BASE)
        data["updatedAt"] = iso(BASE + timedelta(milliseconds=index + 1))  # unique: one newest per user
        messages.append((f"m{index}", user_id, index, envelope(data, "user.updated")))
    batches: list[list[Delivery]] = [[] for _ in range(4)]
    for message_id, _, _, payload in messages:
        for batch in rng.sample(batches, rng.choice([1, 1, 2])):  # some are delivered twice at once
            batch.append(_delivery(message_id, payload))
    for batch in batches:
        rng.shuffle(batch)
    connections = [await asyncpg.connect(migrated_database_url) for _ in batches]
    try:
        chunks = [[batch[i : i + 20] for i in range(0, len(batch), 20)] for batch in batches]

        async def run(conn: asyncpg.Connection, parts: list[list[Delivery]]) -> list[tuple[str, str]]:
            answers = []
            for part in parts:
                results = await apply_batch(conn, part)
                answers += [(d.message_id, r.outcome.value) for d, r in zip(part, results, strict=True)]
            return answers

        answered = [a for group in await asyncio.gather(*map(run, connections, chunks)) for a in group]
    finally:
        for conn in connections:
            await conn.close()

    newest = {user_id: max(i for _, u, i, _ in messages if u == user_id) for user_id in user_ids}
    rows = {r["id"]: r["updated_at"] for r in await db.fetch("SELECT id, updated_at FROM users")}
    assert rows == {u: BASE + timedelta(milliseconds=i + 1) for u, i in newest.items() if i >= 0}
    inbox = dict(await db.fetch("SELECT message_id, status FROM webhook_events"))
    assert set(inbox) == {m for m, _, _, _ in messages}
    final = {m for m, u, i, _ in messages if newest[u] == i}
    for message_id in final:
        assert inbox[message_id] == "applied", message_id
    for message_id, outcome in answered:
        assert outcome in ("applied", "stale", "duplicate"), (message_id, outcome)
        if outcome != "duplicate":
            assert inbox[message_id] == outcome, (message_id, outcome, inbox[message_id])
    first_answers = {m for m, outcome in answered if outcome != "duplicate"}
    assert first_answers == set(inbox), "every message id has exactly one non-duplicate answer"
    assert sum(1 for _, outcome in answered if outcome != "duplicate") == len(inbox)


class _PausedBeforeWrite:
    """A real connection whose batch write waits for `go`: lets a test change the rows between a batch's
    read and its write, which is what a concurrent writer can do."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.reading_done = asyncio.Event()
        self.go = asyncio.Event()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        if query == sql.WRITE_BATCH:
            self.reading_done.set()
            await self.go.wait()
        return await self._conn.fetch(query, *args)


async def test_a_row_made_newer_between_read_and_write_turns_applied_into_stale(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    await _reset(db)
    user = user_data(created=BASE)
    older = _delivery(
        "older", envelope({**user, "name": "older", "updatedAt": iso(BASE + timedelta(seconds=1))})
    )
    newer = _delivery(
        "newer", envelope({**user, "name": "newer", "updatedAt": iso(BASE + timedelta(seconds=2))})
    )
    first, second = await asyncpg.connect(migrated_database_url), await asyncpg.connect(migrated_database_url)
    try:
        paused = _PausedBeforeWrite(first)
        slow = asyncio.create_task(apply_batch(paused, [older]))  # type: ignore[arg-type]
        await paused.reading_done.wait()  # it read "no such user" and decided "applied"
        assert [r.outcome.value for r in await apply_batch(second, [newer])] == ["applied"]
        paused.go.set()
        assert [r.outcome.value for r in await slow] == ["stale"]
        # And a message id another writer finished meanwhile is a duplicate, written once.
        paused = _PausedBeforeWrite(first)
        again = _delivery(
            "again", envelope({**user, "name": "again", "updatedAt": iso(BASE + timedelta(seconds=3))})
        )
        slow = asyncio.create_task(apply_batch(paused, [again]))  # type: ignore[arg-type]
        await paused.reading_done.wait()
        assert [r.outcome.value for r in await apply_batch(second, [again])] == ["applied"]
        paused.go.set()
        assert [r.outcome.value for r in await slow] == ["duplicate"]
    finally:
        await first.close()
        await second.close()
    assert await db.fetchval("SELECT name FROM users") == "again"
    statuses = dict(await db.fetch("SELECT message_id, status FROM webhook_events"))
    assert statuses == {"older": "stale", "newer": "applied", "again": "applied"}
    assert await db.fetchval("SELECT attempts FROM webhook_events WHERE message_id = 'again'") == 1


def _scans(plan: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(node type, relation, index) of every node of an EXPLAIN (FORMAT JSON) plan."""
    found = [(plan["Node Type"], plan.get("Relation Name"), plan.get("Index Name"))]
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


async def test_batch_statements_look_inbox_rows_and_tombstones_up_by_key(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    # A young database has no statistics yet: a filter on the inbox status then looks selective, and the
    # planner used to answer "which of these message ids ended for good" by walking the (status,
    # received_at) index over every applied row, a cost that grew with the inbox (measured: 1.0 -> 5.4 ms
    # of PostgreSQL time per 8-event batch from 1,000 to 8,000 inbox rows). And the write's "is this user
    # tombstoned" was a join planned for the 100 rows PostgreSQL assumes a JSON array holds: it read every
    # tombstone for each batch. The statements must find the batch's message ids and user ids through the
    # primary keys whatever the statistics say.
    await db.execute(
        """
        INSERT INTO webhook_events (message_id, event_type, status, payload)
        SELECT 'old' || g, 'user.updated', 'applied', '{}' FROM generate_series(1, 20000) AS g
        """
    )
    await db.execute("INSERT INTO deleted_users (id) SELECT 'gone' || g FROM generate_series(1, 20000) AS g")
    # The service plans every statement for its arguments (database.create_pool); so does this connection.
    conn = await asyncpg.connect(
        migrated_database_url, server_settings={"plan_cache_mode": "force_custom_plan"}
    )
    try:
        ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(8)]
        emails = [f"u{i}@example.com" for i in range(8)]
        message_ids = [f"new{i}" for i in range(8)]
        write = "EXPLAIN (FORMAT JSON) " + sql.WRITE_BATCH
        plans = [
            await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql.READ_BATCH_STATE, ids, emails, message_ids),
            await conn.fetchval(write, "[]", "[]", ids, emails, message_ids, ids, [], [], [0, 2]),
            await conn.fetchval(write, "[]", "[]", ids, emails, message_ids, ids, ids[:1], emails[:1], [1]),
        ]
        # The write's guard (migrations/0004) runs its own queries: the tombstones of the batch's users and,
        # for a deletion, the erasure of the user's inbox rows (by user id) and of those without one carrying
        # its email. EXPLAIN does not show them, but the pages they read count in the guard's node: a scan
        # of either table would read at least half its pages (measured: 32 pages, a table 127 or more).
        pages = await conn.fetchval(
            "SELECT least(pg_relation_size('deleted_users'), pg_relation_size('webhook_events')) / 8192"
        )
        guard = """
            EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
            SELECT count(*)
            FROM sync_service_guard_batch('{1, 2}', $1::text[], $2::text[], $3::text[], $4::text[])
        """
        for _ in range(2):  # the first call also reads the catalog, to compile the function
            transaction = conn.transaction()
            await transaction.start()
            try:
                answer = await conn.fetchval(guard, ids, ids[:1], emails[:1], message_ids)
            finally:
                await transaction.rollback()
        guarded = json.loads(answer)[0]["Plan"]
    finally:
        await conn.close()
    read = guarded["Shared Hit Blocks"] + guarded["Shared Read Blocks"]
    assert read < pages / 2, (read, pages)
    erasure = {"webhook_events_user_id_received_at_idx", "webhook_events_unowned_email_idx"}
    for plan in plans:
        scans = _scans(json.loads(plan)[0]["Plan"])
        inbox_indexes = {index for _, _, index in scans if index and index.startswith("webhook_events")}
        assert "webhook_events_pkey" in inbox_indexes, scans
        assert inbox_indexes <= {"webhook_events_pkey", *erasure}, scans
        assert ("Seq Scan", "webhook_events", None) not in scans, scans
        assert ("Seq Scan", "deleted_users", None) not in scans, scans
    await _reset(db)
