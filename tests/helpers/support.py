"""Settings, the service on a real loopback socket, signed deliveries (svix's signer)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import uvicorn
from svix.webhooks import Webhook

from sync_service.app import create_app
from sync_service.config import Settings, load_settings
from sync_service.http_protocol import DeadlineHttpToolsProtocol
from tests.helpers.ports import free_port

# Two valid secrets (24 and 32 random bytes, base64), for rotation tests.
SECRET = "whsec_wEI3M3vAYjZHYziLgtZJruB7Kml+T+AS"
SECRET_2 = "whsec_QDyi+na7I5taWmuHuY4vhIazBdiBX23MChMBBBIrTXg="


def make_settings(database_url: str, **env: str) -> Settings:
    base = {
        "DATABASE_URL": database_url,
        "WEBHOOK_SECRET": SECRET,
        "DB_POOL_SIZE": "2",
        "DB_MAX_OVERFLOW": "4",
        "LOG_LEVEL": "WARNING",
    }
    base.update(env)
    return load_settings(environ=base, env_file=None)


@dataclass
class ServiceUnderTest:
    base_url: str
    settings: Settings
    server: uvicorn.Server

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30, **kwargs)


@contextlib.contextmanager
def start_service(settings: Settings) -> Iterator[ServiceUnderTest]:
    """Run the app under uvicorn in a thread (its own event loop) on a free loopback port."""
    with serving(create_app(settings), lifespan="on") as server:
        yield ServiceUnderTest(f"http://127.0.0.1:{server.config.port}", settings, server)


@contextlib.contextmanager
def serving(app: Any, **options: Any) -> Iterator[uvicorn.Server]:
    """uvicorn serving `app` in a thread on a free loopback port, with the HTTP protocol `sync-service
    serve` uses; `options` go to uvicorn.Config."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "log_config": None,
        "server_header": False,
        "loop": "asyncio",  # uvloop in a non-main thread fails to close its handles now and then
        "http": DeadlineHttpToolsProtocol,
        # Longer than any test. With uvicorn's 5 s, a pooled client connection left idle that long could be
        # reused at the moment the server closed it, and the request failed with a reset (reproduced with
        # a 0.05 s keep-alive, stock protocol or ours); real senders retry, a test's one request must not.
        "timeout_keep_alive": 300,
    }
    config = uvicorn.Config(app, **{**settings, **options})
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{config.port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def iso(moment: datetime) -> str:
    """Better Auth's date format: UTC, milliseconds, Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def user_data(
    *,
    user_id: str | None = None,
    email: str | None = None,
    name: str | None = "Alice",
    created: datetime | None = None,
    updated: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    user_id = str(uuid.uuid4()) if user_id is None else user_id
    created = created or datetime.now(UTC) - timedelta(minutes=1)
    data: dict[str, Any] = {
        "id": user_id,
        "email": email or f"{user_id[:8] or 'empty'}@example.com",
        "emailVerified": False,
        "name": name,
        "createdAt": iso(created),
        "updatedAt": iso(updated or created),
    }
    data.update(extra)
    return data


def envelope(data: Any, event_type: str = "user.created") -> dict[str, Any]:
    return {"type": event_type, "timestamp": iso(datetime.now(UTC)), "data": data}


def signed_headers(
    body: bytes,
    *,
    message_id: str | None = None,
    secrets: tuple[str, ...] = (SECRET,),
    prefix: str = "webhook",
    timestamp: datetime | None = None,
) -> dict[str, str]:
    """Headers as Better Auth's hook sends them, signed by svix's own signer (one signature per secret)."""
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    when = timestamp or datetime.now(UTC)
    # svix annotates `data` as str but signs bytes byte for byte, so non-UTF-8 bodies can be signed too.
    signature = " ".join(Webhook(s).sign(message_id, when, body) for s in secrets)  # type: ignore[arg-type]
    return {
        f"{prefix}-id": message_id,
        f"{prefix}-timestamp": str(int(when.timestamp())),
        f"{prefix}-signature": signature,
        "content-type": "application/json",
    }


def encode(payload: Any) -> bytes:
    return msgspec.json.encode(payload)


async def deliver(
    client: httpx.AsyncClient,
    payload: Any,
    *,
    message_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    **sign_kwargs: Any,
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else encode(payload)
    all_headers = signed_headers(body, message_id=message_id, **sign_kwargs)
    all_headers.update(headers or {})
    return await client.post("/webhooks/better-auth", content=body, headers=all_headers)
