"""GET /users/me and GET /users/{id} through the real service, users synced by signed webhooks, tokens
signed with real keys served by a real JWKS endpoint on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from sync_service.config import Settings
from sync_service.ops.metrics import REGISTRY
from tests.helpers.databases import users_locked
from tests.helpers.forged_tokens import forged_tokens
from tests.helpers.jwks import JwksServer, SigningKey, better_auth_claims, running
from tests.helpers.support import (
    ServiceUnderTest,
    deliver,
    envelope,
    iso,
    make_settings,
    start_service,
    user_data,
)
from tests.helpers.tcp_proxy import TcpProxy

ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
FRONTEND = "https://app.example.com"
CHALLENGE = 'Bearer realm="sync-service"'
INVALID = 'Bearer realm="sync-service", error="invalid_token"'


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {alg: SigningKey.generate(alg) for alg in ALGORITHMS}


@pytest.fixture(scope="module")
def jwks(keys: dict[str, SigningKey]) -> Iterator[JwksServer]:
    server = JwksServer()
    server.serve(*keys.values())
    with running(server):
        yield server


@pytest.fixture(scope="module")
def api(migrated_database_url: str, jwks: JwksServer) -> Iterator[ServiceUnderTest]:
    settings = make_settings(
        migrated_database_url,
        BETTER_AUTH_URL=jwks.base_url,
        JWT_JWKS_COOLDOWN_SECONDS="0.05",
        CORS_ALLOW_ORIGINS=f"{FRONTEND} http://localhost:5173",
    )
    with start_service(settings) as running_service:
        yield running_service


async def synced_user(api: ServiceUnderTest, **fields: Any) -> dict[str, Any]:
    """A user as Better Auth sends it, delivered through the signed webhook."""
    data = user_data(**fields)
    async with api.client() as client:
        response = await deliver(client, envelope(data))
    assert response.json() == {"status": "applied"}
    return data


def token_for(key: SigningKey, server: JwksServer, user: dict[str, Any], **overrides: Any) -> str:
    return key.sign(better_auth_claims(user, issuer=server.base_url, **overrides))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def signed_in(
    settings: Settings, jwks: JwksServer, key: SigningKey
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    """The service started with `settings`, one user synced through it, and a client with that user's
    token."""
    with start_service(settings) as service:
        user = await synced_user(service)
        async with service.client(headers=bearer(token_for(key, jwks, user))) as client:
            yield client, user


def as_api_json(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": user["id"],
        "email": user["email"],
        "email_verified": user["emailVerified"],
        "name": user["name"],
        "image": user.get("image"),
        "created_at": user["createdAt"],
        "updated_at": user["updatedAt"],
    }


def assert_401(response: httpx.Response, challenge: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == challenge
    body = response.json()
    assert body["status_code"] == 401
    assert set(body) == {"status_code", "detail"}


# --- 200 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_me_with_each_algorithm(
    alg: str, api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    user = await synced_user(api, image="https://cdn.example.com/a.png", role="member")
    async with api.client() as client:
        response = await client.get("/users/me", headers=bearer(token_for(keys[alg], jwks, user)))
    assert response.status_code == 200, response.text
    assert response.json() == as_api_json(user)
    assert response.headers["cache-control"] == "no-store"


async def test_own_id_and_updates_are_read_from_the_database(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    user = await synced_user(api, name=None)
    token = token_for(keys["EdDSA"], jwks, user)
    async with api.client(headers=bearer(token)) as client:
        by_id = await client.get(f"/users/{user['id']}")
        assert by_id.status_code == 200
        assert by_id.json() == as_api_json(user)
        assert by_id.json()["name"] is None
        await db.execute("UPDATE users SET email_verified = true WHERE id = $1", user["id"])
        again = await client.get("/users/me")  # same token (cached verification), fresh row
    assert again.json()["email_verified"] is True


# --- 404 ------------------------------------------------------------------------------------------


async def test_me_not_synced_yet_is_404(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    token = token_for(keys["EdDSA"], jwks, user_data())
    async with api.client() as client:
        response = await client.get("/users/me", headers=bearer(token))
    assert response.status_code == 404
    assert response.json() == {"status_code": 404, "detail": "user not found"}


async def test_other_users_are_404_whether_they_exist_or_not(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    alice = await synced_user(api)
    bob = await synced_user(api)
    token = token_for(keys["EdDSA"], jwks, alice)
    async with api.client(headers=bearer(token)) as client:
        existing = await client.get(f"/users/{bob['id']}")
        missing = await client.get(f"/users/{uuid.uuid4()}")
        weird = await client.get("/users/%20")
    assert existing.status_code == missing.status_code == 404
    assert existing.content == missing.content
    assert weird.status_code == 404


# --- 401 ------------------------------------------------------------------------------------------


async def test_no_token(api: ServiceUnderTest, db: asyncpg.Connection) -> None:
    async with api.client() as client:
        for path in ("/users/me", f"/users/{uuid.uuid4()}"):
            assert_401(await client.get(path), CHALLENGE)
        assert_401(
            await client.get("/users/me", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}), CHALLENGE
        )


async def test_token_in_query_string_is_ignored(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    user = await synced_user(api)
    token = token_for(keys["EdDSA"], jwks, user)
    async with api.client() as client:
        for name in ("access_token", "token", "authorization"):
            assert_401(await client.get("/users/me", params={name: token}), CHALLENGE)
    async with api.client(cookies={"token": token, "better-auth.session_token": token}) as client:
        assert_401(await client.get("/users/me"), CHALLENGE)


async def test_every_forged_token_is_401_invalid_token(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    user = await synced_user(api)
    forged = forged_tokens(keys, issuer=jwks.base_url, user=user)
    answers: dict[str, tuple[int, str | None]] = {}
    async with api.client() as client:
        for name, token in forged.items():
            if not token:
                continue  # "Bearer " with nothing after it is not a legal header value; "empty bearer" below
            response = await client.get("/users/me", headers=bearer(token))
            answers[name] = (response.status_code, response.headers.get("www-authenticate"))
        malformed = {
            "empty bearer": {"Authorization": "Bearer"},
            "lower-case scheme, junk": {"Authorization": "bearer junk"},
            "token and more": {"Authorization": f"Bearer {token_for(keys['EdDSA'], jwks, user)} extra"},
            # (Within the 64 KiB head budget; past it the server answers 431 before any handler: below.)
            "huge header (32 KiB)": {"Authorization": "Bearer " + "A" * 32_768},
        }
        for name, headers in malformed.items():
            response = await client.get("/users/me", headers=headers)
            answers[name] = (response.status_code, response.headers.get("www-authenticate"))
        two = await client.get(
            "/users/me",
            headers=[
                ("Authorization", f"Bearer {token_for(keys['EdDSA'], jwks, user)}"),
                ("Authorization", "x"),
            ],
        )
        answers["two Authorization headers"] = (two.status_code, two.headers.get("www-authenticate"))
        past_budget = await client.get("/users/me", headers={"Authorization": "Bearer " + "A" * 65_536})
        genuine = await client.get("/users/me", headers=bearer(token_for(keys["EdDSA"], jwks, user)))
    assert {name: answer for name, answer in answers.items() if answer != (401, INVALID)} == {}
    assert past_budget.status_code == 431
    assert genuine.status_code == 200


async def test_scheme_is_case_insensitive(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    user = await synced_user(api)
    token = token_for(keys["ES256"], jwks, user)
    async with api.client() as client:
        response = await client.get("/users/me", headers={"Authorization": f"bearer  {token}"})
    assert response.status_code == 200


# --- batched reads: concurrency, read-your-writes, 503 ----------------------------------------------


async def test_concurrent_reads_of_different_users_each_get_their_own_row(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], migrated_database_url: str
) -> None:
    """Many reads held back behind a lock, so that they are answered by a few shared queries: each one
    still gets its own user (or its own 404), duplicates of one user included."""
    users = list(await asyncio.gather(*(synced_user(api, name=f"User {i}") for i in range(40))))
    unsynced = [user_data() for _ in range(5)]
    requests = [(u, "/users/me") for u in users] + [(u, f"/users/{u['id']}") for u in users[::3]]
    requests += [(users[0], "/users/me")] * 5 + [(u, "/users/me") for u in unsynced]
    random.Random(4).shuffle(requests)
    async with api.client() as client:
        async with users_locked(migrated_database_url):
            tasks = [
                asyncio.create_task(client.get(path, headers=bearer(token_for(keys["EdDSA"], jwks, user))))
                for user, path in requests
            ]
            await asyncio.sleep(0.5)  # every read is now in a batch waiting on the lock, or queued behind one
        answers = await asyncio.gather(*tasks)
    for (user, _), answer in zip(requests, answers, strict=True):
        if user in unsynced:
            assert answer.status_code == 404, answer.text
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json() == as_api_json(user)
            assert answer.headers["cache-control"] == "no-store"


async def test_a_read_after_a_webhook_commit_sees_it(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    """Read-your-writes while other reads keep batches in flight: a GET sent after the webhook's 200
    never answers from before that commit."""
    user = await synced_user(api, created=datetime.now(UTC) - timedelta(hours=1))
    token = token_for(keys["EdDSA"], jwks, user)
    stop = asyncio.Event()
    background: list[int] = []

    async def keep_reading(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            background.append((await client.get("/users/me")).status_code)

    async with api.client(headers=bearer(token)) as client:
        readers = [asyncio.create_task(keep_reading(client)) for _ in range(8)]
        try:
            for i in range(1, 31):
                updated = {
                    **user,
                    "name": f"v{i}",
                    "updatedAt": iso(datetime.now(UTC) - timedelta(minutes=59) + timedelta(seconds=i)),
                }
                assert (await deliver(client, envelope(updated, "user.updated"))).json() == {
                    "status": "applied"
                }
                me, by_id = await asyncio.gather(client.get("/users/me"), client.get(f"/users/{user['id']}"))
                assert me.json() == by_id.json() == as_api_json(updated)
        finally:
            stop.set()
            await asyncio.gather(*readers)
    assert background
    assert set(background) == {200}


async def test_database_unreachable_reads_are_503_then_recover(
    migrated_database_url: str, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    async with TcpProxy(migrated_database_url) as proxy:
        settings = make_settings(
            proxy.url,
            BETTER_AUTH_URL=jwks.base_url,
            DB_CONNECT_TIMEOUT="1",
            DB_ACQUIRE_TIMEOUT="2",
            DB_COMMAND_TIMEOUT="3",
        )
        async with signed_in(settings, jwks, keys["EdDSA"]) as (client, user):
            assert (await client.get("/users/me")).status_code == 200
            await proxy.go_down()
            down = [await client.get(path) for path in ("/users/me", f"/users/{user['id']}", "/users/me")]
            await proxy.go_up()
            after = await client.get("/users/me")
    for response in down:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"].isdigit()
    assert after.status_code == 200
    assert after.json() == as_api_json(user)


async def test_pool_exhausted_reads_are_503_within_the_acquire_timeout(
    migrated_database_url: str, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    """The only pooled connection is held by a webhook batch stuck behind a lock: reads cannot get a
    connection and are answered 503 after DB_ACQUIRE_TIMEOUT, and read again once the lock goes."""
    settings = make_settings(
        migrated_database_url,
        BETTER_AUTH_URL=jwks.base_url,
        DB_POOL_SIZE="1",
        DB_MAX_OVERFLOW="0",
        DB_ACQUIRE_TIMEOUT="0.5",
        DB_COMMAND_TIMEOUT="30",
        INGEST_TIMEOUT_SECONDS="3",
    )
    async with signed_in(settings, jwks, keys["EdDSA"]) as (client, user):
        # The delivery's batch holds the only connection, waiting on the lock.
        answers, waited, after = await _reads_behind_a_stuck_request(
            migrated_database_url, client, lambda: deliver(client, envelope(user_data()))
        )
    _assert_retry_later(answers)
    assert waited < 1.8, f"acquire should time out after 0.5 s, took {waited:.1f} s"
    assert after.status_code == 200
    assert after.json() == as_api_json(user)


async def test_reads_behind_a_stuck_read_are_503_by_their_deadline(
    migrated_database_url: str, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    """A read stuck behind a lock holds up the reads queued after it (one reader batches them all), but
    only until their deadline, DB_ACQUIRE_TIMEOUT + DB_COMMAND_TIMEOUT: then they are answered 503, and
    the reads after the lock goes are answered again."""
    settings = make_settings(
        migrated_database_url,
        BETTER_AUTH_URL=jwks.base_url,
        DB_ACQUIRE_TIMEOUT="0.5",
        DB_COMMAND_TIMEOUT="2",
    )
    async with signed_in(settings, jwks, keys["EdDSA"]) as (client, user):
        answers, waited, after = await _reads_behind_a_stuck_request(
            migrated_database_url, client, lambda: client.get("/users/me")
        )
    _assert_retry_later(answers)
    assert waited < 4, f"the deadline is 2.5 s, the reads took {waited:.1f} s"
    assert after.status_code == 200
    assert after.json() == as_api_json(user)


async def _reads_behind_a_stuck_request(
    database_url: str,
    client: httpx.AsyncClient,
    stuck_request: Callable[[], Coroutine[Any, Any, httpx.Response]],
) -> tuple[list[httpx.Response], float, httpx.Response]:
    """With the users table locked: `stuck_request` is sent and its batch waits on the lock, then three
    concurrent reads. Returns the answers to the reads and to the stuck request, the seconds the reads
    took, and the answer to one more read once the lock is gone."""
    async with users_locked(database_url):
        stuck = asyncio.create_task(stuck_request())
        await asyncio.sleep(0.3)  # its batch is now waiting on the lock
        reads, waited = await _timed_reads(client, 3)
        answers = [*reads, await stuck]
    return answers, waited, await client.get("/users/me")


async def _timed_reads(client: httpx.AsyncClient, count: int) -> tuple[list[httpx.Response], float]:
    """`count` concurrent GET /users/me, and the seconds until the last was answered."""
    started = time.monotonic()
    answers = await asyncio.gather(*(client.get("/users/me") for _ in range(count)))
    return list(answers), time.monotonic() - started


def _assert_retry_later(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"].isdigit()


# --- keys: rotation, outage, flood -------------------------------------------------------------------


async def test_rotated_key_is_accepted_after_refetch(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    user = await synced_user(api)
    rotated = SigningKey.generate("EdDSA")
    async with api.client() as client:
        assert (
            await client.get("/users/me", headers=bearer(token_for(keys["EdDSA"], jwks, user)))
        ).status_code == 200
        jwks.serve(*keys.values(), rotated)
        try:
            await asyncio.sleep(0.06)
            response = await client.get("/users/me", headers=bearer(token_for(rotated, jwks, user)))
        finally:
            jwks.serve(*keys.values())
    assert response.status_code == 200


async def test_jwks_down_at_startup_then_up(
    migrated_database_url: str, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    jwks = JwksServer()  # not started: Better Auth is down
    jwks.serve(*keys.values())
    settings = make_settings(
        migrated_database_url, BETTER_AUTH_URL=jwks.base_url, JWT_JWKS_COOLDOWN_SECONDS="0.2"
    )
    with start_service(settings) as api:
        async with api.client() as client:
            assert (await client.get("/health/live")).status_code == 200
            assert (await client.get("/health/ready")).status_code == 200
            user = await synced_user(api)
            token = token_for(keys["EdDSA"], jwks, user)
            assert_401(await client.get("/users/me", headers=bearer(token)), INVALID)
            jwks.start()
            try:
                assert_401(await client.get("/users/me", headers=bearer(token)), INVALID)  # cooldown
                await asyncio.sleep(0.25)
                response = await client.get("/users/me", headers=bearer(token))
                assert response.status_code == 200
                assert response.json()["id"] == user["id"]
            finally:
                jwks.stop()
            # Better Auth down again: the keys already fetched keep working
            assert (
                await client.get("/users/me", headers=bearer(token_for(keys["ES512"], jwks, user)))
            ).status_code == 200
    assert jwks.requests == 1


async def test_flood_of_random_kids_costs_one_fetch(
    migrated_database_url: str, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    jwks = JwksServer()
    jwks.serve(*keys.values())
    settings = make_settings(
        migrated_database_url, BETTER_AUTH_URL=jwks.base_url, JWT_JWKS_COOLDOWN_SECONDS="60"
    )
    limited = REGISTRY.get_sample_value("sync_jwks_refreshes_total", {"result": "rate_limited"}) or 0.0
    with running(jwks), start_service(settings) as api:
        user = await synced_user(api)
        strangers = [SigningKey.generate("EdDSA") for _ in range(5)]
        async with api.client(limits=httpx.Limits(max_connections=32)) as client:
            ok = await client.get("/users/me", headers=bearer(token_for(keys["EdDSA"], jwks, user)))
            assert ok.status_code == 200
            flood = await asyncio.gather(
                *(
                    client.get("/users/me", headers=bearer(token_for(strangers[i % 5], jwks, user, iat=i)))
                    for i in range(150)
                )
            )
    assert {r.status_code for r in flood} == {401}
    assert jwks.requests == 1
    assert (
        REGISTRY.get_sample_value("sync_jwks_refreshes_total", {"result": "rate_limited"}) or 0
    ) >= limited + 150


# --- browser and docs ---------------------------------------------------------------------------------


async def test_cors_for_configured_origins(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    user = await synced_user(api)
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    async with api.client() as client:
        allowed = await client.options("/users/me", headers={"Origin": FRONTEND, **preflight})
        foreign = await client.options("/users/me", headers={"Origin": "https://evil.example", **preflight})
        read = await client.get(
            "/users/me", headers={"Origin": FRONTEND, **bearer(token_for(keys["EdDSA"], jwks, user))}
        )
        refused = await client.get("/users/me", headers={"Origin": FRONTEND})
        other = await client.get("/users/me", headers={"Origin": "https://evil.example"})
    assert allowed.status_code in (200, 204)
    assert allowed.headers["access-control-allow-origin"] == FRONTEND
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert allowed.headers["access-control-max-age"] == "600"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in foreign.headers
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == FRONTEND
    assert read.headers["access-control-allow-credentials"] == "true"
    assert "origin" in read.headers.get("vary", "").lower()
    assert refused.status_code == 401  # the frontend can read its 401 too
    assert refused.headers["access-control-allow-origin"] == FRONTEND
    assert "access-control-allow-origin" not in other.headers


async def test_openapi_documents_the_bearer_scheme(api: ServiceUnderTest) -> None:
    async with api.client() as client:
        schema = (await client.get("/schema/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["BearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A Better Auth JWT (jwt plugin), in the Authorization header only.",
    }
    for path in ("/users/me", "/users/{user_id}"):
        assert schema["paths"][path]["get"]["security"] == [{"BearerToken": []}]
    assert not schema["paths"]["/webhooks/better-auth"]["post"].get("security")
    assert not schema["paths"]["/health/live"]["get"].get("security")
    user_schema = schema["components"]["schemas"]["User"]
    assert set(user_schema["properties"]) == {
        "id", "email", "email_verified", "name", "image", "created_at", "updated_at"
    }  # fmt: skip


async def test_dates_look_like_better_auth(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    user = await synced_user(api)
    await db.execute(
        "UPDATE users SET updated_at = '2030-01-02 03:04:05.000+00', "
        "created_at = '2030-01-02 03:04:05.123456+02'"
    )
    async with api.client() as client:
        body = (await client.get("/users/me", headers=bearer(token_for(keys["EdDSA"], jwks, user)))).json()
    assert body["updated_at"] == "2030-01-02T03:04:05.000Z"
    assert body["created_at"] == "2030-01-02T01:04:05.123Z"


async def test_odd_requests_are_never_500(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    user = await synced_user(api)
    good = bearer(token_for(keys["EdDSA"], jwks, user))
    odd: list[tuple[str, str, dict[str, str] | list[tuple[str, bytes]]]] = [
        ("POST", "/users/me", good),
        ("DELETE", f"/users/{user['id']}", good),
        ("HEAD", "/users/me", good),
        ("GET", "/users/me/", good),
        ("GET", "/users/" + "x" * 5000, good),
        ("GET", "/users/%C3%A9t%C3%A9", good),
        ("GET", "/users/me", [("Authorization", b"Bearer \xff\xfe.\x80.\xc3")]),
        ("GET", "/users/me", {"Authorization": "Bearer ...."}),
    ]
    async with api.client() as client:
        for method, path, headers in odd:
            response = await client.request(method, path, headers=headers)
            assert response.status_code < 500, (method, path, response.status_code)
    assert response.status_code == 401


# --- subjects PostgreSQL cannot hold ------------------------------------------------------------------

# Genuinely signed `sub`s that no stored user can have: each is 404 without a query (401 where the token
# check already refuses it) (before this, a NUL or
# a lone surrogate made the users query fail: 503, and 503 for every read that shared its batch).
UNSTORABLE_SUBJECTS = {
    "NUL": "abc\x00def",
    "lone surrogate": "abc\ud800",
    "trailing newline": str(uuid.uuid4()) + "\n",
    "email": "alice@example.com",
    "300 characters": "a" * 300,
    "non-ASCII": "ünïcödé",
}


async def test_a_sub_no_user_can_have_is_404_and_fails_no_other_read(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], db: asyncpg.Connection
) -> None:
    genuine = [await synced_user(api) for _ in range(5)]
    key = keys["EdDSA"]
    hostile = {
        name: token_for(key, jwks, {**genuine[0], "id": sub}) for name, sub in UNSTORABLE_SUBJECTS.items()
    }
    async with api.client() as client:
        requests = [(user["id"], token_for(key, jwks, user)) for user in genuine * 16] + [
            (name, token) for name, token in hostile.items() for _ in range(3)
        ]
        random.Random(7).shuffle(requests)
        answers = await asyncio.gather(
            *(client.get("/users/me", headers=bearer(token)) for _, token in requests)
        )
        for (who, _), answer in zip(requests, answers, strict=True):
            if who in hostile:
                assert answer.status_code in (401, 404), (who, answer.status_code, answer.text)
            else:
                assert answer.status_code == 200, (who, answer.status_code, answer.text)
                assert answer.json()["id"] == who
        # The same on /users/{id}, the path segment being the token's own (odd) sub.
        for name, sub in UNSTORABLE_SUBJECTS.items():
            if "\ud800" in sub:
                continue  # a lone surrogate cannot be put in a URL at all
            path = "/users/" + urllib.parse.quote(sub, safe="")
            answer = await client.get(path, headers=bearer(hostile[name]))
            assert answer.status_code in (401, 404), (name, answer.status_code)


async def test_the_reader_isolates_an_id_postgresql_refuses(migrated_database_url: str) -> None:
    """Even an id the routes would never send (NUL) fails only its own read, answered None (404)."""
    from sync_service.database import create_pool
    from sync_service.users.reader import UserReader

    settings = make_settings(migrated_database_url)
    assert settings.database is not None
    pool = await create_pool(settings.database)
    reader = UserReader(pool, acquire_timeout=5, command_timeout=5)
    await reader.start()
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO users (id, email) VALUES ('u-1', 'u1@example.com'), ('u-2', 'u2@example.com')"
            )
        results = await asyncio.gather(
            reader.submit("u-1"), reader.submit("bad\x00id"), reader.submit("u-2"), reader.submit("nobody")
        )
        assert [user.id if user else None for user in results] == ["u-1", None, "u-2", None]
    finally:
        await reader.close()
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM users WHERE id IN ('u-1', 'u-2')")
        await pool.close()


async def test_a_sub_no_user_can_have_is_answered_without_a_query(
    api: ServiceUnderTest, jwks: JwksServer, keys: dict[str, SigningKey], migrated_database_url: str
) -> None:
    """With the users table locked, any query would wait: the 404 comes at once, so none was made."""
    token = token_for(keys["EdDSA"], jwks, {**user_data(), "id": "abc\x00def"})
    async with api.client() as client, users_locked(migrated_database_url):
        started = time.monotonic()
        answer = await client.get("/users/me", headers=bearer(token))
        assert answer.status_code == 404
        assert time.monotonic() - started < 2  # a query would have waited for the lock (then 503)
