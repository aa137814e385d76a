"""`sync-service backfill` against a real Better Auth 1.7 server on PostgreSQL (the `pg` adapter; Better
Auth's own migrations create its schema in a throwaway database): users sign up while no webhook reaches
the service, then one backfill makes `/users/me` answer for each of them with their own Better Auth token.

Needs `node` and `npm`, like tests/test_better_auth.py (whose server and fixtures it uses).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sync_service.backfill.command import run
from sync_service.backfill.options import resolve
from sync_service.cli import _parser
from tests.helpers.ports import free_port
from tests.helpers.support import ServiceUnderTest, make_settings, start_service
from tests.test_better_auth import _sign_up, better_auth_server, node_project

__all__ = ["node_project"]  # the fixture, used by name


@pytest.mark.slow
async def test_users_who_signed_up_before_the_service_saw_them_are_backfilled(
    node_project: Path, migrated_database_url: str, db: asyncpg.Connection, fresh_database_url: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    port = free_port()
    settings = make_settings(migrated_database_url, BETTER_AUTH_URL=f"http://127.0.0.1:{port}")
    people = [("ada@example.com", "Ada Lovelace"), ("grace@example.com", "Grace Hopper"),
              ("Edsger@Example.com", "Edsger Dijkstra")]  # fmt: skip
    # No SYNC_SERVICE_URL: this Better Auth sends no webhooks, as a deployment before the service existed.
    with (
        better_auth_server(
            node_project, "", tmp_path, port=port, BETTER_AUTH_DATABASE_URL=fresh_database_url
        ) as better_auth,
        start_service(settings) as service,
    ):
        tokens: dict[str, str] = {}
        users: dict[str, dict[str, Any]] = {}
        for email, name in people:
            async with better_auth.client() as client:
                user = await _sign_up(client, email, name)
                answer = await client.get("/api/auth/token")
                assert answer.status_code == 200, answer.text
                tokens[user["id"]], users[user["id"]] = answer.json()["token"], user
        assert await _me_statuses(service, tokens) == dict.fromkeys(tokens, 404)  # not synced yet

        dry = await _backfill(capsys, migrated_database_url, fresh_database_url, "--dry-run")
        assert dry[0] == 3
        assert sorted(dry[1]["ids"]["missing"]) == sorted(tokens)

        code, summary = await _backfill(capsys, migrated_database_url, fresh_database_url)
        assert code == 0, summary
        assert {k: v for k, v in summary["outcomes"].items() if v} == {"applied": 3}
        assert await _me_statuses(service, tokens) == dict.fromkeys(tokens, 200)
        async with service.client() as api:
            for user_id, token in tokens.items():
                me = (await api.get("/users/me", headers={"Authorization": f"Bearer {token}"})).json()
                user = users[user_id]
                assert me["email"] == user["email"]  # as Better Auth stored it (lower-cased)
                assert (me["name"], me["email_verified"], me["image"]) == (user["name"], False, None)
                assert (me["created_at"], me["updated_at"]) == (user["createdAt"], user["updatedAt"])

        # A profile change in Better Auth (still no webhook) is brought over by the next run; the rest
        # is duplicate. Then the dry run sees no drift.
        async with better_auth.client() as client:
            first = people[0]
            signed_in = await client.post(
                "/api/auth/sign-in/email",
                json={"email": first[0], "password": "correct horse battery staple"},
            )
            assert signed_in.status_code == 200, signed_in.text
            assert (await client.post("/api/auth/update-user", json={"name": "Ada King"})).status_code == 200
        code, again = await _backfill(capsys, migrated_database_url, fresh_database_url)
        assert code == 0
        assert {k: v for k, v in again["outcomes"].items() if v} == {"applied": 1, "duplicate": 2}
        assert await db.fetchval("SELECT name FROM users WHERE email = $1", first[0]) == "Ada King"
        assert (await _backfill(capsys, migrated_database_url, fresh_database_url, "--dry-run"))[0] == 0
    assert "[sync-users]" not in better_auth.output


async def _backfill(
    capsys: pytest.CaptureFixture[str], ours: str, source: str, *argv: str
) -> tuple[int, dict[str, Any]]:
    args = _parser().parse_args(["backfill", "--better-auth-database-url", source, *argv, "--json"])
    code = await run(resolve(args, make_settings(ours)))
    return code, json.loads(capsys.readouterr().out)


async def _me_statuses(service: ServiceUnderTest, tokens: dict[str, str]) -> dict[str, int]:
    async with service.client() as api:
        return {
            user_id: (await api.get("/users/me", headers={"Authorization": f"Bearer {token}"})).status_code
            for user_id, token in tokens.items()
        }
