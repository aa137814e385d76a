"""Exceptions to HTTP answers, in one place. No client input may produce a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from sync_service.config import Settings
from sync_service.database import is_unavailable
from sync_service.errors import ClientError, InvalidSignature, ServiceUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[Request[Any, Any, Any], Any], Response[Any]]


def exception_handlers(settings: Settings) -> MutableMapping[int | type[Exception], Handler]:
    retry_after = {"Retry-After": str(settings.retry_after_seconds)}

    def client_error(_: Request[Any, Any, Any], exc: ClientError) -> Response[Any]:
        detail = "invalid webhook signature" if isinstance(exc, InvalidSignature) else str(exc)
        return Response({"status_code": exc.status_code, "detail": detail}, status_code=exc.status_code)

    def unavailable(_: Request[Any, Any, Any], exc: ServiceUnavailable) -> Response[Any]:
        log.warning("answered 503", extra={"reason": str(exc)})
        return _unavailable_response(retry_after)

    def unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        if isinstance(exc, HTTPException):
            # Litestar's own 4xx (404, 405, 413, validation): keep its status and detail.
            headers = dict(exc.headers or {})
            body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
            if exc.extra:
                body["extra"] = exc.extra
            return Response(body, status_code=exc.status_code, headers=headers)
        if is_unavailable(exc):
            log.warning("database unavailable", extra={"error": exc.__class__.__name__})
            return _unavailable_response(retry_after)
        # The route template, not the path: a path segment is the client's text (a /users/{id} guess).
        log.exception("unhandled error", extra={"route": request.scope.get("path_template", "(unmatched)")})
        return Response({"status_code": 500, "detail": "internal server error"}, status_code=500)

    return {ClientError: client_error, ServiceUnavailable: unavailable, Exception: unexpected}


def _unavailable_response(headers: dict[str, str]) -> Response[Any]:
    return Response(
        {"status_code": 503, "detail": "service temporarily unavailable; retry later"},
        status_code=503,
        headers=headers,
    )
