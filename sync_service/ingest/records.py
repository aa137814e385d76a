"""The ingest core's vocabulary: one delivery as the core takes it, the user row it writes, and the
outcome it reports. Built by `webhooks.events` (and by replay through it); read by everything downstream.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec


class Outcome(StrEnum):
    """What happened to one delivery. The first four are acknowledged (2xx); the others are not."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    IGNORED = "ignored"
    REJECTED = "rejected"
    CONFLICT = "conflict"

    @property
    def acknowledged(self) -> bool:
        return self in ACKNOWLEDGED


ACKNOWLEDGED = frozenset({Outcome.APPLIED, Outcome.DUPLICATE, Outcome.STALE, Outcome.IGNORED})
# What an inbox row's status can be: every outcome but `duplicate`, which is answered, never recorded.
INBOX_STATUSES = tuple(outcome.value for outcome in Outcome if outcome is not Outcome.DUPLICATE)
# Inbox statuses that end a message id for good: a later delivery of it is a duplicate. `rejected` and
# `conflict` rows are evaluated again.
FINISHED_STATUSES = frozenset({Outcome.APPLIED, Outcome.STALE, Outcome.IGNORED})


# The per-delivery records below are frozen msgspec Structs rather than dataclasses: a frozen dataclass
# sets each field through object.__setattr__ (about 1.2 us per UserRow against 0.1 us), and every delivery
# builds several. gc=False: they hold no reference cycles, so the collector need not track them.


class UserRow(msgspec.Struct, frozen=True, gc=False):
    """A user as stored: the values an applied event writes."""

    id: str
    email: str
    email_verified: bool
    name: str | None
    image: str | None
    created_at: datetime
    updated_at: datetime


class Rejection(msgspec.Struct, frozen=True, gc=False):
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class Deletion(msgspec.Struct, frozen=True, gc=False):
    """A valid `user.deleted`: the id to delete, and the email its payload gave (not validated: a deletion
    is never blocked by a field; only used to find inbox rows without a user id that carry it)."""

    id: str
    email: str | None


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """One verified webhook message, ready for the ingest core.

    Exactly one of `user` (a valid creation or update), `deletion` (a valid deletion), `rejection` (a
    handled type that failed validation) or none (a type we ignore) is set. `user_id` is the id the
    payload names whenever it could be read (also for a rejection), so a tombstoned id is known.
    """

    message_id: str
    event_type: str
    event_timestamp: datetime | None
    received_at: datetime
    payload: str  # the JSON object to store in the inbox (jsonb-safe, see `ingest.payloads`)
    user_id: str | None
    user: UserRow | None = None
    rejection: Rejection | None = None
    deletion: Deletion | None = None
