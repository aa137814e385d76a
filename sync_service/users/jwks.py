"""Better Auth's signing keys: the JWKS fetched over HTTP, parsed into keys with the algorithms they fit.

The key set is fetched lazily (the service starts and is ready while Better Auth is down), refetched when
a token names an unknown `kid`, and refreshed in the background once it is older than its maximum age.
Fetches are single-flight and at most one per cooldown, so a flood of tokens with random `kid`s costs
Better Auth one request per cooldown at most. A failed fetch keeps the last good key set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from sync_service.config import redact_url
from sync_service.errors import JwksError
from sync_service.ops.metrics import JWKS_REFRESHES

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 64
MIN_RSA_BITS = 2048

_EC_CURVES = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# Members that only a private (or symmetric) key has. A key set should never carry them; if one does, we
# still build the public key only, so nothing secret is ever used to verify.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key and the algorithms a token signed with it may name (fixed by the key's type)."""

    kid: str | None
    public_key: Any
    algorithms: frozenset[str]


class KeySet:
    """An immutable snapshot of usable keys, looked up by `kid` and algorithm."""

    __slots__ = ("_all", "_by_kid", "kids")

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self._all = tuple(keys)
        by_kid: dict[str | None, list[VerificationKey]] = {}
        for key in self._all:
            by_kid.setdefault(key.kid, []).append(key)
        self._by_kid = {kid: tuple(found) for kid, found in by_kid.items()}
        self.kids: frozenset[str | None] = frozenset(self._by_kid)

    def __len__(self) -> int:
        return len(self._all)

    def knows(self, kid: str | None) -> bool:
        return kid in self._by_kid

    def select(self, kid: str | None, alg: str) -> VerificationKey | None:
        """The key for `kid` that fits `alg`. A token without `kid` (Better Auth always sends one) is
        matched only when exactly one key fits its algorithm, as jose's remote key sets do."""
        if kid is None:
            fitting = [key for key in self._all if alg in key.algorithms]
            return fitting[0] if len(fitting) == 1 else None
        for key in self._by_kid.get(kid, ()):
            if alg in key.algorithms:
                return key
        return None


def parse_jwks(document: bytes, allowed: frozenset[str]) -> KeySet:
    """The usable keys of a JWKS document; `JwksError` when there are none."""
    try:
        decoded = msgspec.json.decode(document)
    except msgspec.DecodeError:
        raise JwksError("not JSON") from None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("keys"), list):
        raise JwksError("not a JWK set")
    keys = [key for jwk in decoded["keys"][:MAX_KEYS] if (key := parse_jwk(jwk, allowed)) is not None]
    if not keys:
        raise JwksError("no usable key")
    return KeySet(keys)


def parse_jwk(jwk: object, allowed: frozenset[str]) -> VerificationKey | None:
    """One JWK as a verification key, or None when it is not a signature key we may use."""
    if not isinstance(jwk, dict):
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    public = {name: value for name, value in jwk.items() if name not in _PRIVATE_MEMBERS}
    try:
        built = _public_key(public)
    except Exception:  # any malformed member makes the key unusable, not the service
        return None
    if built is None:
        return None
    key, fits = built
    declared = public.get("alg")
    if declared is not None:
        # A key bound to one algorithm verifies only that one (RFC 7517 4.4), e.g. no PS256 on an RS256 key.
        if declared not in fits:
            return None
        fits = frozenset({declared})
    fits &= allowed
    if not fits:
        return None
    return VerificationKey(kid=kid, public_key=key, algorithms=fits)


def _public_key(jwk: dict[str, Any]) -> tuple[Any, frozenset[str]] | None:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv in _OKP_CURVES:
        return OKPAlgorithm.from_jwk(jwk), frozenset({"EdDSA"})
    if kty == "EC" and isinstance(crv, str) and crv in _EC_CURVES:
        return ECAlgorithm.from_jwk(jwk), frozenset({_EC_CURVES[crv]})
    if kty == "RSA":
        key = RSAAlgorithm.from_jwk(jwk)
        if key.key_size < MIN_RSA_BITS:
            return None
        return key, _RSA_ALGORITHMS
    return None  # symmetric ("oct") keys and unknown types are never used


class RemoteKeySet:
    """The JWKS at `url`, kept fresh. One per app; `aclose()` in its lifespan."""

    def __init__(
        self,
        url: str,
        *,
        algorithms: Iterable[str],
        cooldown: float,
        max_age: float,
        timeout: float = 5.0,
        on_removed: Callable[[frozenset[str | None]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._allowed = frozenset(algorithms)
        self._cooldown = cooldown
        self._max_age = max_age
        self._timeout = timeout
        self._on_removed = on_removed
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        # Made on first use, inside the serving event loop (create_app may run in another thread).
        self._client: httpx.AsyncClient | None = None

    @property
    def keys(self) -> KeySet | None:
        return self._keys

    async def find(self, kid: str | None, alg: str) -> VerificationKey | None:
        """The key a token with this header must verify against, fetching the set when needed."""
        keys = self._keys
        if keys is not None:
            if self._clock() - self._fetched_at > self._max_age:
                self._start_fetch(count_refusal=False)
            # Known kid (or no kid at all): answer from this set. A known kid with an algorithm that does
            # not fit its key is refused here; refetching would not change that key's type.
            if kid is None or keys.knows(kid):
                return keys.select(kid, alg)
        task = self._start_fetch(count_refusal=True)
        if task is not None:
            # Shielded: a client that goes away must not cancel the fetch other requests wait for.
            await asyncio.shield(task)
        keys = self._keys
        return keys.select(kid, alg) if keys is not None else None

    async def refresh(self) -> None:
        """Fetch now unless a fetch is running or the cooldown forbids it (then wait for nothing)."""
        task = self._start_fetch(count_refusal=True)
        if task is not None:
            await asyncio.shield(task)

    async def aclose(self) -> None:
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _start_fetch(self, *, count_refusal: bool) -> asyncio.Task[None] | None:
        """The running fetch, a new one, or None when the cooldown since the last attempt has not passed."""
        if self._inflight is not None:
            return self._inflight
        now = self._clock()
        if self._last_attempt is not None and now - self._last_attempt < self._cooldown:
            if count_refusal:
                JWKS_REFRESHES.labels(result="rate_limited").inc()
            return None
        self._last_attempt = now
        task = asyncio.get_running_loop().create_task(self._fetch_and_store(), name="jwks-fetch")
        self._inflight = task
        task.add_done_callback(self._fetch_done)
        return task

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch_and_store(self) -> None:
        started = self._clock()
        try:
            async with asyncio.timeout(self._timeout * 2):
                keys = await self._fetch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed fetch keeps the last good set, whatever failed
            JWKS_REFRESHES.labels(result="error").inc()
            log.warning(
                "JWKS fetch failed; keeping the last good key set",
                extra={
                    "url": redact_url(self.url),
                    "error": exc.__class__.__name__,
                    "reason": str(exc) if isinstance(exc, JwksError) else None,
                    "cached_keys": len(self._keys) if self._keys is not None else 0,
                },
            )
            return
        JWKS_REFRESHES.labels(result="ok").inc()
        previous, self._keys, self._fetched_at = self._keys, keys, self._clock()
        removed = (previous.kids - keys.kids) if previous is not None else frozenset()
        log.info(
            "JWKS fetched",
            extra={
                "keys": len(keys),
                "removed": len(removed),
                "latency_ms": round((self._clock() - started) * 1000, 2),
            },
        )
        if removed and self._on_removed is not None:
            self._on_removed(removed)

    async def _fetch(self) -> KeySet:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 2.0)),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
                headers={"Accept": "application/json", "User-Agent": "sync-service"},
            )
        async with self._client.stream("GET", self.url) as response:
            if response.status_code != 200:
                raise JwksError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksError(f"larger than {MAX_JWKS_BYTES} bytes")
        return parse_jwks(bytes(body), self._allowed)
