"""GET /health/live and GET /health/ready: ready only with the database reachable and the schema at head;
HEAD answers each as GET does, without the body."""

from __future__ import annotations

import pytest

from sync_service.ops import migrations
from tests.helpers.databases import fresh_database, unreachable_database_url
from tests.helpers.support import ServiceUnderTest, make_settings, start_service


async def test_live_and_ready_when_all_is_well(service: ServiceUnderTest) -> None:
    async with service.client() as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
async def test_head_answers_as_get_does_without_a_body(service: ServiceUnderTest, path: str) -> None:
    async with service.client() as client:
        get = await client.get(path)
        head = await client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))


async def test_head_on_ready_is_503_with_retry_after_when_the_database_is_unreachable() -> None:
    settings = make_settings(unreachable_database_url(), DB_CONNECT_TIMEOUT="1", DB_ACQUIRE_TIMEOUT="1")
    with start_service(settings) as running:
        async with running.client() as client:
            live = await client.head("/health/live")
            ready = await client.head("/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.content == b""
    assert ready.headers["retry-after"].isdigit()


async def test_not_ready_naming_the_reason_when_the_database_is_unreachable() -> None:
    settings = make_settings(unreachable_database_url(), DB_CONNECT_TIMEOUT="1", DB_ACQUIRE_TIMEOUT="1")
    with start_service(settings) as running:
        async with running.client() as client:
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
    assert live.status_code == 200  # the process is fine; only readiness depends on the database
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready", "reason": "database unreachable"}
    assert ready.headers["retry-after"].isdigit()


@pytest.mark.parametrize("applied", [0, 1], ids=["empty-database", "one-migration-behind"])
async def test_not_ready_naming_pending_migrations(postgres_server_url: str, applied: int) -> None:
    with fresh_database(postgres_server_url) as url:
        settings = make_settings(url)
        assert settings.database is not None
        if applied:
            migrations.apply(settings.database.yoyo_url)
            migrations.rollback(
                settings.database.yoyo_url, len(migrations.expected_migration_ids()) - applied
            )
        pending = sorted(migrations.expected_migration_ids())[applied:]
        with start_service(settings) as running:
            async with running.client() as client:
                ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json() == {
                "status": "not ready",
                "reason": f"migrations pending: {', '.join(pending)}",
            }

            migrations.apply(settings.database.yoyo_url)
            async with running.client() as client:
                assert (await client.get("/health/ready")).status_code == 200
