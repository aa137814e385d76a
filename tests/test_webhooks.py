"""POST /webhooks/better-auth against DESIGN's status table, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sync_service.webhooks.signatures import signature_headers
from tests.helpers.support import (
    SECRET,
    SECRET_2,
    ServiceUnderTest,
    deliver,
    encode,
    envelope,
    iso,
    make_settings,
    signed_headers,
    start_service,
    user_data,
)

# Bodies a real Better Auth 1.7.25 server produced (a copy of ../shared/fixtures/).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "better-auth-1.7.25-deliveries.jsonl"
_now = datetime.now(UTC)
NOW = _now.replace(microsecond=_now.microsecond // 1000 * 1000)  # Better Auth sends milliseconds


async def _user(db: asyncpg.Connection, user_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)


async def _inbox(db: asyncpg.Connection, message_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM webhook_events WHERE message_id = $1", message_id)


async def _counts(db: asyncpg.Connection) -> tuple[int, int]:
    users = await db.fetchval("SELECT count(*) FROM users")
    events = await db.fetchval("SELECT count(*) FROM webhook_events")
    return users, events


# --- 200 applied / duplicate / stale / ignored -------------------------------------------------------


async def test_user_created_is_written_with_every_field(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    created = datetime(2026, 11, 27, 11, 58, 53, 300_000, tzinfo=UTC)
    data = user_data(created=created, image="https://example.com/a.png", role="admin", banned=False)
    data["emailVerified"] = True
    async with service.client() as client:
        response = await deliver(client, envelope(data), message_id="msg_created_1")

    assert response.status_code == 200
    assert response.json() == {"status": "applied"}
    row = await _user(db, data["id"])
    assert row is not None
    assert dict(row) == {
        "id": data["id"],
        "email": data["email"],
        "email_verified": True,
        "name": "Alice",
        "image": "https://example.com/a.png",
        "created_at": created,
        "updated_at": created,
    }
    event = await _inbox(db, "msg_created_1")
    assert event is not None
    assert (event["status"], event["event_type"], event["user_id"]) == ("applied", "user.created", data["id"])
    assert json.loads(event["payload"])["data"]["id"] == data["id"]


async def test_name_and_image_may_be_absent_or_null(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    absent = user_data()
    del absent["name"]
    null = user_data(name=None, image=None)
    async with service.client() as client:
        assert (await deliver(client, envelope(absent))).json() == {"status": "applied"}
        assert (await deliver(client, envelope(null))).json() == {"status": "applied"}
    for data in (absent, null):
        row = await _user(db, data["id"])
        assert row is not None
        assert (row["name"], row["image"]) == (None, None)


async def test_user_updated_overwrites_an_older_row(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    created = NOW - timedelta(hours=1)
    first = user_data(created=created)
    second = {
        **first,
        "name": "Alice B",
        "email": "alice.b@example.com",
        "updatedAt": iso(created + timedelta(minutes=5)),
    }
    async with service.client() as client:
        assert (await deliver(client, envelope(first))).json() == {"status": "applied"}
        assert (await deliver(client, envelope(second, "user.updated"))).json() == {"status": "applied"}
    row = await _user(db, first["id"])
    assert row is not None
    assert (row["name"], row["email"]) == ("Alice B", "alice.b@example.com")


async def test_older_update_after_newer_is_stale_and_changes_nothing(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    created = NOW - timedelta(hours=1)
    older = user_data(created=created, updated=created + timedelta(minutes=1), name="Old")
    newer = {**older, "name": "New", "updatedAt": iso(created + timedelta(minutes=2))}
    async with service.client() as client:
        assert (await deliver(client, envelope(newer, "user.updated"))).json() == {"status": "applied"}
        response = await deliver(client, envelope(older, "user.updated"), message_id="msg_old")
    assert response.status_code == 200
    assert response.json() == {"status": "stale"}
    row = await _user(db, older["id"])
    assert row is not None
    assert row["name"] == "New"
    event = await _inbox(db, "msg_old")
    assert event is not None
    assert event["status"] == "stale"


async def test_same_message_id_twice_is_a_duplicate(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    data = user_data()
    async with service.client() as client:
        first = await deliver(client, envelope(data), message_id="msg_dup")
        await db.execute("UPDATE users SET name = 'changed by hand' WHERE id = $1", data["id"])
        second = await deliver(client, envelope(data), message_id="msg_dup")
    assert first.json() == {"status": "applied"}
    assert second.status_code == 200
    assert second.json() == {"status": "duplicate"}
    row = await _user(db, data["id"])
    assert row is not None
    assert row["name"] == "changed by hand"  # the duplicate was not applied again
    assert await _counts(db) == (1, 1)


async def test_acknowledgements_stay_the_same_when_middleware_adds_headers(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    # Acknowledgements are ready-made responses shared by every request (routes/webhooks.py); the CORS
    # middleware adds its headers to each answer, and they must not pile up on the shared one.
    origin = "https://app.example.com"
    settings = make_settings(migrated_database_url, CORS_ALLOW_ORIGINS=origin)
    users = [user_data() for _ in range(3)]
    with start_service(settings) as service:
        async with service.client() as client:
            answers = [
                await deliver(
                    client, envelope(users[i % 3]), message_id=f"msg_cors_{i % 3}", headers={"Origin": origin}
                )
                for i in range(6)
            ]
    assert [a.json() for a in answers] == [{"status": "applied"}] * 3 + [{"status": "duplicate"}] * 3
    for answer in answers:
        assert answer.headers.get_list("access-control-allow-origin") == [origin]
        assert answer.headers.get_list("content-type") == ["application/json"]
        assert answer.headers["content-length"] == str(len(answer.content))
    assert await _counts(db) == (3, 3)


async def test_same_message_id_concurrently_is_applied_once(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    body = encode(envelope(user_data()))
    async with service.client() as client:
        responses = await asyncio.gather(*(deliver(client, body, message_id="msg_storm") for _ in range(30)))
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["applied"] + ["duplicate"] * 29
    assert await _counts(db) == (1, 1)


async def test_same_content_under_a_new_message_id_changes_nothing(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    data = user_data()
    async with service.client() as client:
        assert (await deliver(client, envelope(data))).json() == {"status": "applied"}
        assert (await deliver(client, envelope(data))).json() == {"status": "stale"}
    assert await _counts(db) == (1, 2)


async def test_concurrent_updates_of_one_user_in_random_order_end_at_the_newest(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    created = NOW - timedelta(hours=1)
    base = user_data(created=created)
    versions = [
        {**base, "name": f"v{i}", "updatedAt": iso(created + timedelta(seconds=i))} for i in range(60)
    ]
    random.Random(7).shuffle(versions)
    async with service.client() as client:
        responses = await asyncio.gather(*(deliver(client, envelope(v, "user.updated")) for v in versions))
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["status"] for r in responses} <= {"applied", "stale"}
    row = await _user(db, base["id"])
    assert row is not None
    assert row["name"] == "v59"
    assert row["updated_at"] == created + timedelta(seconds=59)


@pytest.mark.parametrize("event_type", ["session.created", "something.new", "user.deleted.later"])
async def test_unhandled_event_types_are_ignored(
    service: ServiceUnderTest, db: asyncpg.Connection, event_type: str
) -> None:
    data = user_data()
    async with service.client() as client:
        response = await deliver(client, envelope(data, event_type), message_id=f"msg_{event_type}")
    assert response.status_code == 200
    assert response.json() == {"status": "ignored"}
    assert await _user(db, data["id"]) is None
    event = await _inbox(db, f"msg_{event_type}")
    assert event is not None
    assert (event["status"], event["event_type"]) == ("ignored", event_type)


# --- 401 ----------------------------------------------------------------------------------------------


def _bad_header_cases() -> list[tuple[str, dict[str, str]]]:
    body = encode(envelope(user_data()))
    good = signed_headers(body)
    old = signed_headers(body, timestamp=NOW - timedelta(minutes=10))
    future = signed_headers(body, timestamp=NOW + timedelta(minutes=10))
    wrong_secret = signed_headers(body, secrets=("whsec_" + "A" * 32,))
    return [
        ("no headers", {"content-type": "application/json"}),
        ("missing signature", {k: v for k, v in good.items() if k != "webhook-signature"}),
        ("missing id", {k: v for k, v in good.items() if k != "webhook-id"}),
        ("missing timestamp", {k: v for k, v in good.items() if k != "webhook-timestamp"}),
        ("wrong secret", wrong_secret),
        ("timestamp too old", old),
        ("timestamp too new", future),
        ("timestamp not a number", {**good, "webhook-timestamp": "yesterday"}),
        ("signature without comma", {**good, "webhook-signature": "garbage"}),
        ("signature with two commas", {**good, "webhook-signature": "v1,a,b"}),
        ("signature bad base64", {**good, "webhook-signature": "v1,abc"}),
        ("only v1a signature", {**good, "webhook-signature": "v1a,AAAA"}),
        ("id changed after signing", {**good, "webhook-id": "msg_other"}),
        ("empty signature", {**good, "webhook-signature": ""}),
    ]


@pytest.mark.parametrize(("case", "headers"), _bad_header_cases(), ids=[c for c, _ in _bad_header_cases()])
async def test_bad_signature_headers_are_401_and_change_nothing(
    service: ServiceUnderTest, db: asyncpg.Connection, case: str, headers: dict[str, str]
) -> None:
    body = encode(envelope(user_data()))
    async with service.client() as client:
        response = await client.post("/webhooks/better-auth", content=body, headers=headers)
    assert response.status_code == 401, case
    assert response.json()["detail"] == "invalid webhook signature"
    assert "whsec" not in response.text
    assert await _counts(db) == (0, 0)


async def test_body_changed_after_signing_is_401(service: ServiceUnderTest, db: asyncpg.Connection) -> None:
    body = encode(envelope(user_data()))
    headers = signed_headers(body)
    async with service.client() as client:
        response = await client.post(
            "/webhooks/better-auth", content=body.replace(b"Alice", b"Mallory"), headers=headers
        )
    assert response.status_code == 401
    assert await _counts(db) == (0, 0)


async def test_non_utf8_body_is_401_not_500(service: ServiceUnderTest, db: asyncpg.Connection) -> None:
    body = b'{"type": "user.created", "data": "\xff\xfe"}'
    headers = signed_headers(b"{}")  # cannot sign non-UTF-8 with svix's str API; any signature will do
    async with service.client() as client:
        response = await client.post("/webhooks/better-auth", content=body, headers=headers)
    assert response.status_code == 401


# --- header families and secret rotation --------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
async def test_both_header_families_are_accepted(
    service: ServiceUnderTest, db: asyncpg.Connection, prefix: str
) -> None:
    async with service.client() as client:
        response = await deliver(client, envelope(user_data()), prefix=prefix, message_id=f"msg_{prefix}")
    assert response.json() == {"status": "applied"}
    assert await _inbox(db, f"msg_{prefix}") is not None


async def test_svix_headers_win_when_both_families_are_present(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    body = encode(envelope(user_data()))
    headers = {**signed_headers(body, prefix="webhook", message_id="msg_webhook_family"),
               **signed_headers(body, prefix="svix", message_id="msg_svix_family")}  # fmt: skip
    async with service.client() as client:
        response = await client.post("/webhooks/better-auth", content=body, headers=headers)
    assert response.json() == {"status": "applied"}
    assert await _inbox(db, "msg_svix_family") is not None
    assert await _inbox(db, "msg_webhook_family") is None


def test_signature_headers_are_picked_from_the_raw_header_list() -> None:
    raw = [
        (b"host", b"127.0.0.1"),
        (b"Webhook-Id", b"msg_1"),  # ASGI servers lowercase names; a hand-built scope may not
        (b"webhook-timestamp", b"1764244733"),
        (b"webhook-signature", b"v1,first"),
        (b"webhook-signature", b"v1,second"),
        (b"svix-id", b"msg_2"),
        (b"authorization", b"Bearer secret-token"),
    ]
    assert signature_headers(raw) == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1764244733",
        "webhook-signature": "v1,second",  # as a mapping of the headers would have it: the last one
        "svix-id": "msg_2",
    }


@pytest.mark.parametrize(
    ("signed_with", "expected"),
    [((SECRET,), 200), ((SECRET_2,), 200), ((SECRET, SECRET_2), 200), (("whsec_" + "B" * 32,), 401)],
    ids=["old secret", "new secret", "both signatures in one header", "unknown secret"],
)
async def test_secret_rotation(
    migrated_database_url: str, db: asyncpg.Connection, signed_with: tuple[str, ...], expected: int
) -> None:
    settings = make_settings(migrated_database_url, WEBHOOK_SECRET=f"{SECRET}, {SECRET_2}")
    with start_service(settings) as service:
        async with service.client() as client:
            response = await deliver(client, envelope(user_data()), secrets=signed_with)
    assert response.status_code == expected


# --- 413 and 400 --------------------------------------------------------------------------------------


async def test_body_over_the_limit_is_413(migrated_database_url: str, db: asyncpg.Connection) -> None:
    settings = make_settings(migrated_database_url, WEBHOOK_MAX_BODY_BYTES="2048")
    body = encode(envelope(user_data(name="x" * 4096)))
    with start_service(settings) as service:
        async with service.client() as client:
            response = await client.post("/webhooks/better-auth", content=body, headers=signed_headers(body))
    assert response.status_code == 413
    assert await _counts(db) == (0, 0)


async def test_chunked_body_over_the_limit_is_413(migrated_database_url: str, db: asyncpg.Connection) -> None:
    settings = make_settings(migrated_database_url, WEBHOOK_MAX_BODY_BYTES="2048")
    body = encode(envelope(user_data(name="x" * 4096)))

    async def chunks() -> Any:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    with start_service(settings) as service:
        async with service.client() as client:
            response = await client.post(
                "/webhooks/better-auth", content=chunks(), headers=signed_headers(body)
            )
    assert response.status_code == 413
    assert await _counts(db) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'"a string"', b"42", b"null", b"", b'{"type": "user.created"', b"{,}"],
    ids=["text", "array", "string", "number", "null", "empty", "truncated", "broken object"],
)
async def test_verified_body_that_is_not_a_json_object_is_400(
    service: ServiceUnderTest, db: asyncpg.Connection, body: bytes
) -> None:
    async with service.client() as client:
        response = await client.post("/webhooks/better-auth", content=body, headers=signed_headers(body))
    assert response.status_code == 400
    assert response.json()["detail"]
    assert await _counts(db) == (0, 0)


# --- 422 ----------------------------------------------------------------------------------------------


def _invalid_cases() -> list[tuple[str, dict[str, Any], str]]:
    created = NOW - timedelta(hours=1)

    def with_(**changes: Any) -> dict[str, Any]:
        data = user_data(user_id="7add488a-d920-479d-ba11-612a1390ddba", created=created)
        data.update(changes)
        return {k: v for k, v in data.items() if v is not _DROP}

    return [
        ("bad email", envelope(with_(email="not-an-email")), "data.email"),
        ("email with space", envelope(with_(email="a b@example.com")), "data.email"),
        ("email too long", envelope(with_(email="a" * 250 + "@example.com")), "data.email"),
        ("id not a uuid", envelope(with_(id="1AJsC9tjCvQhaPByLqNsbmK6D3Kqenrv")), "data.id"),
        (
            "created in the future",
            envelope(with_(createdAt=iso(NOW + timedelta(hours=1)), updatedAt=iso(NOW + timedelta(hours=1)))),
            "data.createdAt",
        ),
        ("updated in the future", envelope(with_(updatedAt=iso(NOW + timedelta(hours=1)))), "data.updatedAt"),
        (
            "updated before created",
            envelope(with_(updatedAt=iso(created - timedelta(seconds=1)))),
            "data.updatedAt",
        ),
        ("NUL in name", envelope(with_(name="Al\x00ice")), "data.name"),
        ("NUL in image", envelope(with_(image="https://x/\x00")), "data.image"),
        ("email missing", envelope(with_(email=_DROP)), "data.email"),
        ("id missing", envelope(with_(id=_DROP)), "data.id"),
        ("updatedAt missing", envelope(with_(updatedAt=_DROP)), "data.updatedAt"),
        ("emailVerified wrong type", envelope(with_(emailVerified="yes")), "data.emailVerified"),
        ("email wrong type", envelope(with_(email=42)), "data.email"),
        ("createdAt not a date", envelope(with_(createdAt="yesterday")), "data.createdAt"),
        ("createdAt without zone", envelope(with_(createdAt="2026-11-27T11:58:53.300")), "data.createdAt"),
        ("data not an object", envelope([1, 2, 3]), "data"),
        ("data missing", {"type": "user.created", "timestamp": iso(NOW)}, "data"),
        ("type missing", {"timestamp": iso(NOW), "data": with_()}, "type"),
        ("type wrong type", {"type": 5, "data": with_()}, "type"),
    ]


_DROP = object()


@pytest.mark.parametrize(
    ("case", "payload", "field"), _invalid_cases(), ids=[c for c, _, _ in _invalid_cases()]
)
async def test_verified_but_invalid_fields_are_422_and_kept_as_rejected(
    service: ServiceUnderTest, db: asyncpg.Connection, case: str, payload: dict[str, Any], field: str
) -> None:
    async with service.client() as client:
        response = await deliver(client, payload, message_id="msg_invalid")
    assert response.status_code == 422, (case, response.text)
    body = response.json()
    assert body["extra"]["field"] == field
    assert body["detail"].startswith(field)
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    event = await _inbox(db, "msg_invalid")
    assert event is not None
    assert event["status"] == "rejected"
    assert event["error"] == body["detail"]


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        (
            "created just inside the clock-skew leeway",
            {"createdAt": iso(NOW + timedelta(seconds=30)), "updatedAt": iso(NOW + timedelta(seconds=30))},
        ),
        ("updatedAt equal to createdAt", {}),
        ("plus-addressed email", {"email": "a.b+tag@mail.example.co.uk"}),
        ("uppercase uuid", {"id": "7ADD488A-D920-479D-BA11-612A1390DDBA"}),
        ("unicode name", {"name": "Carol Ünïcødé 🎉"}),
    ],
)
async def test_valid_edges_are_applied(
    service: ServiceUnderTest, db: asyncpg.Connection, case: str, changes: dict[str, Any]
) -> None:
    data = {**user_data(created=NOW - timedelta(minutes=1)), **changes}
    async with service.client() as client:
        response = await deliver(client, envelope(data))
    assert response.json() == {"status": "applied"}, case
    row = await _user(db, data["id"])
    assert row is not None
    assert row["email"] == data["email"]


async def test_nul_character_anywhere_in_payload_is_never_a_500(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    data = user_data(role="ad\x00min")  # an unknown field the row does not use: jsonb still cannot hold it
    async with service.client() as client:
        response = await deliver(client, envelope(data), message_id="msg_nul_extra")
    assert response.status_code == 200
    event = await _inbox(db, "msg_nul_extra")
    assert event is not None
    assert "\\u0000" not in event["payload"]


async def test_rejected_message_is_evaluated_again_when_retried(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    native = user_data(user_id="1AJsC9tjCvQhaPByLqNsbmK6D3Kqenrv")
    body = encode(envelope(native))
    with start_service(make_settings(migrated_database_url)) as service:
        async with service.client() as client:
            first = await deliver(client, body, message_id="msg_native")
    assert first.status_code == 422
    assert first.json()["extra"]["field"] == "data.id"
    with start_service(make_settings(migrated_database_url, USER_ID_FORMAT="opaque")) as service:
        async with service.client() as client:
            retried = await deliver(client, body, message_id="msg_native")
            again = await deliver(client, body, message_id="msg_native")
    assert retried.json() == {"status": "applied"}
    assert again.json() == {"status": "duplicate"}
    event = await _inbox(db, "msg_native")
    assert event is not None
    assert (event["status"], event["error"], event["attempts"]) == ("applied", None, 2)
    assert await _user(db, native["id"]) is not None


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [("1AJsC9tjCvQhaPByLqNsbmK6D3Kqenrv", 200), ("a_b-C", 200), ("x" * 255, 200),
     ("x" * 256, 422), ("has space", 422), ("dot.id", 422), ("ünï", 422), ("", 422)],
)  # fmt: skip
async def test_opaque_ids(
    migrated_database_url: str, db: asyncpg.Connection, user_id: str, expected: int
) -> None:
    with start_service(make_settings(migrated_database_url, USER_ID_FORMAT="opaque")) as service:
        async with service.client() as client:
            response = await deliver(client, envelope(user_data(user_id=user_id, email="o@example.com")))
    assert response.status_code == expected


# --- 409 ----------------------------------------------------------------------------------------------


async def test_email_held_by_another_user_is_409_and_applies_once_released(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    created = NOW - timedelta(hours=1)
    alice = user_data(email="shared@example.com", created=created)
    bob = user_data(email="shared@example.com", created=created)
    alice_moves = {
        **alice,
        "email": "alice.new@example.com",
        "updatedAt": iso(created + timedelta(minutes=1)),
    }
    async with service.client() as client:
        assert (await deliver(client, envelope(alice))).json() == {"status": "applied"}
        conflict = await deliver(client, envelope(bob), message_id="msg_bob")
        assert conflict.status_code == 409
        assert conflict.json()["extra"]["status"] == "conflict"
        event = await _inbox(db, "msg_bob")
        assert event is not None
        assert event["status"] == "conflict"
        assert await _user(db, bob["id"]) is None
        assert (await deliver(client, envelope(alice_moves, "user.updated"))).json() == {"status": "applied"}
        retried = await deliver(client, envelope(bob), message_id="msg_bob")
    assert retried.json() == {"status": "applied"}
    row = await _user(db, bob["id"])
    assert row is not None
    assert row["email"] == "shared@example.com"


async def test_email_swap_delivered_out_of_order_converges_with_retries(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    created = NOW - timedelta(hours=1)
    a = user_data(email="x@example.com", created=created)
    b = user_data(email="y@example.com", created=created)

    def at(user: dict[str, Any], email: str, minute: int) -> dict[str, Any]:
        return {**user, "email": email, "updatedAt": iso(created + timedelta(minutes=minute))}

    # Better Auth's order: a -> temp, b -> x, a -> y. They arrive in reverse.
    pending = [
        ("m3", at(a, "y@example.com", 3)),
        ("m2", at(b, "x@example.com", 2)),
        ("m1", at(a, "t@example.com", 1)),
    ]
    async with service.client() as client:
        assert (await deliver(client, envelope(a))).status_code == 200
        assert (await deliver(client, envelope(b))).status_code == 200
        for _ in range(4):  # the sender retries whatever was not acknowledged
            answers = [
                (mid, await deliver(client, envelope(p, "user.updated"), message_id=mid))
                for mid, p in pending
            ]
            pending = [
                (mid, p) for (mid, r), (_, p) in zip(answers, pending, strict=True) if r.status_code != 200
            ]
            assert all(r.status_code in (200, 409) for _, r in answers)
    assert pending == []
    rows = {r["id"]: r["email"] for r in await db.fetch("SELECT id, email FROM users")}
    assert rows == {a["id"]: "y@example.com", b["id"]: "x@example.com"}


# --- Better Auth's own payloads -------------------------------------------------------------------------


async def test_real_better_auth_payloads(migrated_database_url: str, db: asyncpg.Connection) -> None:
    payloads = [json.loads(line)["payload"] for line in FIXTURES.read_text().splitlines() if line.strip()]
    uuid_ids = [p for p in payloads if len(p["data"]["id"]) == 36]
    native_ids = [p for p in payloads if len(p["data"]["id"]) != 36]
    expected = {"user.created": "applied", "user.updated": "applied", "user.deleted": "applied"}
    with start_service(make_settings(migrated_database_url)) as service:
        async with service.client() as client:
            for payload in uuid_ids:
                response = await deliver(client, payload)
                assert response.json() == {"status": expected[payload["type"]]}, payload["type"]
            for payload in native_ids:
                assert (await deliver(client, payload)).status_code == 422
    with start_service(make_settings(migrated_database_url, USER_ID_FORMAT="opaque")) as service:
        async with service.client() as client:
            for payload in native_ids:
                assert (await deliver(client, payload)).json() == {"status": "applied"}
    names = {r["id"]: r["name"] for r in await db.fetch("SELECT id, name FROM users")}
    assert names["ccd4a01a-6176-49d2-bf5e-323e5c1ed3a1"] == "Alice Updated"
    assert names["1AJsC9tjCvQhaPByLqNsbmK6D3Kqenrv"] == "Nate Native"
    assert "ddee13ed-9439-4e8c-bb78-f4beaed4e388" not in names  # Carol only has a user.deleted
    tombstones = {r["id"] for r in await db.fetch("SELECT id FROM deleted_users")}
    assert "ddee13ed-9439-4e8c-bb78-f4beaed4e388" in tombstones


# --- 503 ----------------------------------------------------------------------------------------------


async def test_database_unreachable_is_503_then_recovers_without_restart(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    from tests.helpers.tcp_proxy import TcpProxy

    async with TcpProxy(migrated_database_url) as proxy:
        settings = make_settings(
            proxy.url, DB_CONNECT_TIMEOUT="1", DB_ACQUIRE_TIMEOUT="2", DB_COMMAND_TIMEOUT="3"
        )
        with start_service(settings) as service:
            async with service.client() as client:
                assert (await deliver(client, envelope(user_data()))).json() == {"status": "applied"}
                await proxy.go_down()
                down = [await deliver(client, envelope(user_data())) for _ in range(3)]
                ready_down = await client.get("/health/ready")
                await proxy.go_up()
                after = await deliver(client, envelope(user_data()))
                ready_up = await client.get("/health/ready")
    for response in down:
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
    assert ready_down.status_code == 503
    assert after.json() == {"status": "applied"}
    assert ready_up.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM users") == 2


async def test_full_queue_is_503_and_nothing_queued_is_lost(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    settings = make_settings(
        migrated_database_url, INGEST_QUEUE_SIZE="1", INGEST_WRITERS="1", INGEST_BATCH_SIZE="1"
    )
    blocker = await asyncpg.connect(migrated_database_url)
    try:
        with start_service(settings) as service:
            async with service.client() as client:
                lock = blocker.transaction()
                await lock.start()
                await blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                tasks = [asyncio.create_task(deliver(client, envelope(user_data()))) for _ in range(6)]
                await asyncio.sleep(1.0)  # the writer is stuck behind the lock; the queue holds one
                await lock.rollback()
                answers = await asyncio.gather(*tasks)
    finally:
        await blocker.close()
    codes = [r.status_code for r in answers]
    # One delivery in the stuck writer and one in the queue fit; the rest cannot wait (exactly 2 on an
    # idle machine; a slow one may let a request arrive after the lock is gone, never fewer than 1).
    assert set(codes) == {200, 503}
    assert all(r.headers["retry-after"].isdigit() for r in answers if r.status_code == 503)
    assert await db.fetchval("SELECT count(*) FROM users") == codes.count(200)


async def test_status_codes_never_include_410_or_500(
    service: ServiceUnderTest, db: asyncpg.Connection
) -> None:
    """A mixed bag of good and bad deliveries: every answer is in DESIGN's table."""
    bodies = [encode(envelope(user_data())), b"[]", encode({"type": "x"}), encode(envelope({"id": 1}))]
    async with service.client() as client:
        answers = [
            await client.post("/webhooks/better-auth", content=b, headers=signed_headers(b)) for b in bodies
        ]
        answers.append(await client.post("/webhooks/better-auth", content=bodies[0]))
    assert [a.status_code for a in answers] == [200, 400, 200, 422, 401]


# --- hostile text: bytes that are not UTF-8, values matched whole, email limits ---------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"type": "user.created", "data": {"name": "Zoë"}}'.encode("latin-1"),
        b'{"type": "user.created", "data": "\xff\xfe"}',
        b'{"type": "session.created", "extra": "\xc3\x28", "data": {}}',  # in a field nobody decodes
        b'{"type": 5, "data": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8, after a wrong type
    ],
    ids=["latin-1", "invalid-bytes", "in-an-ignored-field", "after-a-wrong-type"],
)
async def test_signed_body_that_is_not_utf8_is_400(
    service: ServiceUnderTest, db: asyncpg.Connection, body: bytes
) -> None:
    async with service.client() as client:
        response = await client.post("/webhooks/better-auth", content=body, headers=signed_headers(body))
    assert (response.status_code, response.json()["detail"]) == (400, "body is not UTF-8 JSON")
    assert await _counts(db) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": 5, "data": {"name": "\\ud800"}}',  # after a wrong type: the typed decoder stops early
        b'{"type": 5, "data": 1e999999, "x": NaN}',
        b'{"type": 5, "data": {}} trailing',
    ],
    ids=["lone-surrogate", "nan", "trailing-junk"],
)
async def test_wrong_shape_that_is_not_json_either_is_400(
    service: ServiceUnderTest, db: asyncpg.Connection, body: bytes
) -> None:
    """The typed decoder stops at the first wrong value; what follows must still be JSON (a 422 is kept
    in the inbox, so this was once stored as a JSON string, or refused by PostgreSQL)."""
    async with service.client() as client:
        response = await client.post("/webhooks/better-auth", content=body, headers=signed_headers(body))
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("body is not valid JSON")
    assert await _counts(db) == (0, 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "7add488a-d920-479d-ba11-612a1390ddba\n"}, "data.id"),
        ({"email": "alice@example.com\n"}, "data.email"),
    ],
    ids=["id", "email"],
)
async def test_a_trailing_newline_is_422_and_never_stored(
    service: ServiceUnderTest, db: asyncpg.Connection, changes: dict[str, str], field: str
) -> None:
    data = {**user_data(created=NOW - timedelta(minutes=1)), **changes}
    async with service.client() as client:
        response = await deliver(client, envelope(data), message_id="msg_newline")
    assert response.status_code == 422, response.text
    assert response.json()["extra"]["field"] == field
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    event = await _inbox(db, "msg_newline")
    assert event is not None
    assert (event["status"], event["user_id"]) == ("rejected", None if field == "data.id" else data["id"])


async def test_opaque_id_with_a_trailing_newline_is_422(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    data = user_data(user_id="1AJsC9tjCvQhaPByLqNsbmK6D3Kqenrv\n", created=NOW - timedelta(minutes=1))
    with start_service(make_settings(migrated_database_url, USER_ID_FORMAT="opaque")) as running:
        async with running.client() as client:
            response = await deliver(client, envelope(data))
    assert (response.status_code, response.json()["extra"]["field"]) == (422, "data.id")
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE user_id IS NOT NULL") == 0


def _email(local: int, label: int = 7, labels: int = 1) -> str:
    return "a" * local + "@" + ".".join(["b" * label] * labels) + ".com"


@pytest.mark.parametrize(
    ("email", "valid"),
    [
        (_email(64), True),
        (_email(65), False),
        (_email(10, label=63), True),
        (_email(10, label=64), False),
        (_email(64, label=60, labels=3) + "x" * 3, True),  # 64 + 1 + 182 + 4 + 3 = 254 characters
        (_email(64, label=60, labels=3) + "x" * 4, False),  # 255
    ],
    ids=["local-64", "local-65", "label-63", "label-64", "total-254", "total-255"],
)
async def test_email_length_limits(
    service: ServiceUnderTest, db: asyncpg.Connection, email: str, valid: bool
) -> None:
    assert len(email) in (254, 255) or not email.endswith("x"), len(email)
    data = user_data(email=email, created=NOW - timedelta(minutes=1))
    async with service.client() as client:
        response = await deliver(client, envelope(data))
    if valid:
        assert response.json() == {"status": "applied"}, email
        assert (await _user(db, data["id"])) is not None
    else:
        assert (response.status_code, response.json()["extra"]["field"]) == (422, "data.email"), email
        assert await db.fetchval("SELECT count(*) FROM users") == 0
