"""Token verification against a real JWKS server on loopback, with real keys of every allowed type."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import OKPAlgorithm

from sync_service.config import load_settings
from sync_service.errors import InvalidToken
from sync_service.ops.metrics import REGISTRY
from sync_service.users.jwks import KeySet, parse_jwk, parse_jwks
from sync_service.users.tokens import TokenVerifier, build_token_verifier
from tests.helpers.forged_tokens import b64url, forged_tokens
from tests.helpers.jwks import JwksServer, SigningKey, better_auth_claims, running
from tests.helpers.support import user_data

ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
ALL = frozenset(ALGORITHMS) | {"ES384", "RS384", "RS512", "PS384", "PS512"}


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {alg: SigningKey.generate(alg) for alg in ALGORITHMS}


@pytest.fixture
def jwks(keys: dict[str, SigningKey]) -> Iterator[JwksServer]:
    server = JwksServer()
    server.serve(*keys.values())
    with running(server):
        yield server


def verifier_for(server: JwksServer, **env: str) -> TokenVerifier:
    base = {"BETTER_AUTH_URL": server.base_url, "JWT_JWKS_COOLDOWN_SECONDS": "0.05"}
    base.update(env)
    return build_token_verifier(load_settings(environ=base, env_file=None))


@pytest.fixture
async def verifier(jwks: JwksServer) -> AsyncIterator[TokenVerifier]:
    verifier = verifier_for(jwks)
    try:
        yield verifier
    finally:
        await verifier.aclose()


def claims(server: JwksServer, **overrides: Any) -> dict[str, Any]:
    return better_auth_claims(user_data(), issuer=server.base_url, **overrides)


def refreshes(result: str) -> float:
    return REGISTRY.get_sample_value("sync_jwks_refreshes_total", {"result": result}) or 0.0


# --- accepted -------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_valid_token_of_each_algorithm(
    alg: str, keys: dict[str, SigningKey], jwks: JwksServer, verifier: TokenVerifier
) -> None:
    payload = claims(jwks)
    principal = await verifier.verify(keys[alg].sign(payload))
    assert principal.subject == payload["sub"]
    assert principal.key_id == keys[alg].kid
    assert principal.expires_at == payload["exp"]


async def test_settings_derive_jwks_url_issuer_and_audience(jwks: JwksServer) -> None:
    settings = load_settings(environ={"BETTER_AUTH_URL": jwks.base_url + "/some/base/"}, env_file=None)
    assert settings.jwt_jwks_url == jwks.base_url + "/some/base/api/auth/jwks"
    assert settings.jwt_issuer == settings.jwt_audience == jwks.base_url
    only_jwks = load_settings(environ={"JWT_JWKS_URL": jwks.jwks_url}, env_file=None)
    assert only_jwks.jwt_issuer == only_jwks.jwt_audience == jwks.base_url  # never unchecked


async def test_leeway_is_honoured(
    keys: dict[str, SigningKey], jwks: JwksServer, verifier: TokenVerifier
) -> None:
    now = int(time.time())
    key = keys["EdDSA"]
    await verifier.verify(key.sign(claims(jwks, iat=now - 910, exp=now - 10)))  # 10 s late, leeway 30
    await verifier.verify(key.sign(claims(jwks, nbf=now + 10)))
    with pytest.raises(InvalidToken):
        await verifier.verify(key.sign(claims(jwks, iat=now - 960, exp=now - 60)))
    with pytest.raises(InvalidToken):
        await verifier.verify(key.sign(claims(jwks, nbf=now + 600)))


# --- refused --------------------------------------------------------------------------------------


async def test_every_forgery_is_refused(
    keys: dict[str, SigningKey], jwks: JwksServer, verifier: TokenVerifier
) -> None:
    accepted = []
    for name, token in forged_tokens(keys, issuer=jwks.base_url, user=user_data()).items():
        try:
            await verifier.verify(token)
        except InvalidToken:
            continue
        accepted.append(name)
    assert accepted == []
    # and the real token still passes after all that
    assert (await verifier.verify(keys["EdDSA"].sign(claims(jwks)))).subject


async def test_algorithm_allow_list_from_settings(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks, JWT_ALGORITHMS="EdDSA")
    try:
        await verifier.verify(keys["EdDSA"].sign(claims(jwks)))
        with pytest.raises(InvalidToken):
            await verifier.verify(keys["ES256"].sign(claims(jwks)))
    finally:
        await verifier.aclose()


async def test_no_jwks_configured_refuses_everything(keys: dict[str, SigningKey]) -> None:
    verifier = build_token_verifier(load_settings(environ={}, env_file=None))
    with pytest.raises(InvalidToken):
        await verifier.verify(keys["EdDSA"].sign({"sub": "x", "exp": time.time() + 60}))
    await verifier.aclose()


# --- key parsing: the algorithm must fit the key's type -----------------------------------------------


def test_key_types_fix_their_algorithms(keys: dict[str, SigningKey]) -> None:
    fits = {alg: parse_jwk(keys[alg].jwk(with_alg=False), ALL) for alg in ALGORITHMS}
    assert fits["EdDSA"] is not None
    assert fits["EdDSA"].algorithms == {"EdDSA"}
    assert fits["ES256"] is not None
    assert fits["ES256"].algorithms == {"ES256"}
    assert fits["ES512"] is not None
    assert fits["ES512"].algorithms == {"ES512"}
    assert fits["RS256"] is not None
    assert fits["RS256"].algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    declared = parse_jwk(keys["RS256"].jwk(), ALL)
    assert declared is not None
    assert declared.algorithms == {"RS256"}
    # the allow-list narrows further; a declared alg outside what the key type fits disqualifies the key
    assert parse_jwk(keys["ES256"].jwk(), frozenset({"EdDSA"})) is None
    assert parse_jwk({**keys["EdDSA"].jwk(), "alg": "HS256"}, ALL) is None
    assert parse_jwk({**keys["ES256"].jwk(), "alg": "ES512"}, ALL) is None


def test_unusable_keys_are_skipped(keys: dict[str, SigningKey]) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    assert parse_jwk(SigningKey(alg="RS256", kid="weak", private_key=weak).jwk(), ALL) is None
    assert parse_jwk({"kty": "oct", "k": b64url(b"secret" * 8), "kid": "hmac"}, ALL) is None
    assert parse_jwk({**keys["EdDSA"].jwk(), "use": "enc"}, ALL) is None
    assert parse_jwk({**keys["EdDSA"].jwk(), "key_ops": ["sign"]}, ALL) is None
    assert parse_jwk({**keys["EdDSA"].jwk(), "x": "!!"}, ALL) is None
    assert (
        parse_jwk({"kty": "EC", "crv": "P-256", "x": b64url(b"\x01" * 32), "y": b64url(b"\x02" * 32)}, ALL)
        is None
    )
    assert parse_jwk("a string", ALL) is None
    assert parse_jwk({**keys["EdDSA"].jwk(), "kid": 5}, ALL) is None


def test_private_members_never_make_a_private_key(keys: dict[str, SigningKey]) -> None:
    ed = keys["EdDSA"]
    private_jwk = OKPAlgorithm.to_jwk(ed.private_key, as_dict=True)  # a JWKS that leaks `d`
    assert "d" in private_jwk
    parsed = parse_jwk({**private_jwk, "kid": ed.kid}, ALL)
    assert parsed is not None
    assert not hasattr(parsed.public_key, "sign")


def test_key_set_lookup() -> None:
    a = SigningKey.generate("EdDSA", kid="a")
    b = SigningKey.generate("ES256", kid="b")
    key_set = parse_jwks(json.dumps({"keys": [a.jwk(), b.jwk(), {"kty": "junk"}]}).encode(), ALL)
    assert isinstance(key_set, KeySet)
    assert len(key_set) == 2
    assert key_set.select("a", "EdDSA") is not None
    assert key_set.select("a", "ES256") is None
    assert key_set.select(None, "ES256") is not None  # one fitting key: a kid-less token may use it
    for document in (b"not json", b"[]", b'{"keys": {}}', b'{"keys": []}', b'{"keys": [{"kty": "oct"}]}'):
        with pytest.raises(Exception, match=r"not JSON|not a JWK set|no usable key"):
            parse_jwks(document, ALL)


# --- the token cache ---------------------------------------------------------------------------------


async def test_repeated_token_is_verified_once(
    keys: dict[str, SigningKey], jwks: JwksServer, verifier: TokenVerifier
) -> None:
    token = keys["EdDSA"].sign(claims(jwks))
    first = await verifier.verify(token)
    second = await verifier.verify(token)
    assert second is first
    assert (verifier.full_verifications, verifier.cache_hits) == (1, 1)
    # a different token (even for the same user) is verified in full
    other = keys["EdDSA"].sign({**claims(jwks), "sub": first.subject, "iat": int(time.time()) - 1})
    await verifier.verify(other)
    assert verifier.full_verifications == 2


async def test_cached_token_expires_with_the_token(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks)
    now = [time.time()]
    verifier._clock = lambda: now[0]
    try:
        payload = claims(jwks)
        token = keys["EdDSA"].sign(payload)
        await verifier.verify(token)
        now[0] = payload["exp"] - 0.001
        await verifier.verify(token)
        assert (verifier.full_verifications, verifier.cache_hits) == (1, 1)
        now[0] = payload["exp"]  # from exp on, the cache no longer vouches for the token
        await verifier.verify(token)  # (PyJWT, on the real clock, still finds it valid)
        assert (verifier.full_verifications, verifier.cache_hits) == (2, 1)
        assert token not in verifier._cache  # and it is not remembered past its exp either
    finally:
        await verifier.aclose()


async def test_cache_is_bounded_lru(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks)
    verifier._cache_size = 2
    try:
        tokens = [keys["EdDSA"].sign(claims(jwks)) for _ in range(3)]
        for token in tokens:
            await verifier.verify(token)
        assert len(verifier._cache) == 2
        await verifier.verify(tokens[2])
        assert verifier.cache_hits == 1
        await verifier.verify(tokens[0])  # evicted: verified again
        assert verifier.full_verifications == 4
    finally:
        await verifier.aclose()


async def test_removed_key_evicts_its_cached_tokens(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks)
    try:
        ed_token = keys["EdDSA"].sign(claims(jwks))
        es_token = keys["ES256"].sign(claims(jwks))
        await verifier.verify(ed_token)
        await verifier.verify(es_token)
        jwks.serve(*(k for alg, k in keys.items() if alg != "EdDSA"))
        await asyncio.sleep(0.06)
        assert verifier.keys is not None
        await verifier.keys.refresh()
        with pytest.raises(InvalidToken):
            await verifier.verify(ed_token)
        await verifier.verify(es_token)
        assert verifier.cache_hits == 1
    finally:
        await verifier.aclose()


# --- fetching the key set ----------------------------------------------------------------------------


async def test_keys_are_fetched_lazily_once(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks)
    try:
        await asyncio.sleep(0.1)
        assert jwks.requests == 0
        for alg in ALGORITHMS:
            await verifier.verify(keys[alg].sign(claims(jwks)))
        assert jwks.requests == 1
    finally:
        await verifier.aclose()


async def test_rotation_new_kid_accepted_after_refetch(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks)
    try:
        await verifier.verify(keys["EdDSA"].sign(claims(jwks)))
        rotated = SigningKey.generate("EdDSA")
        jwks.serve(*keys.values(), rotated)
        await asyncio.sleep(0.06)  # the cooldown since the first fetch
        ok_before = refreshes("ok")
        assert (await verifier.verify(rotated.sign(claims(jwks)))).key_id == rotated.kid
        assert refreshes("ok") == ok_before + 1
        assert jwks.requests == 2
    finally:
        await verifier.aclose()


async def test_flood_of_random_kids_fetches_once(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks, JWT_JWKS_COOLDOWN_SECONDS="60")
    jwks.delay = 0.2  # the first fetch is still running while the flood arrives: they all join it
    try:
        limited_before = refreshes("rate_limited")

        async def attempt(token: str) -> bool:
            try:
                await verifier.verify(token)
            except InvalidToken:
                return False
            return True

        forged = [SigningKey.generate("EdDSA").sign(claims(jwks)) for _ in range(10)]
        flood = [attempt(forged[i % 10]) for i in range(200)]
        results = await asyncio.gather(*flood, attempt(keys["EdDSA"].sign(claims(jwks))))
        assert results[:-1] == [False] * 200
        assert results[-1] is True  # the genuine token, in the same burst, got through on the one fetch
        assert jwks.requests == 1
        # after the fetch, every further unknown kid within the cooldown is refused without a fetch
        for token in forged:
            assert await attempt(token) is False
        assert jwks.requests == 1
        assert refreshes("rate_limited") >= limited_before + len(forged)
    finally:
        await verifier.aclose()


async def test_cooldown_allows_next_fetch(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks, JWT_JWKS_COOLDOWN_SECONDS="0.3")
    try:
        unknown = SigningKey.generate("EdDSA")
        for _ in range(3):
            with pytest.raises(InvalidToken):
                await verifier.verify(unknown.sign(claims(jwks)))
        assert jwks.requests == 1
        jwks.serve(*keys.values(), unknown)
        await asyncio.sleep(0.35)
        await verifier.verify(unknown.sign(claims(jwks)))
        assert jwks.requests == 2
    finally:
        await verifier.aclose()


async def test_failed_refetch_keeps_last_good_keys(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks)
    try:
        await verifier.verify(keys["EdDSA"].sign(claims(jwks)))
        errors_before = refreshes("error")
        for status, body in ((500, None), (200, b"<html>"), (200, b'{"keys": []}'), (200, b" " * 300_000)):
            jwks.status, jwks.body = status, body
            await asyncio.sleep(0.06)
            with pytest.raises(InvalidToken):
                await verifier.verify(SigningKey.generate("EdDSA").sign(claims(jwks)))  # forces a refetch
            await verifier.verify(keys["ES256"].sign(claims(jwks)))  # known kids still verify
        assert refreshes("error") == errors_before + 4
        jwks.stop()
        await asyncio.sleep(0.06)
        with pytest.raises(InvalidToken):
            await verifier.verify(SigningKey.generate("EdDSA").sign(claims(jwks)))
        await verifier.verify(keys["RS256"].sign(claims(jwks)))
        assert refreshes("error") == errors_before + 5
    finally:
        await verifier.aclose()


async def test_down_at_first_use_then_up(keys: dict[str, SigningKey]) -> None:
    server = JwksServer()
    server.serve(*keys.values())
    verifier = verifier_for(server, JWT_JWKS_COOLDOWN_SECONDS="0.2")
    try:
        token = keys["EdDSA"].sign(claims(server))
        with pytest.raises(InvalidToken):
            await verifier.verify(token)
        server.start()
        with pytest.raises(InvalidToken):
            await verifier.verify(token)  # within the cooldown: no new attempt
        assert server.requests == 0
        await asyncio.sleep(0.25)
        assert (await verifier.verify(token)).subject
        assert server.requests == 1
    finally:
        server.stop()
        await verifier.aclose()


async def test_old_key_set_is_refreshed_in_background(keys: dict[str, SigningKey], jwks: JwksServer) -> None:
    verifier = verifier_for(jwks, JWT_JWKS_COOLDOWN_SECONDS="0.01")
    assert verifier.keys is not None
    verifier.keys._max_age = 0.1
    try:
        await verifier.verify(keys["EdDSA"].sign(claims(jwks)))
        await asyncio.sleep(0.15)
        jwks.delay = 0.2
        started = time.perf_counter()
        await verifier.verify(keys["ES256"].sign(claims(jwks)))  # answered from the old set, not waiting
        assert time.perf_counter() - started < 0.15
        await asyncio.sleep(0.3)
        assert jwks.requests == 2
    finally:
        await verifier.aclose()


async def test_slow_jwks_is_abandoned_after_the_timeout(
    keys: dict[str, SigningKey], jwks: JwksServer
) -> None:
    verifier = verifier_for(jwks)
    assert verifier.keys is not None
    verifier.keys._timeout = 0.2
    jwks.delay = 1.0
    try:
        started = time.perf_counter()
        with pytest.raises(InvalidToken):
            await verifier.verify(keys["EdDSA"].sign(claims(jwks)))
        assert time.perf_counter() - started < 0.9
    finally:
        await verifier.aclose()
