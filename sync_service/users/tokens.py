"""Better Auth JWT verification: signature against the JWKS, algorithm fitted to the key, claims checked.

A verified token is remembered (keyed by its exact text, until its `exp` at the latest) so that the
frontend's repeated requests with one token pay for the signature check once. A token seen for the
first time always gets the full verification.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import msgspec

from sync_service.config import Settings
from sync_service.errors import InvalidToken
from sync_service.users.jwks import RemoteKeySet

log = logging.getLogger(__name__)

# Better Auth's tokens carry the whole user object and are well under 2 KiB; anything this long is not
# one of them, and is refused before any parsing.
MAX_TOKEN_CHARS = 8 * 1024
MAX_HEADER_CHARS = 1024  # Better Auth's {"alg","kid"} header is under 100 characters
DEFAULT_CACHE_SIZE = 10_000
MAX_SUBJECT_CHARS = 255

# header.payload.signature in base64url; an empty signature (alg "none") is refused here already.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_NUMERIC_CLAIMS = ("exp", "iat", "nbf")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    expires_at: float
    key_id: str | None
    claims: Mapping[str, Any]


class TokenVerifier:
    """Verifies bearer tokens against a remote key set; one per app, closed by its lifespan."""

    def __init__(
        self,
        keys: RemoteKeySet | None,
        *,
        issuer: str | None,
        audience: str | None,
        algorithms: Iterable[str],
        leeway: float,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self._issuer = issuer
        self._audience = audience
        self._algorithms = frozenset(algorithms)
        self._leeway = leeway
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size
        self._clock = clock
        self._decoder = jwt.PyJWT(
            options={
                "require": ["exp", "sub", "iss", "aud"],
                "verify_signature": True,
                "enforce_minimum_key_length": True,
            }
        )
        self.cache_hits = 0
        self.full_verifications = 0

    @property
    def configured(self) -> bool:
        return self.keys is not None and self._issuer is not None and self._audience is not None

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; `InvalidToken` for anything else."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("too long")
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at > self._clock():
                self._cache.move_to_end(token)
                self.cache_hits += 1
                return cached
            del self._cache[token]
        self.full_verifications += 1
        principal = await self._verify_fully(token)
        if principal.expires_at > self._clock():
            self._remember(token, principal)
        return principal

    def forget_keys(self, kids: frozenset[str | None]) -> None:
        """Drop remembered tokens signed by keys the JWKS no longer lists (a revoked key stops working)."""
        for token in [t for t, p in self._cache.items() if p.key_id in kids]:
            del self._cache[token]

    async def aclose(self) -> None:
        if self.keys is not None:
            await self.keys.aclose()

    async def _verify_fully(self, token: str) -> Principal:
        if self.keys is None or self._issuer is None or self._audience is None:
            raise InvalidToken("no JWKS configured")
        if not _TOKEN_SHAPE.fullmatch(token):
            raise InvalidToken("malformed")
        header = _unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidToken("algorithm not allowed")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed kid")
        key = await self.keys.find(kid, alg)
        if key is None:
            raise InvalidToken("no key for kid and algorithm")
        try:
            claims = self._decoder.decode(
                token,
                key.public_key,
                # Only the algorithm the key's type fits: never "none", never HMAC keyed by a public key.
                algorithms=[alg],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
            )
        except Exception as exc:  # every failure is the token's, answered 401
            raise InvalidToken(exc.__class__.__name__) from None
        return _principal(claims, kid)

    def _remember(self, token: str, principal: Principal) -> None:
        self._cache[token] = principal
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def build_token_verifier(settings: Settings) -> TokenVerifier:
    """The app's verifier. Without a JWKS URL every token is refused (the read API is then unusable)."""
    verifier = TokenVerifier(
        None,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        algorithms=settings.jwt_algorithms,
        leeway=settings.jwt_leeway_seconds,
    )
    if settings.jwt_jwks_url is not None:
        verifier.keys = RemoteKeySet(
            settings.jwt_jwks_url,
            algorithms=settings.jwt_algorithms,
            cooldown=settings.jwt_jwks_cooldown_seconds,
            max_age=settings.jwt_jwks_max_age_seconds,
            on_removed=verifier.forget_keys,
        )
    if not verifier.configured:
        log.warning("no BETTER_AUTH_URL or JWT_JWKS_URL: GET /users/* will refuse every token")
    return verifier


def _unverified_header(token: str) -> dict[str, Any]:
    """The protected header, only to choose the key; PyJWT parses and checks it again when verifying.

    Parsed here rather than with `jwt.get_unverified_header`, which would decode the whole token a second
    time (PyJWT 2.15 checks every character of every segment in Python: about a third of its cost).
    """
    segment = token.partition(".")[0]
    if len(segment) > MAX_HEADER_CHARS:
        raise InvalidToken("header too long")
    try:
        header = msgspec.json.decode(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, msgspec.DecodeError, RecursionError):  # binascii.Error is a ValueError
        raise InvalidToken("malformed header") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed header")
    return header


def _principal(claims: Mapping[str, Any], kid: str | None) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_CHARS:
        raise InvalidToken("bad sub")
    # PyJWT takes int() of these, which a string such as "9999999999" would pass; JWT says NumericDate.
    for name in _NUMERIC_CLAIMS:
        if name in claims and not _is_numeric_date(claims[name]):
            raise InvalidToken(f"bad {name}")
    return Principal(subject=subject, expires_at=float(claims["exp"]), key_id=kid, claims=claims)


def _is_numeric_date(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
