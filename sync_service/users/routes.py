"""GET /users/me and GET /users/{user_id}: the token's own user, nobody else's.

`request.user` is the `Principal` that `BearerAuthMiddleware` put there (the router mounts it). The user
is read through the app's `UserReader` (concurrent reads share one query).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from litestar.response.base import ASGIResponse

from sync_service.config import is_storable_user_id
from sync_service.users.reader import User, UserReader
from sync_service.users.tokens import Principal

_NOT_FOUND = "user not found"

_RESPONSES_DOC = (
    "401 with `WWW-Authenticate: Bearer` for a missing, malformed, expired or wrongly signed token; "
    "404 when the user has not been synced yet."
)


class ErrorBody(msgspec.Struct):
    status_code: int
    detail: str


# Personal data: no browser or proxy copies.
_NO_STORE = CacheControlHeader(no_store=True)
_HEADERS = {_NO_STORE.HEADER_NAME: _NO_STORE.to_header()}
_encode = msgspec.json.Encoder().encode

_RESPONSES = {
    200: ResponseSpec(User, description="The user", generate_examples=False),
    401: ResponseSpec(
        data_container=ErrorBody,
        description='No valid bearer token. `WWW-Authenticate: Bearer realm="sync-service"`, with '
        '`error="invalid_token"` when a token was sent.',
        generate_examples=False,
    ),
    404: ResponseSpec(data_container=ErrorBody, description="User not found", generate_examples=False),
}


@get("/me", summary="The user the bearer token belongs to", description=_RESPONSES_DOC, responses=_RESPONSES)
async def me(request: Request[Principal, Any, Any]) -> ASGIResponse:
    return await _read(request, request.user.subject)


@get(
    "/{user_id:str}",
    summary="A user by id: only the token's own",
    description=_RESPONSES_DOC + " Any other id is 404 whether it exists or not (no existence oracle).",
    responses=_RESPONSES,
)
async def by_id(request: Request[Principal, Any, Any], user_id: FromPath[str]) -> ASGIResponse:
    if user_id != request.user.subject:
        raise NotFoundException(detail=_NOT_FOUND)
    return await _read(request, user_id)


async def _read(request: Request[Principal, Any, Any], user_id: str) -> ASGIResponse:
    # A `sub` the service could never have stored (NUL, a lone surrogate, any text outside Better Auth's
    # ids) names no user: 404 without a query, so nothing a token holder chooses reaches PostgreSQL.
    if not is_storable_user_id(user_id):
        raise NotFoundException(detail=_NOT_FOUND)
    return _found(await _reader(request).submit(user_id))


def _found(user: User | None) -> ASGIResponse:
    if user is None:
        raise NotFoundException(detail=_NOT_FOUND)
    # Encoded here into a ready ASGI response: Litestar's building of a response from a returned value
    # cost these routes about a third of their time in the framework.
    return ASGIResponse(body=_encode(user), media_type="application/json", headers=_HEADERS)


def _reader(request: Request[Principal, Any, Any]) -> UserReader:
    # Taken from the app state rather than injected: dependency resolution cost these routes more than
    # the database read itself.
    reader: UserReader = request.app.state.services.reader
    return reader
