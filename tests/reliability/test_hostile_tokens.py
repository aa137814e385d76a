"""Hostile bearer tokens against GET /users/me: property-based over the Authorization header.

Promise (DESIGN): a missing, malformed, expired or wrongly signed token is 401 with
`WWW-Authenticate: Bearer ...`, never a 5xx, never someone's data.

NOTE: GET /users/me comes with the auth branch. Until it is merged these tests FAIL (the route is a
404); that is expected and deliberate: they assert 401/200, never "not 5xx" alone. The genuine-token
tests prove the harness (JWKS, issuer, audience) is right, so the 401s cannot pass vacuously.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, note
from hypothesis import strategies as st

from tests.helpers.forged_tokens import b64url, compact, hs256_token
from tests.helpers.jwks import DROP, Issuer, SigningKey
from tests.helpers.support import encode, make_settings, signed_headers, start_service
from tests.reliability.conftest import fuzz_settings
from tests.reliability.hostile import valid_payload
from tests.reliability.log_capture import collector


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with Issuer() as running:
        yield running


@pytest.fixture(scope="module")
def api(migrated_database_url: str, issuer: Issuer) -> Iterator[tuple[httpx.Client, str]]:
    """The service trusting `issuer`, a client, and the id of a user that is synced."""
    settings = make_settings(migrated_database_url, BETTER_AUTH_URL=issuer.origin)
    with start_service(settings) as service, httpx.Client(base_url=service.base_url, timeout=30) as client:
        payload = valid_payload()
        body = encode(payload)
        response = client.post("/webhooks/better-auth", content=body, headers=signed_headers(body))
        assert response.status_code == 200, response.text
        yield client, payload["data"]["id"]


def get_me(client: httpx.Client, authorization: str | bytes | None) -> httpx.Response:
    headers: dict[str, Any] = {} if authorization is None else {"authorization": authorization}
    if isinstance(authorization, str) and authorization.count(".") >= 2 and len(authorization) > 20:
        collector.mark_sensitive(authorization.removeprefix("Bearer ").strip())
    return client.get("/users/me", headers=headers)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, f"{response.status_code}: {response.text[:200]}"
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), response.headers


# --- the harness itself must work, or every 401 below means nothing -------------------------------


def test_genuine_token_reads_the_synced_user(api: tuple[httpx.Client, str], issuer: Issuer) -> None:
    client, user_id = api
    response = get_me(client, f"Bearer {issuer.token(user_id)}")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == user_id


def test_genuine_token_of_an_unsynced_user_is_404(api: tuple[httpx.Client, str], issuer: Issuer) -> None:
    client, user_id = api
    assert get_me(client, f"Bearer {issuer.token(user_id)}").status_code == 200, "the route must exist first"
    response = get_me(client, f"Bearer {issuer.token('00000000-0000-4000-8000-000000000000')}")
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer null", "Basic dXNlcjpwYXNz"])
def test_missing_or_empty_authorization_is_401(
    api: tuple[httpx.Client, str], authorization: str | None
) -> None:
    client, _ = api
    assert_refused(get_me(client, authorization))


# --- hostile tokens --------------------------------------------------------------------------------


@st.composite
def hostile_tokens(draw: st.DrawFn, issuer: Issuer, user_id: str) -> str:
    """A token that must be refused, for the synced user unless the attack is on `sub` itself."""
    now = int(time.time())
    attack = draw(
        st.sampled_from(
            ["expired", "not-yet-valid", "wrong-iss", "wrong-aud", "no-exp", "exp-text", "no-sub",
             "sub-types", "alg-none", "hs256-public-key", "other-ed25519-key", "unknown-kid", "no-kid",
             "rs256-own-key", "es256-own-key", "tampered-claims", "truncated", "garbage-segments",
             "iat-future-exp-past"]
        )
    )  # fmt: skip
    note(f"attack={attack}")
    if attack == "expired":
        return issuer.token(user_id, exp=now - draw(st.integers(120, 10**9)), iat=now - 10**6)
    if attack == "not-yet-valid":
        return issuer.token(user_id, nbf=now + draw(st.integers(600, 10**8)))
    if attack == "wrong-iss":
        return issuer.token(
            user_id, iss=draw(st.sampled_from(["https://evil.example", "", issuer.origin + "/"]))
        )
    if attack == "wrong-aud":
        aud = draw(st.sampled_from(["https://evil.example", "", ["https://evil.example"], 42]))
        return issuer.token(user_id, aud=aud)
    if attack == "no-exp":
        return issuer.token(user_id, exp=DROP)
    if attack == "exp-text":
        return issuer.token(user_id, exp=draw(st.sampled_from(["tomorrow", "", "9" * 400, None, [1]])))
    if attack == "no-sub":
        return issuer.token(user_id, sub=DROP)
    if attack == "sub-types":
        claims = issuer.claims(
            user_id, sub=draw(st.sampled_from([0, None, [user_id], {"id": user_id}, True]))
        )
        return compact({"alg": "EdDSA", "kid": issuer.key.kid}, claims, b"x" * 64)
    if attack == "alg-none":
        alg = draw(st.sampled_from(["none", "None", "NONE", "nOnE"]))
        return compact({"alg": alg, "kid": issuer.key.kid, "typ": "JWT"}, issuer.claims(user_id))
    if attack == "hs256-public-key":
        public = issuer.key.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        jwk = json.dumps(issuer.key.jwk()).encode()
        secret = draw(st.sampled_from([public, b64url(public).encode(), jwk]))
        # By hand: PyJWT (rightly) refuses to use something that looks like a public key as an HMAC secret.
        header = {"alg": "HS256", "kid": issuer.key.kid, "typ": "JWT"}
        return hs256_token(header, issuer.claims(user_id), secret)
    if attack == "other-ed25519-key":
        return SigningKey.generate("EdDSA", kid=issuer.key.kid).sign(issuer.claims(user_id))
    if attack == "unknown-kid":
        kid = draw(st.text(min_size=1, max_size=50) | st.sampled_from(["../../x", "0" * 5000]))
        return issuer.key.sign(issuer.claims(user_id), header={"kid": kid})
    if attack == "no-kid":
        return SigningKey.generate("EdDSA").sign(issuer.claims(user_id), header={"kid": DROP})
    if attack == "rs256-own-key":
        return SigningKey.generate("RS256", kid=issuer.key.kid).sign(issuer.claims(user_id))
    if attack == "es256-own-key":
        return SigningKey.generate("ES256", kid=issuer.key.kid).sign(issuer.claims(user_id))
    if attack == "tampered-claims":
        header, _, genuine_signature = issuer.token(user_id).split(".")
        other = b64url(json.dumps(issuer.claims(draw(st.sampled_from(["admin", user_id + "x"])))).encode())
        return f"{header}.{other}.{genuine_signature}"
    if attack == "truncated":
        token = issuer.token(user_id)
        return token[: draw(st.integers(0, len(token) - 1))]
    if attack == "garbage-segments":
        segment = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200)
        return ".".join(draw(st.lists(segment, min_size=1, max_size=5)))
    # iat in the future with exp in the past: some validators check only one of them
    return issuer.token(user_id, iat=now + 3600, exp=now - 3600)


@st.composite
def hostile_authorization(draw: st.DrawFn, issuer: Issuer, user_id: str) -> str | bytes | None:
    shape = draw(st.sampled_from(["bearer", "bearer", "bearer", "scheme", "raw", "bytes", "missing"]))
    if shape == "missing":
        return None
    if shape == "raw":
        return draw(
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(str.strip)
        )
    if shape == "bytes":
        return draw(st.binary(min_size=1, max_size=100).filter(lambda b: not set(b) & {0, 10, 13}))
    token = draw(hostile_tokens(issuer, user_id))
    if shape == "scheme":
        genuine = issuer.token(user_id)
        scheme = draw(
            st.sampled_from(["Basic ", "Token ", "Bearer", "Bearer:", "Bearer  x ", "JWT ", "Bearer\t"])
        )
        return scheme + draw(st.sampled_from([genuine[:-3] + "abc", token, ""])).strip()
    return draw(st.sampled_from(["Bearer ", "bearer ", "BEARER "])) + token


@fuzz_settings(ci_examples=120)
@given(data=st.data())
def test_hostile_authorization_is_refused(api: tuple[httpx.Client, str], issuer: Issuer, data: Any) -> None:
    """FAILS until the auth branch (GET /users/me) is merged: the route is a 404 before that."""
    client, user_id = api
    authorization = data.draw(hostile_authorization(issuer, user_id))
    try:
        response = get_me(client, authorization)
    except httpx.LocalProtocolError:
        return  # not sendable as a header (h11 refuses it); nothing reached the service
    assert response.status_code < 500, response.text
    if response.status_code == 400 and _has_control_characters(authorization):
        return  # not a valid HTTP header value: the HTTP layer refuses it before the app sees it
    assert_refused(response)
    assert user_id not in response.text


def _has_control_characters(value: str | bytes) -> bool:
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    return any((b < 0x20 and b != 0x09) or b == 0x7F for b in raw)


def test_unknown_kid_storm_does_not_hammer_the_jwks(api: tuple[httpx.Client, str], issuer: Issuer) -> None:
    """DESIGN: the JWKS is refetched on an unknown kid, rate-limited. 50 tokens with fresh unknown kids
    must not cause 50 fetches (a DoS amplifier against Better Auth)."""
    client, user_id = api
    before = issuer.server.requests
    for index in range(50):
        unknown = issuer.key.sign(issuer.claims(user_id), header={"kid": f"unknown-{index}"})
        assert_refused(get_me(client, f"Bearer {unknown}"))
    assert issuer.server.requests - before <= 5, issuer.server.requests - before
