"""The ingest core: apply a batch of verified deliveries, one result per delivery.

Both the HTTP handler (through `group_commit.GroupCommitter`) and `replay --direct` call `apply_batch`, so
validation outcomes, ordering and idempotency live here and nowhere else.

A batch of any size is two statements, each its own transaction (no BEGIN/COMMIT round trips: under
load the round trips, not PostgreSQL, bound how fast a batch goes):
1. read the rows of every user id and email the batch touches, the tombstones of its user ids, and which
   of its message ids already ended for good (`READ_BATCH_STATE`);
2. decide each delivery's outcome in arrival order, in Python, exactly as if they had come one by one:
   duplicate, ignored, rejected, stale (not newer than the row, or its user was deleted), conflict (email
   held by another id), or applied, which then becomes the state later deliveries of that user are
   compared with (an applied deletion removes the row, frees its email and leaves a tombstone);
3. write the final state of each applied user, the deletions with their tombstones and the erasure of the
   deleted users' inbox payloads, and one inbox row per evaluated delivery in one statement
   (`WRITE_BATCH`), which commits them together. Its SQL repeats the ordering and idempotency rules, so a
   concurrent writer (another batch, worker or replay) that changed a row since step 1 is never undone:
   an applied delivery whose user row turned out newer is recorded stale, a message id that another
   writer finished first is reported duplicate, and an email another writer took fails the statement.
   It first locks the batch's users against concurrent writers, so that a write and a deletion of one
   user wait for each other and the deletion wins (`sync_service_guard_batch`, migrations/0004).

If that statement fails on something one delivery caused (a value PostgreSQL refuses, an email taken by
a concurrent writer), nothing of the batch was written, and every delivery is applied again on its own,
so one bad event never fails the others.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import msgspec

from sync_service import sql
from sync_service.ingest.payloads import UnstorablePayload, storable_payload
from sync_service.ingest.records import FINISHED_STATUSES, Delivery, Outcome, UserRow


class Result(msgspec.Struct, frozen=True, gc=False):
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


@dataclass(slots=True)
class BatchState:
    """What a batch's decisions start from: the stored rows of its user ids and emails, who holds each of
    those emails, which of its message ids already ended for good, and which of its user ids were deleted."""

    stored: dict[str, UserRow] = field(default_factory=dict)
    email_owner: dict[str, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    tombstoned: set[str] = field(default_factory=set)


async def apply_batch(conn: asyncpg.Connection, deliveries: Sequence[Delivery]) -> list[Result]:
    """Apply `deliveries` (arrival order) and commit; one result per delivery, in the same order."""
    results, _ = await apply_and_read_ahead(conn, deliveries, None, ())
    return results


async def apply_and_read_ahead(
    conn: asyncpg.Connection,
    deliveries: Sequence[Delivery],
    state: BatchState | None,
    upcoming: Sequence[Delivery],
) -> tuple[list[Result], BatchState | None]:
    """Apply `deliveries` like `apply_batch`, starting from `state` when the previous call read it along
    (None: read it now), and read in the same statement the state that `upcoming`, the next batch, will
    start from. Returns the results and that state, or None when `upcoming` must read its own.

    A writer that always has a next batch waiting (a loaded service, a replay) thus needs one round trip
    per batch instead of two."""
    if not deliveries:
        return [], None
    try:
        return await _apply(conn, deliveries, state, upcoming)
    except _PER_DELIVERY_ERRORS:
        if len(deliveries) == 1:
            return [await _apply_alone_after_failure(conn, deliveries[0])], None
    return [await _apply_alone(conn, delivery) for delivery in deliveries], None


async def read_state(conn: asyncpg.Connection, deliveries: Sequence[Delivery]) -> BatchState:
    """The state `deliveries` will start from, read on its own (no batch was written along)."""
    ids, emails, message_ids = _keys(deliveries)
    return _state_from(await conn.fetch(sql.READ_BATCH_STATE, ids, emails, message_ids))


async def _apply_alone(conn: asyncpg.Connection, delivery: Delivery) -> Result:
    try:
        return (await _apply(conn, [delivery], None, ()))[0][0]
    except _PER_DELIVERY_ERRORS:
        return await _apply_alone_after_failure(conn, delivery)


async def _apply_alone_after_failure(conn: asyncpg.Connection, delivery: Delivery) -> Result:
    """One delivery whose writes failed: find out why, and record that outcome instead.

    The payload itself may be what PostgreSQL refused (jsonb holds no number beyond its numeric range,
    e.g. 1e999999, in a field we otherwise ignore), so it is first tried again with the payload
    re-encoded as `payloads.storable_payload` does (still a JSON object that replay re-applies alike):
    the event still applies, as DESIGN wants for unknown fields."""
    try:
        delivery = msgspec.structs.replace(delivery, payload=storable_payload(delivery.payload))
    except UnstorablePayload as exc:  # nothing to record it with: refused, nothing written
        return Result(Outcome.REJECTED, f"payload {exc}", "body")
    try:
        return (await _apply(conn, [delivery], None, ()))[0][0]
    except asyncpg.exceptions.ForeignKeyViolationError as exc:
        result = _blocked_deletion(exc)
    except asyncpg.exceptions.UniqueViolationError:
        result = CONFLICT  # the email was taken by a writer that committed after our read
    except _PER_DELIVERY_ERRORS as exc:
        result = Result(Outcome.REJECTED, f"PostgreSQL refused a value (SQLSTATE {exc.sqlstate})", "data")
    exceptions, _ = await _write(conn, {}, {}, set(), [(delivery, result)], ())
    return DUPLICATE if delivery.message_id in exceptions else result


def _blocked_deletion(exc: asyncpg.exceptions.ForeignKeyViolationError) -> Result:
    """A deletion that a table referencing users(id) without ON DELETE refuses: retryable (409), nothing
    of it written; the detail names the constraint so the operator knows which table to fix."""
    constraint = getattr(exc, "constraint_name", None) or "unknown"
    table = getattr(exc, "table_name", None)
    where = f" on table {table}" if table else ""
    return Result(
        Outcome.CONFLICT,
        f"deletion blocked by foreign key constraint {constraint}{where} (no ON DELETE CASCADE); retry later",
    )


async def _apply(
    conn: asyncpg.Connection,
    deliveries: Sequence[Delivery],
    state: BatchState | None,
    upcoming: Sequence[Delivery],
) -> tuple[list[Result], BatchState | None]:
    if state is None:
        state = await read_state(conn, deliveries)

    results: list[Result] = []
    to_write: dict[str, UserRow] = {}
    to_delete: dict[str, set[str]] = {}  # deleted id -> the emails its inbox rows without a user id may hold
    to_record: dict[str, tuple[Delivery, Result]] = {}
    for delivery in deliveries:
        if delivery.message_id in state.finished:
            results.append(DUPLICATE)
            continue
        deletion = delivery.deletion
        previous = state.stored.get(deletion.id) if deletion is not None else None
        result = _decide(delivery, state)
        if result is APPLIED:
            if deletion is not None:
                to_write.pop(deletion.id, None)
                to_delete[deletion.id] = {e for e in (deletion.email, previous and previous.email) if e}
            else:
                assert delivery.user is not None
                to_write[delivery.user.id] = delivery.user
        if result.outcome.acknowledged:
            state.finished.add(delivery.message_id)
        to_record[delivery.message_id] = (delivery, result)
        results.append(result)
    if not to_record and not upcoming:
        return results, None

    exceptions, next_state = await _write(
        conn, to_write, to_delete, state.tombstoned, list(to_record.values()), upcoming
    )
    overtaken: set[str] = set()  # users a concurrent writer made newer: their rows are unknown here
    for index, delivery in enumerate(deliveries):
        if delivery.message_id not in exceptions or delivery.message_id not in to_record:
            continue
        if exceptions[delivery.message_id] is None:
            results[index] = DUPLICATE  # a concurrent writer finished this message id first
        elif results[index] is APPLIED and delivery.deletion is None:
            results[index] = STALE  # a concurrent writer made this user's row newer than ours
            assert delivery.user is not None
            overtaken.add(delivery.user.id)
    if next_state is None or overtaken:
        return results, None
    _carry_over(
        next_state,
        upcoming,
        [user for user_id, user in to_write.items() if user_id not in overtaken],
        to_delete,
    )
    next_state.finished.update(
        d.message_id for d, r in zip(deliveries, results, strict=True) if r.outcome.acknowledged
    )
    return results, next_state


def _keys(deliveries: Sequence[Delivery]) -> tuple[list[str], list[str], list[str]]:
    """The user ids, emails and message ids a batch's state is read by, sorted."""
    ids: set[str] = set()
    emails: set[str] = set()
    for delivery in deliveries:
        if delivery.user is not None:
            ids.add(delivery.user.id)
            emails.add(delivery.user.email)
        elif delivery.user_id is not None:  # a deletion, or a rejection whose id may be tombstoned
            ids.add(delivery.user_id)
    return sorted(ids), sorted(emails), sorted({d.message_id for d in deliveries})


def _state_from(rows: Sequence[asyncpg.Record]) -> BatchState:
    """A BatchState from READ_BATCH_STATE's rows, or the read-ahead rows of WRITE_BATCH."""
    state = BatchState()
    for row in rows:
        kind = row[0]
        if kind == "u":
            state.stored[row[1]] = UserRow(row[1], *row[3:9])
            state.email_owner[row[3]] = row[1]
        elif kind == "t":
            state.tombstoned.add(row[1])
        elif row[2] in FINISHED_STATUSES:
            state.finished.add(row[1])
    return state


def _carry_over(
    state: BatchState, upcoming: Sequence[Delivery], written: Sequence[UserRow], deleted: Iterable[str]
) -> None:
    """Bring a state read along with a batch's write (so, as it was before that write) up to date with
    the rows the write stored and deleted."""
    for user_id in deleted:
        state.tombstoned.add(user_id)
        previous = state.stored.pop(user_id, None)
        if previous is not None and state.email_owner.get(previous.email) == user_id:
            del state.email_owner[previous.email]
    ids, emails, _ = _keys(upcoming)
    relevant_ids, relevant_emails = set(ids), set(emails)
    for user in written:
        if user.id not in relevant_ids and user.email not in relevant_emails and user.id not in state.stored:
            continue
        previous = state.stored.get(user.id)
        if previous is not None and state.email_owner.get(previous.email) == user.id:
            del state.email_owner[previous.email]
        state.stored[user.id] = user
        state.email_owner[user.email] = user.id


def _decide(delivery: Delivery, state: BatchState) -> Result:
    """The outcome of one delivery given the state so far; updates that state when it applies."""
    stored, email_owner = state.stored, state.email_owner
    # A tombstone is final: whatever else a later event of that id says (it may be a replayed inbox row
    # erased down to its id, which validation would reject), it changes nothing.
    if delivery.user_id is not None and delivery.user_id in state.tombstoned:
        return STALE
    if delivery.rejection is not None:
        return Result(Outcome.REJECTED, str(delivery.rejection), delivery.rejection.field)
    if delivery.deletion is not None:
        deleted = stored.pop(delivery.deletion.id, None)
        if deleted is not None and email_owner.get(deleted.email) == deleted.id:
            del email_owner[deleted.email]
        state.tombstoned.add(delivery.deletion.id)
        return APPLIED
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


async def _write(
    conn: asyncpg.Connection,
    users: dict[str, UserRow],
    deleted: dict[str, set[str]],
    tombstoned: set[str],
    entries: Sequence[tuple[Delivery, Result]],
    upcoming: Sequence[Delivery],
) -> tuple[dict[str, str | None], BatchState | None]:
    """Write users, deletions (`deleted`: id -> emails of its inbox rows without a user id) and inbox rows
    in one statement (WRITE_BATCH) and read `upcoming`'s state as it was before the write. Inbox rows of a
    user in `tombstoned` are stored erased.

    Returns the message ids whose inbox row did not end as asked, with the status it has instead (None:
    not written, it had already ended for good; `stale`: an applied delivery's user was not written after
    all), usually none; and the state read for `upcoming` (None when there is no upcoming batch)."""
    # UserRow's field names are the users columns: msgspec encodes it as it is.
    user_rows = [users[user_id] for user_id in sorted(users)]
    inbox_rows = [
        _InboxJson(
            d.message_id, d.event_type, d.user_id, d.event_timestamp, d.received_at, r.outcome.value,
            r.detail, msgspec.Raw(d.payload.encode()),
            erase=d.user_id is not None and d.user_id in tombstoned,
        )
        for d, r in sorted(entries, key=lambda e: e[0].message_id)
    ]  # fmt: skip
    next_ids, next_emails, next_message_ids = _keys(upcoming)
    arguments = [
        _encode(user_rows).decode(), _encode(inbox_rows).decode(), next_ids, next_emails, next_message_ids,
        sorted(users),
    ]  # fmt: skip
    deleted_emails = {email for emails in deleted.values() for email in emails}
    rows = await conn.fetch(
        sql.WRITE_BATCH, *arguments, sorted(deleted), sorted(deleted_emails), lock_keys(users, deleted)
    )
    exceptions = {row[1]: row[2] for row in rows if row[0] == "x"}
    return exceptions, (_state_from(rows) if upcoming else None)


# Buckets of user ids, each one advisory lock: enough that two batches rarely share one, few enough that a
# batch of thousands (a replay) holds at most this many locks in PostgreSQL's shared lock table.
_LOCK_BUCKETS = 256


def lock_keys(writes: Iterable[str], deletions: Iterable[str]) -> list[int]:
    """The locks WRITE_BATCH takes for these users, in the one order every writer takes them (sorted): one
    per bucket of the id's CRC-32, `2 * bucket + 1` (exclusive) for a bucket holding a deleted user, else
    `2 * bucket` (shared). Every instance must compute them alike: that is what makes a write and a
    deletion of one user wait for each other."""
    keys = {zlib.crc32(user_id.encode()) % _LOCK_BUCKETS * 2 for user_id in writes}
    for user_id in deletions:
        key = zlib.crc32(user_id.encode()) % _LOCK_BUCKETS * 2
        keys.discard(key)
        keys.add(key + 1)
    return sorted(keys)


# WRITE_BATCH's inbox rows: field names are the columns jsonb_to_recordset reads. `erase` is left out
# when false (nearly always), which WRITE_BATCH reads as NULL.
class _InboxJson(msgspec.Struct, omit_defaults=True):
    message_id: str
    event_type: str
    user_id: str | None
    event_timestamp: datetime | None
    received_at: datetime
    status: str
    error: str | None
    payload: msgspec.Raw
    # Its user is deleted (before or by this batch): store the payload erased, and an `applied` one (the
    # deletion, or an earlier upsert it undid) expects no users row.
    erase: bool = False


_encode = msgspec.json.Encoder().encode
