"""Micro-benchmark: what a bearer token costs the read API, full verification vs the token cache.

A real Ed25519 key and a token shaped like Better Auth's (header {alg, kid}, payload = the whole user plus
sub/iss/aud/iat/exp), verified by `sync_service.users.tokens.TokenVerifier` as a request is. No network:
the key set is parsed from a JWKS document in memory (the fetch path is covered by the tests).

    .venv/bin/python scripts/bench_token_verify.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from sync_service.users.jwks import RemoteKeySet, parse_jwks
from sync_service.users.tokens import TokenVerifier

ISSUER = "http://localhost:3000"
KID = "4uPjBvJtyH0bPzCHGV3kBoo63efM5HfC"


def better_auth_token(private_key: ed25519.Ed25519PrivateKey) -> str:
    now = int(time.time())
    payload = {
        "iat": now,
        "id": "0xxv8QKC97HnA56L250Fvrl9sW6jXwNx",
        "name": "Alice",
        "email": "alice@example.com",
        "emailVerified": False,
        "image": None,
        "createdAt": "2026-11-27T11:58:53.300Z",
        "updatedAt": "2026-11-27T11:58:53.300Z",
        "sub": "0xxv8QKC97HnA56L250Fvrl9sW6jXwNx",
        "exp": now + 900,
        "iss": ISSUER,
        "aud": ISSUER,
    }
    return jwt.encode(payload, private_key, algorithm="EdDSA", headers={"kid": KID, "typ": None})


def verifier_with_keys(private_key: ed25519.Ed25519PrivateKey, cache_size: int) -> TokenVerifier:
    jwk = {**OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True), "kid": KID, "alg": "EdDSA"}
    keys = RemoteKeySet(ISSUER + "/api/auth/jwks", algorithms=["EdDSA"], cooldown=10, max_age=3600)
    # Primed as a successful fetch would leave it, so no request ever leaves the process.
    keys._keys = parse_jwks(json.dumps({"keys": [jwk]}).encode(), frozenset({"EdDSA"}))
    keys._fetched_at = time.monotonic()
    return TokenVerifier(
        keys, issuer=ISSUER, audience=ISSUER, algorithms=["EdDSA"], leeway=30, cache_size=cache_size
    )


async def measure(name: str, operation: Callable[[], Awaitable[object]], seconds: float) -> float:
    """Best of 10 rounds (other processes on a shared machine only ever make a round slower), and the
    median round, per operation."""
    for _ in range(200):  # warm-up
        await operation()
    rounds = []
    for _ in range(10):
        count, started = 0, time.perf_counter()
        deadline = started + seconds / 10
        while time.perf_counter() < deadline:
            for _ in range(50):
                await operation()
            count += 50
        rounds.append((time.perf_counter() - started) / count)
    best, median = min(rounds), statistics.median(rounds)
    print(f"{name:<36} best {best * 1e6:9.2f} us  median {median * 1e6:9.2f} us  ({1 / best:12,.0f}/s)")
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    private_key = ed25519.Ed25519PrivateKey.generate()
    token = better_auth_token(private_key)
    public_key = private_key.public_key()
    uncached = verifier_with_keys(private_key, cache_size=0)
    cached = verifier_with_keys(private_key, cache_size=10_000)

    async def pyjwt_alone() -> object:
        return jwt.decode(token, public_key, algorithms=["EdDSA"], issuer=ISSUER, audience=ISSUER, leeway=30)

    print(f"token: EdDSA/Ed25519, {len(token)} characters; cores: {os.cpu_count()}; PyJWT {jwt.__version__}")
    raw = await measure("PyJWT jwt.decode alone", pyjwt_alone, args.seconds)
    full = await measure("TokenVerifier, full verification", lambda: uncached.verify(token), args.seconds)
    hit = await measure("TokenVerifier, cache hit", lambda: cached.verify(token), args.seconds)
    assert uncached.cache_hits == 0
    assert cached.full_verifications == 1
    print(f"cache hit: {full / hit:,.0f}x cheaper than full verification, {raw / hit:,.0f}x than PyJWT alone")


if __name__ == "__main__":
    asyncio.run(main())
