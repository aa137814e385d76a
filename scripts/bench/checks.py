"""After the run: is every acknowledged delivery in the database, and does every user row hold the
newest state that was sent for it?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from bench.workload import Event, UserVersion

INBOX = "SELECT message_id, status FROM webhook_events"
USERS = "SELECT id, email, email_verified, name, image, created_at, updated_at FROM users"
COUNT_INBOX = "SELECT count(*) FROM webhook_events"

_COMMITTED = frozenset({"applied", "stale", "ignored"})


@dataclass(frozen=True, slots=True)
class Check:
    passed: bool
    text: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.text}"


async def check_ingest(
    database_url: str, sent: Sequence[Event], *, acknowledged: int, answered_all: bool
) -> list[Check]:
    """`sent`: every delivery wrk sent (in any order); `acknowledged`: how many were answered 2xx;
    `answered_all`: every sent delivery got a 2xx answer, so every one must be in the inbox."""
    conn = await asyncpg.connect(database_url)
    try:
        inbox = {r[0]: r[1] for r in await conn.fetch(INBOX)}
        users = {r[0]: UserVersion(*r) for r in await conn.fetch(USERS)}
    finally:
        await conn.close()

    by_id = {event.message_id: event for event in sent}
    foreign = [m for m in inbox if m not in by_id]
    ours = len(inbox) - len(foreign)
    by_status: dict[str, int] = {}
    for status in inbox.values():
        by_status[status] = by_status.get(status, 0) + 1
    statuses = ", ".join(f"{s} {n:,}" for s, n in sorted(by_status.items()))
    missing = [m for m in by_id if m not in inbox] if answered_all else []
    checks = [
        Check(
            ours >= acknowledged and not foreign and not missing,
            f"every acknowledged delivery is in the inbox: {acknowledged:,} acknowledged, {ours:,} rows "
            f"({statuses}); {len(foreign)} rows from outside the sent set"
            + (f"; {len(missing):,} sent and acknowledged but missing" if answered_all else ""),
        ),
        Check(
            all(s in _COMMITTED for s in inbox.values()),
            "no delivery of the (valid, conflict-free) stream was rejected or answered 409",
        ),
    ]

    # The newest state of each user among the deliveries that committed (when every delivery was
    # acknowledged, that is every delivery sent: "the newest update sent").
    expected: dict[str, UserVersion] = {}
    deleted: set[str] = set()
    for message_id, status in inbox.items():
        event = by_id.get(message_id)
        if event is None or status not in _COMMITTED:
            continue
        if event.event_type == "user.deleted":
            deleted.add(event.user.id)
            continue
        held = expected.get(event.user.id)
        if held is None or event.user.updated_at > held.updated_at:
            expected[event.user.id] = event.user
    for user_id in deleted:  # a deletion is final, whatever arrived around it
        expected.pop(user_id, None)
    wrong = [uid for uid, want in expected.items() if users.get(uid) != want]
    extra = [uid for uid in users if uid not in expected]
    example = (
        f" (e.g. user {wrong[0]}: stored {users.get(wrong[0])}, expected {expected[wrong[0]]})"
        if wrong
        else ""
    )
    checks.append(
        Check(
            not wrong and not extra,
            f"every user row equals the newest update sent: {len(expected):,} users, {len(wrong)} differ, "
            f"{len(extra)} unexpected rows ({len(deleted):,} users deleted, none of them left)" + example,
        )
    )
    return checks


async def count_inbox(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(COUNT_INBOX)
        return count
    finally:
        await conn.close()
