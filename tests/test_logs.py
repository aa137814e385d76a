"""The service's own log output (a real `sync-service serve`, stderr not a terminal): JSON lines, one per
request and per delivery, and never a secret, token, password, email or name."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from sync_service.ops.logs import ConsoleFormatter, JsonFormatter
from tests.helpers.process import serve, service_environment
from tests.helpers.support import SECRET, deliver, envelope, user_data

EMAIL = "leak.canary.7f3a@example.com"
NAME = "Zebulon Quarrington"
TOKEN = "eyJhbGciOiJFZERTQSIsImtpZCI6ImxlYWsifQ.eyJzdWIiOiJsZWFrLWNhbmFyeSJ9.c2lnbmF0dXJlLWNhbmFyeQ"
QUERY_SECRET = "query-canary-5b1e"
DB_PASSWORD = "db-password-canary-91c2"


def _with_password(url: str) -> tuple[str, str]:
    """The URL with a password we can look for, where the server ignores it (trust auth, as in CI);
    a URL that already has one keeps it, and that one is looked for. A socket URL (pgserver's
    `postgresql://postgres:@/postgres?host=/tmp/...`) takes one before its empty host as well."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    netloc = f"{parts.username or 'postgres'}:{DB_PASSWORD}@{parts.netloc.rsplit('@', 1)[-1]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), DB_PASSWORD


async def test_logs_are_json_lines_without_secrets_tokens_or_pii(
    tmp_path: Path, migrated_database_url: str, db: asyncpg.Connection
) -> None:
    database_url, password = _with_password(migrated_database_url)
    env = service_environment(DATABASE_URL=database_url, LOG_LEVEL="DEBUG")
    alice = user_data(email=EMAIL, name=NAME)
    with serve(tmp_path, env) as running:
        async with running.client() as client:
            applied = await deliver(client, envelope(alice), message_id="msg_log_applied")
            # Another user claiming the same email: 409, and the error path must not log the email.
            thief = await deliver(
                client, envelope(user_data(email=EMAIL, name=NAME)), message_id="msg_log_409"
            )
            invalid = await deliver(client, envelope(user_data(email=f"{NAME}@", name=NAME)))
            deleted = await deliver(client, envelope(alice, "user.deleted"), message_id="msg_log_deleted")
            forged = await client.post(
                "/webhooks/better-auth",
                content=json.dumps(envelope(alice)),
                headers={
                    "webhook-id": "msg_forged",
                    "webhook-timestamp": "1",
                    "webhook-signature": "v1,Zm9v",
                },
            )
            me = await client.get("/users/me", headers={"Authorization": f"Bearer {TOKEN}"})
            probe = await client.get(f"/health/live?access_token={QUERY_SECRET}")
        assert running.terminate() == 0
    assert (applied.status_code, thief.status_code, invalid.status_code) == (200, 409, 422)
    assert deleted.json() == {"status": "applied"}
    assert forged.status_code == 401
    assert me.status_code in (401, 404)  # 404 until the read API is part of the app
    assert probe.status_code == 200
    output = running.stderr

    forbidden = [EMAIL, NAME, "Zebulon", "Quarrington", TOKEN, TOKEN.split(".")[1], QUERY_SECRET,
                 SECRET, SECRET.removeprefix("whsec_"), "Bearer", password]  # fmt: skip
    for needle in forbidden:
        assert needle not in output, f"{needle!r} leaked into the logs"

    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
    requests = [line for line in lines if line["logger"] == "sync_service.http"]
    seen = {(r["method"], r["route"], r["status"]) for r in requests}
    webhook = "/webhooks/better-auth"
    assert {("POST", webhook, 200), ("POST", webhook, 409), ("POST", webhook, 422), ("POST", webhook, 401),
            ("GET", "/health/live", 200)} <= seen  # fmt: skip
    assert all(isinstance(r["latency_ms"], float | int) and r["latency_ms"] >= 0 for r in requests)
    assert all(
        set(r) == {"ts", "level", "logger", "msg", "method", "route", "status", "latency_ms"}
        for r in requests
    )

    deliveries = {line["message_id"]: line for line in lines if line["msg"] == "webhook delivery"}
    assert deliveries["msg_log_applied"]["outcome"] == "applied"
    assert deliveries["msg_log_applied"]["user_id"] == alice["id"]
    assert deliveries["msg_log_applied"]["event_type"] == "user.created"
    assert deliveries["msg_log_409"]["outcome"] == "conflict"
    assert (deliveries["msg_log_deleted"]["event_type"], deliveries["msg_log_deleted"]["user_id"]) == (
        "user.deleted", alice["id"],
    )  # fmt: skip
    assert deliveries["msg_log_applied"]["latency_ms"] >= 0


async def test_log_level_filters(tmp_path: Path, migrated_database_url: str) -> None:
    env = service_environment(DATABASE_URL=migrated_database_url, LOG_LEVEL="WARNING")
    with serve(tmp_path, env) as running:
        async with running.client() as client:
            await client.get("/no-such-route")
        assert running.terminate() == 0
    assert '"sync_service.http"' not in running.stderr
    assert "Uvicorn running" not in running.stderr


def test_logs_are_readable_lines_on_a_terminal(tmp_path: Path, migrated_database_url: str) -> None:
    import os
    import pty
    import select
    import signal
    import subprocess
    import time

    from tests.helpers.ports import free_port
    from tests.helpers.process import SYNC_SERVICE

    controller, terminal = pty.openpty()
    env = service_environment(DATABASE_URL=migrated_database_url)
    process = subprocess.Popen(
        [SYNC_SERVICE, "serve", "--port", str(free_port())], cwd=tmp_path, env=env, stderr=terminal,
        stdout=terminal, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"Uvicorn running" not in seen and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                seen += os.read(controller, 4096)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        os.close(controller)
    line = next(line for line in seen.decode().splitlines() if "Uvicorn running" in line)
    assert line.startswith("INFO    uvicorn.error: Uvicorn running on http://127.0.0.1:")


@pytest.mark.parametrize("formatter", [JsonFormatter(), ConsoleFormatter()], ids=["json", "console"])
async def test_logged_database_errors_do_not_carry_row_values(
    db: asyncpg.Connection, formatter: logging.Formatter
) -> None:
    """PostgreSQL names the conflicting key's value in its DETAIL line; a logged traceback must not."""
    insert = "INSERT INTO users (id, email) VALUES ($1, $2)"
    await db.execute(insert, "u1", EMAIL)
    try:
        await db.execute(insert, "u2", EMAIL)
    except asyncpg.UniqueViolationError:
        record = logging.getLogger("test").makeRecord(
            "test", logging.ERROR, __file__, 1, "ingest batch failed", None, sys.exc_info()
        )
    else:
        pytest.fail("the duplicate email was accepted")
    assert EMAIL in str(record.exc_info[1])  # asyncpg's text does hold it...
    text = formatter.format(record)
    assert EMAIL not in text  # ...the log line does not
    assert "UniqueViolationError" in text
    assert "withheld from logs" in text


async def test_credentials_in_the_jwks_url_reach_no_log_line(
    capsys: pytest.CaptureFixture[str], migrated_database_url: str
) -> None:
    """A JWKS URL with a password and a token in its query, a real fetch at DEBUG: neither is printed by
    our lines (redacted) nor by httpx's own (quieted)."""
    from sync_service.config import redact_url
    from sync_service.ops.logs import configure_logging
    from tests.helpers.jwks import JwksServer, SigningKey, better_auth_claims, running
    from tests.helpers.support import make_settings, start_service

    key = SigningKey.generate("EdDSA")
    server = JwksServer()
    server.serve(key)
    password, token_secret = "jwks-password-canary-3d1f", "jwks-query-canary-8e2a"
    url = (
        f"http://reader:{password}@127.0.0.1:{server.port}/api/auth/jwks?token={token_secret}&sslmode=require"
    )
    assert redact_url(url) == (
        f"http://reader:***@127.0.0.1:{server.port}/api/auth/jwks?token=***&sslmode=require"
    )
    root = logging.getLogger()
    previous_level, previous_handlers = root.level, root.handlers[:]
    configure_logging("DEBUG", json=True)
    try:
        user = user_data()
        settings = make_settings(
            migrated_database_url, JWT_JWKS_URL=url, JWT_ISSUER=server.base_url, JWT_AUDIENCE=server.base_url
        )
        with running(server), start_service(settings) as service:
            async with service.client() as client:
                assert (await deliver(client, envelope(user))).status_code == 200
                token = key.sign(better_auth_claims(user, issuer=server.base_url))
                answer = await client.get("/users/me", headers={"authorization": f"Bearer {token}"})
                assert answer.status_code == 200, answer.text
        assert server.requests >= 1  # the key set really was fetched through that URL
    finally:
        # The handler writes to this test's captured stderr, closed after it: put back what was there.
        root.handlers[:] = previous_handlers
        root.setLevel(previous_level)
    captured = capsys.readouterr().err
    assert "JWKS fetched" in captured  # the lines were captured at all
    assert password not in captured
    assert token_secret not in captured
