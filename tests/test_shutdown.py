"""Graceful shutdown of a real `sync-service serve`: SIGTERM in the middle of a burst of deliveries loses
nothing that was acknowledged and leaves nothing half-written."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.helpers.process import serve, service_environment
from tests.helpers.support import deliver, envelope, user_data

BURST = 400
CONCURRENCY = 40
SIGTERM_AFTER = 60  # acknowledged deliveries


@pytest.mark.slow
async def test_sigterm_during_a_burst_keeps_every_acknowledged_delivery(
    tmp_path: Path, migrated_database_url: str, db: asyncpg.Connection
) -> None:
    env = service_environment(DATABASE_URL=migrated_database_url, LOG_LEVEL="WARNING")
    acknowledged: dict[str, str] = {}  # message id -> user id
    refused = 0  # not acknowledged: 503, connection refused or closed; a real sender retries these
    with serve(tmp_path, env) as running:
        terminated = asyncio.Event()
        in_flight_at_sigterm = 0
        in_flight = 0
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(client: httpx.AsyncClient) -> None:
            nonlocal refused, in_flight, in_flight_at_sigterm
            data = user_data()
            message_id = f"msg_{uuid.uuid4().hex}"
            async with gate:
                in_flight += 1
                try:
                    response = await deliver(client, envelope(data), message_id=message_id)
                except httpx.TransportError:
                    refused += 1
                    return
                finally:
                    in_flight -= 1
            if response.status_code == 200:
                assert response.json() == {"status": "applied"}
                acknowledged[message_id] = data["id"]
                if len(acknowledged) == SIGTERM_AFTER and not terminated.is_set():
                    in_flight_at_sigterm = in_flight
                    running.process.terminate()  # SIGTERM
                    terminated.set()
            else:
                assert response.status_code == 503, response.text
                refused += 1

        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30, limits=limits) as client:
            await asyncio.gather(*(one(client) for _ in range(BURST)))
        exit_status = await asyncio.to_thread(running.process.wait, 30)

    assert exit_status == 0, running.stderr
    assert terminated.is_set()
    assert in_flight_at_sigterm > 0  # the signal really landed mid-burst
    assert len(acknowledged) >= SIGTERM_AFTER
    assert refused > 0  # and the service really stopped taking new work

    rows = await db.fetch("SELECT message_id, user_id, status FROM webhook_events")
    stored = {r["message_id"]: (r["user_id"], r["status"]) for r in rows}
    lost = [m for m in acknowledged if m not in stored]
    assert not lost, f"{len(lost)} acknowledged deliveries are not in the inbox"
    assert all(stored[m] == (user, "applied") for m, user in acknowledged.items())
    # Each inbox row and its user row were committed together: no event without its write.
    users = {r["id"] for r in await db.fetch("SELECT id FROM users")}
    assert {user for user, status in stored.values() if status == "applied"} == users
