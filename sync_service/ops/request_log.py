"""One log line and one metrics observation per HTTP request.

It wraps Litestar's whole ASGI handler (not a route middleware) so that requests no route matched (404,
405) are counted too. Only the method, the route template, the status and the latency are recorded:
never the raw path (ids), the query string or headers (a token put in the wrong place must not land in
the logs).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from sync_service.ops import metrics
from sync_service.ops.logs import ACCESS_LOGGER

log = logging.getLogger(ACCESS_LOGGER)

# Probes and scrapes arrive every few seconds; a successful one is only worth a DEBUG line.
_QUIET_ROUTES = frozenset({"/health/live", "/health/ready", "/metrics"})
_UNMATCHED = "<unmatched>"
_NO_RESPONSE = 499  # nginx's "client closed request": nothing was sent
# Any token is a valid method on the wire; labels must stay a small fixed set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = _NO_RESPONSE

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_and_record)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    @staticmethod
    def _record(scope: HTTPScope, status: int, seconds: float) -> None:
        # Litestar writes the matched route's template into the scope during routing.
        route: str = scope.get("path_template") or _UNMATCHED
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        requests, latency = _series(method, route, status)
        requests.inc()
        latency.observe(seconds)
        level = logging.DEBUG if route in _QUIET_ROUTES and status < 400 else logging.INFO
        if log.isEnabledFor(level):
            extra: dict[str, Any] = {
                "method": method,
                "route": route,
                "status": status,
                "latency_ms": round(seconds * 1000, 2),
            }
            log.log(level, "request", extra=extra)


# `labels()` costs more than the update itself (it builds and locks a key every time); the label sets are
# small and fixed (methods, route templates, the statuses the app answers), so the children are kept.
@functools.lru_cache(maxsize=1024)
def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    return (
        metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)),
        metrics.HTTP_LATENCY.labels(method=method, route=route),
    )
