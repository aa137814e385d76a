"""Webhook load for the reliability tests: a stream of user updates, senders that record every
answer with its timing, a sender-side retry loop (as Better Auth's would), and the checks that
acknowledged work was not lost and the newest update won.

Every update of a user is newer than the previous one (`updatedAt` grows with a global sequence
number), and every email is unique to one update, so a correct service answers each delivery 200
(applied, stale or duplicate) or 503, never 409/422, and the final row of each user is the newest
update that was ever sent for it, once every delivery has been acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from tests.helpers.support import encode, envelope, iso, signed_headers, user_data
from tests.reliability.log_capture import PII_MARKER

ACKNOWLEDGED = frozenset({"applied", "duplicate", "stale", "ignored"})


@dataclass
class Answer:
    status: int
    outcome: str | None  # the "status" field of a 200 body
    retry_after: str | None
    started: float  # time.monotonic()
    finished: float
    instance: int = 0  # which service instance answered
    text: str = ""


@dataclass
class Delivery:
    message_id: str
    user_id: str
    seq: int  # creation order == updatedAt order
    name: str
    email: str
    updated_at: datetime
    body: bytes
    answers: list[Answer] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return any(a.status == 200 for a in self.answers)


class UpdateStream:
    """User updates over a fixed set of users, each newer than every earlier one."""

    def __init__(self, users: int, *, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.user_ids = [str(uuid.UUID(int=self.rng.getrandbits(128), version=4)) for _ in range(users)]
        self.created = datetime.now(UTC) - timedelta(hours=1)
        self._seq = itertools.count(1)
        self.sent: list[Delivery] = []

    def next(self, user_id: str | None = None) -> Delivery:
        seq = next(self._seq)
        user_id = user_id or self.rng.choice(self.user_ids)
        updated = self.created + timedelta(milliseconds=seq)
        name = f"{PII_MARKER} name {seq}"
        email = f"{PII_MARKER}-{user_id[:8]}-{seq}@example.com"
        data = user_data(user_id=user_id, email=email, name=name, created=self.created, updated=updated)
        kind = "user.created" if seq == 1 else "user.updated"
        delivery = Delivery(
            message_id=f"msg_{uuid.UUID(int=self.rng.getrandbits(128)).hex}",
            user_id=user_id,
            seq=seq,
            name=name,
            email=email,
            updated_at=datetime.fromisoformat(iso(updated).replace("Z", "+00:00")),
            body=encode(envelope(data, kind)),
        )
        self.sent.append(delivery)
        return delivery


async def send(client: httpx.AsyncClient, delivery: Delivery, *, instance: int = 0) -> Answer:
    """POST one delivery, freshly signed (a retry keeps its message id and gets a new timestamp)."""
    headers = signed_headers(delivery.body, message_id=delivery.message_id)
    started = time.monotonic()
    response = await client.post("/webhooks/better-auth", content=delivery.body, headers=headers)
    finished = time.monotonic()
    outcome = None
    if response.status_code == 200:
        outcome = response.json().get("status")
    answer = Answer(
        response.status_code, outcome, response.headers.get("retry-after"), started, finished, instance,
        response.text[:300],
    )  # fmt: skip
    delivery.answers.append(answer)
    return answer


async def run_load(
    client: httpx.AsyncClient, stream: UpdateStream, *, workers: int, stop: asyncio.Event
) -> None:
    """`workers` concurrent senders, each sending new updates until `stop` is set."""

    async def worker() -> None:
        while not stop.is_set():
            answer = await send(client, stream.next())
            if answer.status == 503:
                await asyncio.sleep(0.02)  # a real sender backs off; keep the outage from becoming a spin

    await asyncio.gather(*(worker() for _ in range(workers)))


async def deliver_until_acknowledged(
    client: httpx.AsyncClient, deliveries: Iterable[Delivery], *, within: float = 30.0, concurrency: int = 8
) -> None:
    """Retry every unacknowledged delivery until it is acknowledged, as the sender would."""
    deadline = time.monotonic() + within
    gate = asyncio.Semaphore(concurrency)

    async def retry(delivery: Delivery) -> None:
        async with gate:
            while not delivery.acknowledged:
                assert time.monotonic() < deadline, (
                    f"{delivery.message_id} never acknowledged: {delivery.answers}"
                )
                answer = await send(client, delivery)
                if answer.status != 200:
                    await asyncio.sleep(0.1)

    await asyncio.gather(*(retry(d) for d in deliveries if not d.acknowledged))


def unexpected_answers(deliveries: Sequence[Delivery]) -> list[tuple[str, Answer]]:
    """Anything but 200 (acknowledged outcome) or 503 with Retry-After."""
    bad = []
    for delivery in deliveries:
        for answer in delivery.answers:
            ok_200 = answer.status == 200 and answer.outcome in ACKNOWLEDGED
            ok_503 = answer.status == 503 and answer.retry_after is not None and answer.retry_after.isdigit()
            if not (ok_200 or ok_503):
                bad.append((delivery.message_id, answer))
    return bad


def status_counts(deliveries: Sequence[Delivery]) -> Counter[str]:
    return Counter(str(a.status) if a.outcome is None else a.outcome for d in deliveries for a in d.answers)


async def assert_converged(conn: asyncpg.Connection, deliveries: Sequence[Delivery]) -> None:
    """Nothing acknowledged was lost, and each user's row is the newest update sent for it.

    Call after `deliver_until_acknowledged`, so every delivery has been acknowledged at least once.
    """
    assert all(d.acknowledged for d in deliveries)
    inbox = {
        r["message_id"]: r["status"]
        for r in await conn.fetch(
            "SELECT message_id, status FROM webhook_events WHERE message_id = ANY($1::text[])",
            [d.message_id for d in deliveries],
        )
    }
    missing = [d.message_id for d in deliveries if inbox.get(d.message_id) not in ("applied", "stale")]
    assert not missing, f"{len(missing)} acknowledged deliveries are not in the inbox, e.g. {missing[:3]}"

    newest: dict[str, Delivery] = {}
    for delivery in deliveries:
        if delivery.user_id not in newest or delivery.seq > newest[delivery.user_id].seq:
            newest[delivery.user_id] = delivery
    rows = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, email, name, updated_at FROM users WHERE id = ANY($1::text[])", list(newest)
        )
    }
    wrong = []
    for user_id, delivery in newest.items():
        row = rows.get(user_id)
        if row is None or (row["name"], row["email"], row["updated_at"]) != (
            delivery.name, delivery.email, delivery.updated_at,
        ):  # fmt: skip
            wrong.append((user_id, delivery.seq, None if row is None else row["name"]))
    assert not wrong, f"{len(wrong)} users do not hold their newest update: {wrong[:5]}"

    # Every applied answer names an update that really is in the inbox as applied.
    applied = [d for d in deliveries if any(a.outcome == "applied" for a in d.answers)]
    not_applied = [d.message_id for d in applied if inbox.get(d.message_id) != "applied"]
    assert not not_applied, f"answered applied but recorded otherwise: {not_applied[:3]}"


def answers_by_message(deliveries: Sequence[Delivery]) -> dict[str, list[Answer]]:
    by_id: dict[str, list[Answer]] = defaultdict(list)
    for delivery in deliveries:
        by_id[delivery.message_id].extend(delivery.answers)
    return by_id
