"""The application factory: all wiring (lifespan, dependencies, routers, CORS, errors) is here."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from sync_service import __version__
from sync_service.config import Settings, load_settings
from sync_service.error_handlers import exception_handlers
from sync_service.ops import health, metrics_route
from sync_service.ops.request_log import RequestLog
from sync_service.services import open_services
from sync_service.users import routes as users
from sync_service.users.middleware import BearerAuthMiddleware
from sync_service.users.tokens import build_token_verifier
from sync_service.webhooks import routes as webhooks
from sync_service.webhooks.signatures import SignatureVerifier

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the service. With no argument, settings come from the environment (uvicorn --factory)."""
    settings = settings or load_settings()
    if settings.database is None:
        raise RuntimeError("create_app needs a database; `sync-service serve` starts an embedded one")
    database = settings.database
    # Built here, not in the lifespan: a secret it refuses fails `create_app`, before the server starts.
    signatures = SignatureVerifier(settings.webhook_secrets)
    token_verifier = build_token_verifier(settings)

    @contextlib.asynccontextmanager
    async def services_lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services(settings, database, signatures) as services:
            app.state.services = services
            yield

    @contextlib.asynccontextmanager
    async def auth_lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await token_verifier.aclose()  # its JWKS HTTP client, opened on the first token

    webhook_router = Router(
        path="/webhooks",
        route_handlers=[webhooks.receive_better_auth_webhook],
        request_max_body_size=settings.webhook_max_body_bytes,
        tags=["webhooks"],
    )
    health_router = Router(path="/health", route_handlers=[health.live, health.ready], tags=["health"])
    users_router = Router(
        path="/users",
        route_handlers=[users.me, users.by_id],
        middleware=[DefineMiddleware(BearerAuthMiddleware, verifier=token_verifier)],
        security=[{"BearerToken": []}],
        tags=["users"],
    )

    app = Litestar(
        route_handlers=[webhook_router, health_router, users_router, metrics_route.metrics_endpoint],
        lifespan=[services_lifespan, auth_lifespan, _long_lived_objects_frozen],
        exception_handlers=dict(exception_handlers(settings)),
        cors_config=_cors(settings),
        openapi_config=OpenAPIConfig(
            title="sync-service",
            version=__version__,
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        bearer_format="JWT",
                        description="A Better Auth JWT (jwt plugin), in the Authorization header only.",
                    )
                }
            ),
        ),
        request_max_body_size=settings.webhook_max_body_bytes,
        # Our handler on the root logger (logs.configure_logging) formats every line; Litestar's default
        # config would install its own plain-text one.
        logging_config=None,
    )
    app.asgi_handler = RequestLog(app.asgi_handler)
    return app


def create_app_from_environment() -> Litestar:
    """The app of one worker process under `serve --workers N`: settings and logging from the environment
    (a worker is a fresh interpreter, so the parent's logging setup does not reach it)."""
    from sync_service.ops.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


@contextlib.asynccontextmanager
async def _long_lived_objects_frozen(_: Litestar) -> AsyncIterator[None]:
    """Once started, move every object allocated so far (modules, the app, the pool: they live as long as
    the process) out of the garbage collector's view. Full collections then only walk what requests
    allocate; before, each walked ~100,000 startup objects and stalled every request for up to 75 ms."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _cors(settings: Settings) -> CORSConfig | None:
    if not settings.cors_allow_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_allow_origins),
        allow_methods=["GET", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        allow_credentials=True,
        max_age=600,
    )
