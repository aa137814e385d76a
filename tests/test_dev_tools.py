"""The README's first-hour path without Better Auth: `scripts/dev/send_webhook.py` signs and sends the
sample body, `scripts/dev/mint_token.py` serves a loopback JWKS and mints a token, and `/users/me`
answers with the user the webhook wrote. Both scripts run as a newcomer runs them (subprocesses)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from tests.helpers.ports import free_port
from tests.helpers.support import SECRET, make_settings, start_service

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "user.created.json"


@contextlib.contextmanager
def minted_token(user_id: str, port: int) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/dev/mint_token.py"), "--sub", user_id, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        token = process.stdout.readline().strip()
        assert token.count(".") == 2, process.stderr.read() if process.poll() is not None else token
        yield token
    finally:
        process.terminate()
        process.communicate(timeout=10)


def _send(base_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/dev/send_webhook.py"), str(SAMPLE), "--url", base_url],
        env={**os.environ, "WEBHOOK_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_sample_webhook_then_minted_token_reads_the_user(
    migrated_database_url: str, db: asyncpg.Connection
) -> None:
    user_id = json.loads(SAMPLE.read_text())["data"]["id"]
    jwks_port = free_port()
    with minted_token(user_id, jwks_port) as token:
        settings = make_settings(migrated_database_url, BETTER_AUTH_URL=f"http://127.0.0.1:{jwks_port}")
        with start_service(settings) as service:
            first, again = _send(service.base_url), _send(service.base_url)
            assert (first.returncode, first.stdout.strip()) == (0, '200 {"status":"applied"}'), first.stderr
            assert again.stdout.strip() == '200 {"status":"duplicate"}', again.stderr
            async with service.client() as client:
                response = await client.get("/users/me", headers={"authorization": f"Bearer {token}"})
                assert response.status_code == 200, response.text
                assert response.json()["email"] == "alice@example.com"
                forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
                refused = await client.get("/users/me", headers={"authorization": f"Bearer {forged}"})
                assert refused.status_code == 401
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", user_id) == 1
