"""The ingest core: apply a batch of verified deliveries in one transaction, one result per delivery.

Both the HTTP handler (through `batcher.GroupCommitter`) and `replay --direct` call `apply_batch`, so
validation outcomes, ordering and idempotency live here and nowhere else.

How a batch is applied (five statements whatever its size):
1. lock the existing rows of every user id and email the batch touches (`LOCK_USERS`);
2. read which message ids already ended for good (`FINISHED_MESSAGE_IDS`);
3. decide each delivery's outcome in arrival order, in Python, exactly as if they had come one by one:
   duplicate, ignored, rejected, stale (not newer than the row), conflict (email held by another id),
   or applied, which then becomes the state later deliveries of that user are compared with;
4. upsert the final state of each written user (`UPSERT_USERS`), guarded again by updated_at in SQL;
5. record every evaluated delivery in the inbox (`RECORD_EVENTS`).
Step 4 and 5 report what they really wrote, which catches the races the locks cannot (a user or message
id first inserted by a concurrent batch), and the results are corrected to match.

If the batch fails on something one delivery caused (a value PostgreSQL refuses, an email taken by a
concurrent batch), it is rolled back and every delivery is applied in a transaction of its own, so one
bad event never fails the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import asyncpg

from sync_service import sql
from sync_service.events import Delivery, Outcome, UserRow, as_json_string


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str | None = None  # why, for rejected and conflict
    field: str | None = None  # which field, for rejected


APPLIED = Result(Outcome.APPLIED)
DUPLICATE = Result(Outcome.DUPLICATE)
STALE = Result(Outcome.STALE)
IGNORED = Result(Outcome.IGNORED)
CONFLICT = Result(Outcome.CONFLICT, "email is held by another user id; retry later")

# Errors that one delivery's values can cause; the batch is then retried one delivery at a time.
_PER_DELIVERY_ERRORS = (
    asyncpg.exceptions.IntegrityConstraintViolationError,  # 23xxx, e.g. email unique violation in a race
    asyncpg.exceptions.DataError,  # 22xxx, a value PostgreSQL refuses
    asyncpg.exceptions.ProgramLimitExceededError,  # 54xxx, e.g. index row too large
)


async def apply_batch(conn: asyncpg.Connection, deliveries: Sequence[Delivery]) -> list[Result]:
    """Apply `deliveries` (arrival order) and commit; one result per delivery, in the same order."""
    if not deliveries:
        return []
    try:
        async with conn.transaction():
            return await _apply(conn, deliveries)
    except _PER_DELIVERY_ERRORS:
        if len(deliveries) == 1:
            return [await _apply_alone_after_failure(conn, deliveries[0])]
    return [await _apply_alone(conn, delivery) for delivery in deliveries]


async def _apply_alone(conn: asyncpg.Connection, delivery: Delivery) -> Result:
    try:
        async with conn.transaction():
            return (await _apply(conn, [delivery]))[0]
    except _PER_DELIVERY_ERRORS:
        return await _apply_alone_after_failure(conn, delivery)


async def _apply_alone_after_failure(conn: asyncpg.Connection, delivery: Delivery) -> Result:
    """One delivery whose writes failed: find out why, and record that outcome instead.

    The payload itself may be what PostgreSQL refused (jsonb holds no number beyond its numeric range,
    e.g. 1e999999, in a field we otherwise ignore), so it is first tried again with the payload kept as
    a JSON string: the event still applies, as DESIGN wants for unknown fields."""
    delivery = replace(delivery, payload=as_json_string(delivery.payload))
    try:
        async with conn.transaction():
            return (await _apply(conn, [delivery]))[0]
    except asyncpg.exceptions.UniqueViolationError:
        result = CONFLICT  # the email was taken by a batch that committed after our lock
    except _PER_DELIVERY_ERRORS as exc:
        result = Result(Outcome.REJECTED, f"PostgreSQL refused a value (SQLSTATE {exc.sqlstate})", "data")
    async with conn.transaction():
        recorded = await _record(conn, [(delivery, result)])
    return result if recorded else DUPLICATE


async def _apply(conn: asyncpg.Connection, deliveries: Sequence[Delivery]) -> list[Result]:
    users = [d.user for d in deliveries if d.user is not None]
    stored: dict[str, UserRow] = {}
    email_owner: dict[str, str] = {}
    if users:
        ids = sorted({u.id for u in users})
        emails = sorted({u.email for u in users})
        for row in await conn.fetch(sql.LOCK_USERS, ids, emails):
            stored[row[0]] = UserRow(*row)
            email_owner[row[1]] = row[0]
    finished = {r[0] for r in await conn.fetch(sql.FINISHED_MESSAGE_IDS, [d.message_id for d in deliveries])}

    results: list[Result] = []
    to_write: dict[str, UserRow] = {}
    applied_by_user: dict[str, list[int]] = {}
    to_record: dict[str, tuple[Delivery, Result]] = {}
    for index, delivery in enumerate(deliveries):
        if delivery.message_id in finished:
            results.append(DUPLICATE)
            continue
        result = _decide(delivery, stored, email_owner)
        if result is APPLIED:
            assert delivery.user is not None
            to_write[delivery.user.id] = delivery.user
            applied_by_user.setdefault(delivery.user.id, []).append(index)
        if result.outcome.acknowledged:
            finished.add(delivery.message_id)
        to_record[delivery.message_id] = (delivery, result)
        results.append(result)

    if to_write:
        written = await _write_users(conn, to_write)
        for user_id in to_write.keys() - written:
            # A concurrent batch inserted this user with a newer row after our lock: ours are stale.
            for index in applied_by_user[user_id]:
                results[index] = STALE
                delivery = deliveries[index]
                to_record[delivery.message_id] = (delivery, STALE)

    if to_record:
        recorded = await _record(conn, list(to_record.values()))
        for index, delivery in enumerate(deliveries):
            if delivery.message_id in to_record and delivery.message_id not in recorded:
                results[index] = DUPLICATE  # a concurrent batch finished this message id first
    return results


def _decide(delivery: Delivery, stored: dict[str, UserRow], email_owner: dict[str, str]) -> Result:
    """The outcome of one delivery given the state so far; updates that state when it applies."""
    if delivery.rejection is not None:
        return Result(Outcome.REJECTED, str(delivery.rejection), delivery.rejection.field)
    user = delivery.user
    if user is None:
        return IGNORED
    current = stored.get(user.id)
    if current is not None and not _supersedes(user, current):
        return STALE
    holder = email_owner.get(user.email)
    if holder is not None and holder != user.id:
        return CONFLICT
    if current is not None and email_owner.get(current.email) == user.id:
        del email_owner[current.email]
    email_owner[user.email] = user.id
    stored[user.id] = user
    return APPLIED


def _supersedes(new: UserRow, current: UserRow) -> bool:
    """Newer wins; at the same updatedAt a different row wins (last arrival), an identical one is stale."""
    if new.updated_at != current.updated_at:
        return new.updated_at > current.updated_at
    return (new.email, new.email_verified, new.name, new.image, new.created_at) != (
        current.email, current.email_verified, current.name, current.image, current.created_at,
    )  # fmt: skip


async def _write_users(conn: asyncpg.Connection, users: dict[str, UserRow]) -> set[str]:
    rows = [users[user_id] for user_id in sorted(users)]
    written = await conn.fetch(
        sql.UPSERT_USERS,
        [u.id for u in rows],
        [u.email for u in rows],
        [u.email_verified for u in rows],
        [u.name for u in rows],
        [u.image for u in rows],
        [u.created_at for u in rows],
        [u.updated_at for u in rows],
    )
    return {r[0] for r in written}


async def _record(
    conn: asyncpg.Connection,
    entries: Sequence[tuple[Delivery, Result]],
) -> set[str]:
    """Write inbox rows; returns the message ids written (others had already ended for good)."""
    entries = sorted(entries, key=lambda e: e[0].message_id)
    recorded = await conn.fetch(
        sql.RECORD_EVENTS,
        [d.message_id for d, _ in entries],
        [d.event_type for d, _ in entries],
        [d.user_id for d, _ in entries],
        [d.event_timestamp for d, _ in entries],
        [d.received_at for d, _ in entries],
        [r.outcome.value for _, r in entries],
        [r.detail for _, r in entries],
        [d.payload for d, _ in entries],
    )
    return {r[0] for r in recorded}
