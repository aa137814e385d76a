"""Webhook payloads: the envelope Better Auth sends, decoded strictly, and the seed's validation rules.

`parse_delivery` turns verified bytes into a `Delivery`: either a valid user event, an event type we
do not handle, or a rejection naming the field and the reason. Only a body that is not a UTF-8 JSON
object at all raises (`MalformedBody`, answered 400); everything else is an outcome the ingest core
records. Every pattern below is matched against the whole string (`fullmatch`: `$` would also match
before a final newline).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec

from sync_service.config import STORABLE_USER_ID, Settings, UserIdFormat
from sync_service.errors import MalformedBody
from sync_service.ingest.payloads import UnstorablePayload, needs_rewrite, storable_payload
from sync_service.ingest.records import Deletion, Delivery, Rejection, UserRow

DELETED = "user.deleted"
HANDLED_TYPES = frozenset({"user.created", "user.updated", DELETED})

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]

# zod's default email pattern (Better Auth validates emails with zod), so what Better Auth accepts,
# we accept; plus RFC 5321's length limits (`_email_ok`).
_EMAIL = re.compile(
    r"(?!\.)(?!.*\.\.)[A-Za-z0-9_'+\-.]*[A-Za-z0-9_+-]@(?:[A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}"
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_OPAQUE_ID = STORABLE_USER_ID  # USER_ID_FORMAT=opaque: any id the service can store
_MESSAGE_ID = re.compile(r"[\x21-\x7e]{1,255}")
_EMAIL_MAX, _LOCAL_PART_MAX, _LABEL_MAX = 254, 64, 63


@dataclass(frozen=True, slots=True)
class Rules:
    """How an event is validated (USER_ID_FORMAT, WEBHOOK_CLOCK_SKEW_SECONDS): the same for the route,
    replay and backfill."""

    user_id_format: UserIdFormat
    clock_skew: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(settings.user_id_format, timedelta(seconds=settings.webhook_clock_skew_seconds))


class Envelope(msgspec.Struct):
    type: str
    data: msgspec.Raw = msgspec.Raw(b"null")
    timestamp: AwareDatetime | None = None


class UserData(msgspec.Struct, rename="camel"):
    """Better Auth's user row. Unknown fields (plugins add some, e.g. `role`) are ignored."""

    id: str
    email: str
    email_verified: bool
    created_at: AwareDatetime
    updated_at: AwareDatetime
    name: str | None = None
    image: str | None = None


def check_message_id(message_id: str) -> str:
    if not _MESSAGE_ID.fullmatch(message_id):
        raise MalformedBody("webhook-id must be 1-255 visible ASCII characters")
    return message_id


def parse_delivery(
    message_id: str,
    body: bytes,
    rules: Rules,
    *,
    received_at: datetime | None = None,
) -> Delivery:
    """Decode and validate one verified body. Raises `MalformedBody` only when it is not a JSON object."""
    received_at = received_at or datetime.now(UTC)
    try:
        text = body.decode()  # a signature proves who sent the bytes, not that they are text
    except UnicodeDecodeError:
        raise MalformedBody("body is not UTF-8 JSON") from None
    # `body[:1]` first: lstrip() copies the body, and nearly every body starts with its `{`.
    if body[:1] != b"{" and body.lstrip()[:1] != b"{":
        raise MalformedBody("body must be a JSON object")
    try:
        envelope = msgspec.json.decode(body, type=Envelope)
    except RecursionError:
        raise MalformedBody("body is nested too deeply") from None
    except msgspec.ValidationError as exc:
        # Wrong shape: kept in the inbox as rejected so operators can see it, if it is JSON at all (the
        # typed decoder stops at the first wrong value, before it would see the rest).
        payload = _checked_payload(text, rewrite=True)
        event_type = _loose_type(body)
        return Delivery(
            message_id, event_type, None, received_at, payload, None,
            rejection=_rejection_from(exc, prefix="$"),
        )  # fmt: skip
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"body is not valid JSON: {exc}") from None

    payload = _checked_payload(text, rewrite=needs_rewrite(text))
    if envelope.timestamp is not None and not _utc_representable(envelope.timestamp):
        return Delivery(
            message_id, _safe_type(envelope.type), None, received_at, payload, None,
            rejection=Rejection("timestamp", "is out of range"),
        )  # fmt: skip
    if envelope.type == DELETED:
        return _deletion(message_id, body, envelope, received_at, rules.user_id_format)
    if envelope.type not in HANDLED_TYPES:
        return Delivery(message_id, _safe_type(envelope.type), envelope.timestamp, received_at, payload, None)

    try:
        data = msgspec.json.decode(envelope.data, type=UserData)
    except RecursionError:
        raise MalformedBody("body is nested too deeply") from None
    except msgspec.ValidationError as exc:
        bad_shape = _rejection_from(exc, prefix="$.data")
        loose_id = _loose_user_id(envelope.data)
        return Delivery(
            message_id, envelope.type, envelope.timestamp, received_at, payload, loose_id, rejection=bad_shape
        )

    rejection = validate_user(data, rules, now=received_at)
    user_id = data.id if _OPAQUE_ID.fullmatch(data.id) else None
    if rejection is not None:
        return Delivery(
            message_id, envelope.type, envelope.timestamp, received_at, payload, user_id, rejection=rejection
        )
    user = UserRow(
        data.id, data.email, data.email_verified, data.name, data.image, data.created_at, data.updated_at
    )
    return Delivery(message_id, envelope.type, envelope.timestamp, received_at, payload, user_id, user=user)


class _DeletedUser(msgspec.Struct):
    """What a deletion reads of Better Auth's user row; nothing else is validated."""

    id: Any = None
    email: Any = None


class _Timestamp(msgspec.Struct):
    timestamp: msgspec.Raw = msgspec.Raw(b"null")


def _deletion(
    message_id: str, body: bytes, envelope: Envelope, received_at: datetime, user_id_format: UserIdFormat
) -> Delivery:
    """A `user.deleted`. Only `data.id` is required; the inbox keeps only `type`, `timestamp` and
    `data.id` of it from the start (erasure: the deleted person's data is what the event is about)."""
    rejection: Rejection | None
    try:
        data = msgspec.json.decode(envelope.data, type=_DeletedUser)
    except RecursionError:
        raise MalformedBody("body is nested too deeply") from None
    except msgspec.ValidationError as exc:
        data, rejection = _DeletedUser(), _rejection_from(exc, prefix="$.data")
    else:
        rejection = _id_rejection(data.id, user_id_format)
    # Kept (and erased by) only when it looks like an id at all, as for writes: never free text.
    user_id = data.id if isinstance(data.id, str) and _OPAQUE_ID.fullmatch(data.id) else None
    erased: dict[str, Any] = {
        "type": DELETED,
        "timestamp": msgspec.json.decode(body, type=_Timestamp).timestamp,
    }
    erased["data"] = {} if user_id is None else {"id": user_id}
    payload = msgspec.json.encode(erased).decode()
    if rejection is not None:
        return Delivery(
            message_id, DELETED, envelope.timestamp, received_at, payload, user_id, rejection=rejection
        )
    assert user_id is not None  # a valid id is a storable one
    # Only to find inbox rows without a user id that carry it: an address the service could have stored.
    email = data.email if isinstance(data.email, str) and _email_ok(data.email) else None
    return Delivery(
        message_id, DELETED, envelope.timestamp, received_at, payload, user_id,
        deletion=Deletion(user_id, email),
    )  # fmt: skip


def _id_rejection(user_id: object, user_id_format: UserIdFormat) -> Rejection | None:
    """The seed's id rule (USER_ID_FORMAT): the one check a deletion shares with a write."""
    if not isinstance(user_id, str):
        return Rejection("data.id", "is required and must be a string")
    if user_id_format == "uuid":
        if not _UUID.fullmatch(user_id):
            return Rejection("data.id", "must be a UUID (USER_ID_FORMAT=uuid)")
    elif not _OPAQUE_ID.fullmatch(user_id):
        return Rejection(
            "data.id", "must be 1-255 characters of A-Z, a-z, 0-9, _ or - (USER_ID_FORMAT=opaque)"
        )
    return None


def validate_user(data: UserData, rules: Rules, *, now: datetime) -> Rejection | None:
    """The seed's rules, plus what PostgreSQL cannot store. Returns the first problem found."""
    if (rejection := _id_rejection(data.id, rules.user_id_format)) is not None:
        return rejection
    if not _email_ok(data.email):
        return Rejection("data.email", "is not a valid email address")
    for field, moment in (("data.createdAt", data.created_at), ("data.updatedAt", data.updated_at)):
        if not _utc_representable(moment):
            return Rejection(field, "is out of range")
        # updatedAt orders writes: one far in the future would make its row immune to every later update.
        if moment > now + rules.clock_skew:
            return Rejection(field, "is in the future")
    if data.updated_at < data.created_at:
        return Rejection("data.updatedAt", "is earlier than createdAt")
    for field, value in (("data.name", data.name), ("data.image", data.image)):
        if value is not None and not _storable(value):
            return Rejection(field, "contains a NUL character, which PostgreSQL cannot store")
    return None


def _email_ok(email: str) -> bool:
    if len(email) > _EMAIL_MAX or not _EMAIL.fullmatch(email):
        return False
    local, _, domain = email.rpartition("@")
    return len(local) <= _LOCAL_PART_MAX and all(len(label) <= _LABEL_MAX for label in domain.split("."))


def _storable(text: str) -> bool:
    return "\x00" not in text


def _utc_representable(moment: datetime) -> bool:
    """Whether the instant exists in UTC between years 1 and 9999 (e.g. 9999-12-31T23:00-14:00 does not)."""
    if moment.tzinfo is UTC:  # msgspec's `Z` and `+00:00`, i.e. nearly every event: nothing to convert
        return True
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _checked_payload(text: str, *, rewrite: bool) -> str:
    """The body as the inbox stores it (see `ingest.payloads`): as it came unless `rewrite`."""
    if not rewrite:
        return text
    try:
        return storable_payload(text)
    except UnstorablePayload as exc:
        raise MalformedBody(f"body {exc}") from None


_MISSING_FIELD = re.compile(r"Object missing required field `([^`]*)`")


def _rejection_from(exc: msgspec.ValidationError, *, prefix: str) -> Rejection:
    """msgspec says e.g. "Expected `str`, got `int` - at `$.email`"; name the field as the sender
    spelled it (`data.email`) and keep the reason."""
    reason, _, path = str(exc).rpartition(" - at `")
    if not reason:
        reason, path = str(exc), "$`"
    path = prefix + path.rstrip("`").removeprefix("$")
    if missing := _MISSING_FIELD.fullmatch(reason):
        path, reason = f"{path}.{missing.group(1)}", "is required"
    else:
        reason = reason[:1].lower() + reason[1:]
    return Rejection(path.removeprefix("$").removeprefix(".") or "body", reason)


def _safe_type(event_type: str) -> str:
    return event_type.replace("\x00", "\ufffd")[:200]


def _loose_type(body: bytes) -> str:
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return "unknown"
    kind = value.get("type") if isinstance(value, dict) else None
    return _safe_type(kind) if isinstance(kind, str) else "unknown"


def _loose_user_id(data: msgspec.Raw) -> str | None:
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    user_id = value.get("id") if isinstance(value, dict) else None
    # Kept for operators' filters only when it looks like an id at all: never free text (PII, newlines).
    return user_id if isinstance(user_id, str) and _OPAQUE_ID.fullmatch(user_id) else None
