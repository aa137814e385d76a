"""The deliveries a Better Auth deployment would send, pre-signed with svix's signer, as raw HTTP requests.

The stream mixes user.created of new users with user.updated of users created earlier in the stream
(`updatedAt` always increasing), so the ingest path does the work it does in production: inserts,
updates, ordering checks and the odd email change; the deletion mix (`delete_share`) also deletes users
created earlier (`user.deleted` with the row as it was, as Better Auth's delete.after hook sends it), never
touched again afterwards. Every message id is unique.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

import msgspec
from svix.webhooks import Webhook

from sync_service.ingest.records import UserRow

WEBHOOK_PATH = "/webhooks/better-auth"
_FIRST_NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory")
_LAST_NAMES = ("Smith", "Jones", "Garcia", "Müller", "Rossi", "Dubois", "Tanaka", "Kowalski", "Silva")


# One state of a user, as Better Auth sends it and as the users table must end up holding it.
UserVersion: TypeAlias = UserRow


@dataclass(frozen=True, slots=True)
class Event:
    message_id: str
    event_type: str
    user: UserVersion
    body: bytes


def iso(moment: datetime) -> str:
    """Better Auth's date format (`Date#toJSON`): UTC, milliseconds, Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Workload:
    """A deterministic (seeded) stream of deliveries; successive `events` calls continue the stream."""

    def __init__(self, seed: int = 1, start: datetime | None = None) -> None:
        self._rng = random.Random(seed)
        # A virtual clock one millisecond per event, started in the past so that no createdAt is in the
        # future (the service rejects that) however long the stream gets.
        self._clock = (start or datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
        self._users: list[UserVersion] = []
        self._user_index: dict[str, int] = {}

    def events(self, count: int, *, update_share: float = 0.5, delete_share: float = 0.0) -> list[Event]:
        return [self._next(update_share, delete_share) for _ in range(count)]

    def new_users(self, count: int) -> list[Event]:
        return [self._next(0.0, 0.0) for _ in range(count)]

    def _tick(self) -> datetime:
        self._clock += timedelta(milliseconds=1)
        return self._clock

    def _next(self, update_share: float, delete_share: float) -> Event:
        rng = self._rng
        now = self._tick()
        # Only drawn when asked for, so the streams without deletions stay what they were for each seed.
        if delete_share and self._users and rng.random() < delete_share:
            user = self._deleted(rng.randrange(len(self._users)))
            event_type = "user.deleted"
        elif self._users and rng.random() < update_share:
            index = rng.randrange(len(self._users))
            user = self._updated(self._users[index], now)
            self._users[index] = user
            event_type = "user.updated"
        else:
            user = self._created(now)
            self._user_index[user.id] = len(self._users)
            self._users.append(user)
            event_type = "user.created"
        body = msgspec.json.encode({"type": event_type, "timestamp": iso(now), "data": user_data(user)})
        return Event(f"msg_{uuid.UUID(int=rng.getrandbits(128), version=4).hex}", event_type, user, body)

    def _deleted(self, index: int) -> UserVersion:
        """Remove the user at `index` (the last one takes its place) and return it as it was."""
        user, last = self._users[index], self._users.pop()
        del self._user_index[user.id]
        if last is not user:
            self._users[index] = last
            self._user_index[last.id] = index
        return user

    def _created(self, now: datetime) -> UserVersion:
        rng = self._rng
        user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
        return UserVersion(
            user_id, f"{user_id.replace('-', '')[:20]}@example.com", False, name, None, now, now
        )

    def _updated(self, user: UserVersion, now: datetime) -> UserVersion:
        rng = self._rng
        roll = rng.random()
        if roll < 0.3:
            return msgspec.structs.replace(user, email_verified=True, updated_at=now)
        if roll < 0.6:
            image = f"https://cdn.example.com/avatars/{user.id}/{rng.randrange(10**6)}.png"
            return msgspec.structs.replace(user, image=image, updated_at=now)
        if roll < 0.9:
            name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
            return msgspec.structs.replace(user, name=name, updated_at=now)
        # An email change to an address nobody else ever holds (so no 409 is expected).
        email = f"{user.id.replace('-', '')[:20]}.{now.timestamp():.3f}@example.org"
        return msgspec.structs.replace(user, email=email, email_verified=False, updated_at=now)


def user_data(user: UserVersion) -> dict[str, object]:
    """The user as Better Auth sends it, in a webhook's `data` and in a token's payload."""
    data: dict[str, object] = {
        "name": user.name,
        "email": user.email,
        "emailVerified": user.email_verified,
        "createdAt": iso(user.created_at),
        "updatedAt": iso(user.updated_at),
        "id": user.id,
    }
    if user.image is not None:
        data["image"] = user.image  # Better Auth leaves `image` out when it is unset
    return data


def http_request(
    method: str, path: str, host: str, headers: Iterable[tuple[str, str]], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed_request(event: Event, signer: Webhook, host: str, signed_at: datetime) -> bytes:
    """The delivery as Better Auth's hook sends it: the body, signed by svix's signer, webhook-* headers."""
    signature = signer.sign(event.message_id, signed_at, event.body.decode())
    headers = (
        ("Content-Type", "application/json"),
        ("webhook-id", event.message_id),
        ("webhook-timestamp", str(int(signed_at.timestamp()))),
        ("webhook-signature", signature),
    )
    return http_request("POST", WEBHOOK_PATH, host, headers, event.body)


def write_thread_files(prefix: Path, requests: Sequence[bytes], threads: int) -> list[list[int]]:
    """Split requests round-robin over `threads` files `prefix.N` (length-prefixed records, read by
    requests.lua); returns, per thread, the indexes of `requests` in the order that thread sends them."""
    order: list[list[int]] = [list(range(t, len(requests), threads)) for t in range(threads)]
    for thread, indexes in enumerate(order):
        with open(f"{prefix}.{thread}", "wb") as out:
            for i in indexes:
                out.write(b"%d\n" % len(requests[i]))
                out.write(requests[i])
    return order
