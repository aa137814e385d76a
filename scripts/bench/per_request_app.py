"""The straightforward receiver the issue quotes: verify, decode, one transaction per request.

POST /webhooks/better-auth verifies the signature with svix, decodes the body with msgspec into the same
envelope Struct as the no-op app, and in one transaction of its own records the message id in the inbox
(a duplicate ends there) and upserts the user (newer `updatedAt` wins), then answers. No batching, no
validation beyond the decode, no metrics: the baseline that group commit is measured against, in the
same run, on the same database server. Served by uvicorn exactly as the no-op app is.

    cd scripts && DATABASE_URL=postgresql://... WEBHOOK_SECRET=whsec_... \\
        python -m bench.per_request_app --port 8002
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.params import RawBody
from svix.webhooks import Webhook, WebhookVerificationError

from bench.noop_app import Envelope, serve

_RECORD = """
INSERT INTO webhook_events (message_id, event_type, user_id, event_timestamp, status, payload)
VALUES ($1, $2, $3, $4, 'applied', $5::jsonb)
ON CONFLICT (message_id) DO NOTHING
RETURNING message_id
"""
_UPSERT = """
INSERT INTO users (id, email, email_verified, name, image, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET
    email = EXCLUDED.email, email_verified = EXCLUDED.email_verified, name = EXCLUDED.name,
    image = EXCLUDED.image, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at
WHERE users.updated_at < EXCLUDED.updated_at
"""
log = logging.getLogger("per_request_app")
_APPLIED = b'{"status":"applied"}'
_DUPLICATE = b'{"status":"duplicate"}'


@post("/webhooks/better-auth", status_code=200)
async def webhook(request: Request[Any, Any, Any], body: RawBody) -> Response[bytes]:
    try:
        request.app.state.webhook.verify(body, dict(request.headers))
    except WebhookVerificationError:
        return Response(b'{"detail":"invalid signature"}', status_code=401, media_type="application/json")
    envelope = msgspec.json.decode(body, type=Envelope)
    user = envelope.data
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn, conn.transaction():
        recorded = await conn.fetchval(
            _RECORD, request.headers["webhook-id"], envelope.type, user.id, envelope.timestamp, body.decode()
        )
        if recorded is not None:
            await conn.execute(
                _UPSERT, user.id, user.email, user.email_verified, user.name, user.image, user.created_at,
                user.updated_at,
            )  # fmt: skip
    return Response(_APPLIED if recorded else _DUPLICATE, status_code=200, media_type="application/json")


def _failed(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Logged (to the log `bench.py --keep-logs` copies) so that a non-2xx in its row can be explained.
    log.error("request failed", exc_info=exc)
    return Response(b'{"detail":"internal error"}', status_code=500, media_type="application/json")


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    @contextlib.asynccontextmanager
    async def database(app: Litestar) -> AsyncIterator[None]:
        async with asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=4, max_size=10) as pool:
            app.state.pool = pool
            yield

    app = Litestar(
        route_handlers=[webhook, health],
        lifespan=[database],
        request_max_body_size=262_144,
        logging_config=None,
        exception_handlers={500: _failed},
    )
    app.state.webhook = Webhook(os.environ["WEBHOOK_SECRET"])
    return app


def main() -> None:
    serve("bench.per_request_app:create_app", __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
