"""Bearer authentication for the read API: `Authorization: Bearer <jwt>` or a 401 with a challenge.

A middleware rather than a dependency: it runs before any dependency is resolved, so a request without a
valid token never takes a database connection. The token is read from the Authorization header only,
never from the query string or a cookie.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from sync_service.errors import InvalidToken
from sync_service.users.tokens import TokenVerifier

log = logging.getLogger(__name__)

REALM = "sync-service"
_CHALLENGE = f'Bearer realm="{REALM}"'
_INVALID_TOKEN_CHALLENGE = f'{_CHALLENGE}, error="invalid_token"'

Connection = ASGIConnection[Any, Any, Any, Any]


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Puts the token's `Principal` in `request.user`; answers 401 otherwise."""

    __slots__ = ("verifier",)

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.verifier = verifier

    async def authenticate_request(self, connection: Connection) -> AuthenticationResult:
        token = bearer_token(connection.scope["headers"])
        if token is None:
            raise NotAuthorizedException(
                detail="authentication required", headers={"WWW-Authenticate": _CHALLENGE}
            )
        try:
            principal = await self.verifier.verify(token)
        except InvalidToken as exc:
            log.debug("bearer token refused", extra={"reason": exc.reason})
            raise NotAuthorizedException(
                detail="invalid or expired token", headers={"WWW-Authenticate": _INVALID_TOKEN_CHALLENGE}
            ) from None
        # `auth` stays empty: the raw token has no use downstream and must not end up in logs or errors.
        return AuthenticationResult(user=principal, auth=None)


def bearer_token(headers: list[tuple[bytes, bytes]] | Any) -> str | None:
    """The token of the request's one `Authorization: Bearer` header.

    None when no bearer credentials were presented (no header, or another scheme such as Basic); "" for
    several Authorization headers. A malformed token (empty, spaced, not base64url) is returned as sent:
    the verifier refuses it as an invalid token.
    """
    values = [value for name, value in headers if name == b"authorization"]
    if not values:
        return None
    if len(values) > 1:
        return ""
    scheme, _, rest = values[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return rest.strip()
