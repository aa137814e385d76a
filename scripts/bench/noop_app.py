"""The framework ceiling: a Litestar app that does what the service's handlers cannot avoid and nothing else.

POST /webhooks/better-auth reads the raw body and decodes it with msgspec into a Struct like the
service's envelope and user (same fields, same types, tz-aware datetimes), then answers a tiny JSON.
GET /users/me answers a constant user (a msgspec Struct Litestar serialises, about the size of a real
one). Served by uvicorn exactly as `sync-service serve` serves the service (one worker, same options,
including its HTTP protocol class, which sends a small response in one write): the ratios then compare
the service's own work, not a difference in how the two are served.

    cd scripts && python -m bench.noop_app --port 8001
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime

import msgspec
import uvicorn
from litestar import Litestar, Response, Router, get, post
from litestar.params import RawBody

from sync_service.webhooks.events import AwareDatetime, UserData  # the service's own user Struct


class Envelope(msgspec.Struct):
    type: str
    data: UserData
    timestamp: AwareDatetime | None = None


class User(msgspec.Struct):
    id: str
    email: str
    email_verified: bool
    name: str | None
    image: str | None
    created_at: datetime
    updated_at: datetime


_ACK = b'{"status":"applied"}'
_MOMENT = datetime(2026, 11, 27, 11, 58, 53, 300000, tzinfo=UTC)
_USER = User(
    "ccd4a01a-6176-49d2-bf5e-323e5c1ed3a1", "a1b2c3d4e5f60718293a@example.com", True, "Alice Smith",
    "https://cdn.example.com/avatars/ccd4a01a-6176-49d2-bf5e-323e5c1ed3a1/123456.png", _MOMENT, _MOMENT,
)  # fmt: skip


@post("/better-auth", status_code=200)
async def webhook(body: RawBody) -> Response[bytes]:
    msgspec.json.decode(body, type=Envelope)
    return Response(_ACK, status_code=200, media_type="application/json")


@get("/me")
async def me() -> User:
    return _USER


def create_app() -> Litestar:
    return Litestar(
        route_handlers=[
            Router(path="/webhooks", route_handlers=[webhook], request_max_body_size=262_144),
            Router(path="/users", route_handlers=[me]),
        ],
        request_max_body_size=262_144,
        # Litestar's default logging config would set the root logger to INFO and log every request
        # through uvicorn's access logger: keep the WARNING set up in main(), as the service intends.
        logging_config=None,
    )


def serve(factory: str, description: str) -> None:
    """Serve the app `factory` makes ("module:function") on `--host`/`--port` exactly as `sync-service
    serve` serves the service: `--workers` processes (one by default), its HTTP protocol class and
    concurrency limit, WARNING and up logged, uvicorn's access log off."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
    uvicorn.run(
        factory, factory=True, workers=args.workers, host=args.host, port=args.port, log_config=None,
        server_header=False, timeout_graceful_shutdown=30,
        http="sync_service.http_protocol:DeadlineHttpToolsProtocol",
        limit_concurrency=1000,  # `sync-service serve`'s default --limit-concurrency
    )  # fmt: skip


def main() -> None:
    serve("bench.noop_app:create_app", __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
