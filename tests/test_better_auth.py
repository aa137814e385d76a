"""A real Better Auth 1.7 server (Node.js, memory adapter, jwt plugin) runs the README's hook code
(tests/better_auth/sync-users.ts, the README's snippet byte for byte) against the service: sign-up gives
a users row, /update-user updates it, and the token from /api/auth/token is accepted by /users/me.

Needs `node` and `npm` (the session fixture runs `npm ci` once per lock file; CI has both and the npm
registry); without `node` on PATH these tests are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from svix.webhooks import Webhook

from tests.helpers.node_project import NO_NODE, PROJECT, prepare, run
from tests.helpers.ports import free_port
from tests.helpers.support import SECRET, ServiceUnderTest, make_settings, start_service

ROOT = Path(__file__).resolve().parent.parent
HOOK_SOURCE = PROJECT / "sync-users.ts"
PASSWORD = "correct horse battery staple"
BETTER_AUTH_SECRET = "test-secret-for-better-auth-0123456789abcdef"


# --- the README's code is the code under test -------------------------------------------------------


def _readme_typescript_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    blocks, inside, current = [], False, []
    for line in readme.splitlines(keepends=True):
        if not inside and line.strip() in ("```ts", "```typescript"):
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("".join(current))
        elif inside:
            current.append(line)
    return blocks


def test_readme_shows_exactly_the_hook_code_under_test() -> None:
    assert HOOK_SOURCE.read_text() in _readme_typescript_blocks()


# --- Node.js: install once, type-check, run ---------------------------------------------------------


@pytest.fixture(scope="session")
def node_project() -> Path:
    """tests/better_auth with its pinned packages installed and the hook code built."""
    project = prepare()
    if project is None:
        pytest.skip(NO_NODE)
    return project


def test_hook_code_type_checks_against_better_auth(node_project: Path) -> None:
    """The README's TypeScript compiles (strict) against better-auth 1.7.25's own types."""
    run([str(node_project / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json"], timeout=120)


class BetterAuth:
    def __init__(self, process: subprocess.Popen[str], base_url: str, log: Path) -> None:
        self.process, self.base_url, self.log = process, base_url, log

    def client(self) -> httpx.AsyncClient:
        # Better Auth refuses cookie-authenticated POSTs without a trusted Origin (CSRF protection).
        return httpx.AsyncClient(base_url=self.base_url, headers={"origin": self.base_url}, timeout=30)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def better_auth_server(
    node_project: Path, sync_service_url: str, tmp_path: Path, *, port: int | None = None, **extra_env: str
) -> Iterator[BetterAuth]:
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "NODE_ENV": "test",
        "BETTER_AUTH_URL": base_url,
        "BETTER_AUTH_SECRET": BETTER_AUTH_SECRET,
        "SYNC_SERVICE_URL": sync_service_url,
        "SYNC_WEBHOOK_SECRET": SECRET,
        **extra_env,  # e.g. BETTER_AUTH_DATABASE_URL (server.mjs)
    }
    log = tmp_path / f"better-auth-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["node", "server.mjs"], cwd=node_project, env=env, stdout=out, stderr=out, text=True
        )
    server = BetterAuth(process, base_url, log)
    try:
        deadline = time.monotonic() + 30
        while "better-auth listening" not in server.output:
            assert process.poll() is None, f"Better Auth exited:\n{server.output}"
            assert time.monotonic() < deadline, f"Better Auth did not start:\n{server.output}"
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _eventually(probe: Any, *, within: float = 15.0) -> Any:
    """Poll `probe()` until it returns something truthy (the hook delivers in the background)."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


# --- end to end -------------------------------------------------------------------------------------


@pytest.fixture
def sync_service(
    migrated_database_url: str, db: asyncpg.Connection
) -> Iterator[tuple[ServiceUnderTest, int]]:
    """The service, told where Better Auth will listen (its JWKS, issuer and audience)."""
    better_auth_port = free_port()
    settings = make_settings(migrated_database_url, BETTER_AUTH_URL=f"http://127.0.0.1:{better_auth_port}")
    with start_service(settings) as running:
        yield running, better_auth_port


async def _sign_up(client: httpx.AsyncClient, email: str, name: str) -> dict[str, Any]:
    response = await client.post(
        "/api/auth/sign-up/email", json={"email": email, "password": PASSWORD, "name": name}
    )
    assert response.status_code == 200, response.text
    user: dict[str, Any] = response.json()["user"]
    return user


@pytest.mark.slow
async def test_sign_up_and_update_user_reach_the_users_table(
    node_project: Path, sync_service: tuple[ServiceUnderTest, int], db: asyncpg.Connection, tmp_path: Path
) -> None:
    service, port = sync_service
    with better_auth_server(node_project, service.base_url, tmp_path, port=port) as better_auth:
        async with better_auth.client() as client:
            user = await _sign_up(client, "Ada.Lovelace@Example.com", "Ada Lovelace")
            uuid.UUID(user["id"])  # generateId: "uuid", the service's default USER_ID_FORMAT

            async def row() -> Any:
                return await db.fetchrow("SELECT * FROM users WHERE id = $1", user["id"])

            created = await _eventually(row)
            assert created is not None, better_auth.output
            assert created["email"] == "ada.lovelace@example.com"  # Better Auth lower-cases emails
            assert created["name"] == "Ada Lovelace"
            assert created["email_verified"] is False
            assert created["image"] is None
            assert (
                created["created_at"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
                == user["createdAt"]
            )

            image = "https://example.com/ada.png"
            updated = await client.post("/api/auth/update-user", json={"name": "Ada King", "image": image})
            assert updated.status_code == 200, updated.text

            async def updated_row() -> Any:
                current = await row()
                return current if current["name"] == "Ada King" else None

            after = await _eventually(updated_row)
            assert after is not None, better_auth.output
            assert after["image"] == image
            assert after["updated_at"] > created["updated_at"]
            assert after["created_at"] == created["created_at"]

        events = await db.fetch(
            "SELECT event_type, status FROM webhook_events WHERE user_id = $1", user["id"]
        )
        assert sorted((e["event_type"], e["status"]) for e in events) == [
            ("user.created", "applied"),
            ("user.updated", "applied"),
        ]
    assert "[sync-users]" not in better_auth.output  # no delivery failed


@pytest.mark.slow
async def test_better_auth_token_is_accepted_by_users_me(
    node_project: Path, sync_service: tuple[ServiceUnderTest, int], db: asyncpg.Connection, tmp_path: Path
) -> None:
    service, port = sync_service
    with better_auth_server(node_project, service.base_url, tmp_path, port=port) as better_auth:
        async with better_auth.client() as client:
            user = await _sign_up(client, "grace@example.com", "Grace Hopper")
            assert await _eventually(lambda: db.fetchval("SELECT 1 FROM users WHERE id = $1", user["id"]))
            token_response = await client.get("/api/auth/token")
            assert token_response.status_code == 200, token_response.text
            token = token_response.json()["token"]

        # The token verifies with the service's own expectations (JWKS URL, issuer, audience, algorithms)
        # derived from BETTER_AUTH_URL alone: what /users/me relies on.
        settings = service.settings
        assert settings.jwt_jwks_url == f"{better_auth.base_url}/api/auth/jwks"
        key = await asyncio.to_thread(jwt.PyJWKClient(settings.jwt_jwks_url).get_signing_key_from_jwt, token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=list(settings.jwt_algorithms),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            options={"require": ["exp", "sub"]},
        )
        assert claims["sub"] == user["id"]

        async with service.client() as api:
            me = await api.get("/users/me", headers={"Authorization": f"Bearer {token}"})
            anonymous = await api.get("/users/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["id"] == user["id"]
    assert body["email"] == "grace@example.com"
    assert body["name"] == "Grace Hopper"
    assert body["email_verified"] is False
    assert anonymous.status_code == 401


# --- the hook never blocks the auth request, and retries ------------------------------------------


class FlakyReceiver:
    """Stands in for the service: answers 503 to the first `failures` deliveries, then 200; records
    each delivery's headers and body."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()


@contextlib.contextmanager
def flaky_receiver(failures: int) -> Iterator[tuple[FlakyReceiver, str]]:
    receiver = FlakyReceiver(failures)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with receiver.lock:
                receiver.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = 503 if len(receiver.deliveries) <= receiver.failures else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
async def test_the_hook_answers_sign_up_at_once_and_retries_in_the_background(
    node_project: Path, tmp_path: Path
) -> None:
    with (
        flaky_receiver(failures=2) as (receiver, url),
        better_auth_server(node_project, url, tmp_path) as better_auth,
    ):
        async with better_auth.client() as client:
            user = await _sign_up(client, "retry@example.com", "Retry Rita")
            # The sign-up was answered before the hook's first retry (0.5 s after the first attempt).
            assert len(receiver.deliveries) <= 1

        async def three() -> bool:
            return len(receiver.deliveries) >= 3

        assert await _eventually(three, within=10), better_auth.output
        await asyncio.sleep(1.5)  # a 4th attempt would come 2 s after the 3rd
    assert len(receiver.deliveries) == 3
    ids = {headers["webhook-id"] for headers, _ in receiver.deliveries}
    assert len(ids) == 1  # every attempt is the same message: the service would answer "duplicate"
    for headers, body in receiver.deliveries:
        Webhook(SECRET).verify(body, headers)  # signed like the service expects (svix's verifier)
        payload = json.loads(body)
        assert payload["type"] == "user.created"
        assert payload["data"]["id"] == user["id"]
        assert set(payload["data"]) == {"id", "email", "emailVerified", "name", "createdAt", "updatedAt"}
    assert "[sync-users]" not in better_auth.output


@pytest.mark.slow
async def test_delete_user_erases_them_and_the_email_can_sign_up_again(
    node_project: Path, sync_service: tuple[ServiceUnderTest, int], db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Sign-up, update, /delete-user (user.deleteUser.enabled, the hook's delete.after): the row goes, the
    old still-valid token reads 404, the email is found in no column of any table; the same email signs up
    again under a new id, applied and readable with its own token."""
    from tests.test_deletions import everywhere

    service, port = sync_service
    email = "hedy.lamarr@example.com"
    with better_auth_server(node_project, service.base_url, tmp_path, port=port) as better_auth:
        async with better_auth.client() as client:
            old = await _sign_up(client, email, "Hedy Lamarr")
            assert await _eventually(lambda: db.fetchval("SELECT 1 FROM users WHERE id = $1", old["id"]))
            renamed = await client.post("/api/auth/update-user", json={"name": "Hedy K."})
            assert renamed.status_code == 200, renamed.text
            assert await _eventually(
                lambda: db.fetchval("SELECT 1 FROM users WHERE id = $1 AND name = 'Hedy K.'", old["id"])
            )
            old_token = (await client.get("/api/auth/token")).json()["token"]
            deleted = await client.post("/api/auth/delete-user", json={"password": PASSWORD})
            assert deleted.status_code == 200, deleted.text
            assert await _eventually(
                lambda: db.fetchval("SELECT 1 FROM deleted_users WHERE id = $1", old["id"])
            ), better_auth.output
        async with service.client() as api:
            gone = await api.get("/users/me", headers={"Authorization": f"Bearer {old_token}"})
            by_id = await api.get(f"/users/{old['id']}", headers={"Authorization": f"Bearer {old_token}"})
        assert (gone.status_code, by_id.status_code) == (404, 404)
        assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", old["id"]) == 0
        assert await everywhere(db, email) == []
        assert await everywhere(db, "Hedy") == []
        statuses = [r["status"] for r in await db.fetch("SELECT status FROM webhook_events")]
        assert statuses == ["applied"] * 3

        async with better_auth.client() as client:
            new = await _sign_up(client, email, "Hedy Again")
            assert new["id"] != old["id"]
            assert await _eventually(lambda: db.fetchval("SELECT 1 FROM users WHERE id = $1", new["id"]))
            new_token = (await client.get("/api/auth/token")).json()["token"]
        async with service.client() as api:
            me = await api.get("/users/me", headers={"Authorization": f"Bearer {new_token}"})
            still_gone = await api.get("/users/me", headers={"Authorization": f"Bearer {old_token}"})
    assert me.status_code == 200, me.text
    assert (me.json()["id"], me.json()["email"], me.json()["name"]) == (new["id"], email, "Hedy Again")
    assert still_gone.status_code == 404
    assert "[sync-users]" not in better_auth.output  # no delivery failed
