"""Tokens no honest issuer would sign, built by hand or with a wrong key: the refusals the JWT tests
and the hostile suite share."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from cryptography.hazmat.primitives import serialization

from sync_service.users.tokens import MAX_TOKEN_CHARS
from tests.helpers.jwks import DROP, SigningKey, better_auth_claims


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: Any, payload: dict[str, Any], signature: bytes = b"") -> str:
    """A JWS built by hand, for tokens no honest library would produce."""
    return ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode()), b64url(signature)]
    )


def hs256_token(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """HS256 over header.payload with `secret` (the classic algorithm-confusion forgery)."""
    signing_input = ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode())])
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def forged_tokens(keys: dict[str, SigningKey], *, issuer: str, user: dict[str, Any]) -> dict[str, str]:
    """Tokens for `user` that must each be refused, by name; `keys` are the ones the JWKS serves."""
    ed = keys["EdDSA"]
    now = int(time.time())
    good = better_auth_claims(user, issuer=issuer)

    def claims(**overrides: Any) -> dict[str, Any]:
        return better_auth_claims(user, issuer=issuer, **overrides)

    header = {"alg": "EdDSA", "kid": ed.kid}
    public_pem = ed.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_raw = ed.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    stranger = SigningKey.generate("EdDSA", kid=ed.kid)
    return {
        "expired": ed.sign(claims(iat=now - 1000, exp=now - 100)),
        "not yet valid (nbf)": ed.sign(claims(nbf=now + 600)),
        "issued in the future (iat)": ed.sign(claims(iat=now + 600, exp=now + 1500)),
        "wrong iss": ed.sign(claims(iss="https://evil.example")),
        "wrong aud": ed.sign(claims(aud="https://other.example")),
        "aud list without ours": ed.sign(claims(aud=["https://other.example"])),
        "missing sub": ed.sign(claims(sub=DROP)),
        "empty sub": ed.sign(claims(sub="")),
        "numeric sub": ed.sign(claims(sub=12345)),
        "missing exp": ed.sign(claims(exp=DROP)),
        "exp as a string": ed.sign(claims(exp=str(now + 900))),
        "missing iss": ed.sign(claims(iss=DROP)),
        "missing aud": ed.sign(claims(aud=DROP)),
        "alg none": compact({"alg": "none", "kid": ed.kid}, good),
        "alg none with a signature": compact({"alg": "none", "kid": ed.kid}, good, b"x"),
        "alg NONE": compact({"alg": "NONE", "kid": ed.kid}, good, b"x"),
        "HS256 keyed by the public PEM": hs256_token({"alg": "HS256", "kid": ed.kid}, good, public_pem),
        "HS256 keyed by the raw public key": hs256_token({"alg": "HS256", "kid": ed.kid}, good, public_raw),
        "HS256 keyed by the JWK x": hs256_token(
            {"alg": "HS256", "kid": ed.kid}, good, ed.jwk()["x"].encode()
        ),
        "HS256 keyed by the JWK JSON": hs256_token(
            {"alg": "HS256", "kid": ed.kid}, good, json.dumps(ed.jwk()).encode()
        ),
        "known kid, another key's signature": stranger.sign(good),
        "EdDSA kid, ES256 signature": SigningKey.generate("ES256", kid=ed.kid).sign(good),
        "RS256 key, PS256 token": keys["RS256"].sign(good, alg="PS256"),
        "ES512 kid, ES256 alg": SigningKey.generate("ES256", kid=keys["ES512"].kid).sign(good),
        "unknown kid": SigningKey.generate("EdDSA").sign(good),
        "kid not a string": compact({"alg": "EdDSA", "kid": 7}, good, b"sig"),
        "tampered payload": _tamper(ed.sign(good)),
        "signature stripped": ed.sign(good).rsplit(".", 1)[0] + ".",
        "garbage": "not-a-token",
        "three garbage parts": "abc.def.ghi",
        "empty": "",
        "spaces inside": ed.sign(good).replace(".", " .", 1),
        "header not JSON": f"{b64url(b'{{{')}.{b64url(b'{}')}.{b64url(b'sig')}",
        "header nested 3000 deep": f"{b64url(b'[' * 3000)}.{b64url(b'{}')}.{b64url(b'sig')}",
        "header nested 700 deep": f"{b64url(b'[' * 700)}.{b64url(b'{}')}.{b64url(b'sig')}",
        "header a list": compact([header], good, b"sig"),
        "payload a list": f"{ed.sign(good).split('.')[0]}.{b64url(b'[1]')}.{b64url(b'sig')}",
        "crit extension": ed.sign(good, header={"crit": ["exp"], "exp": 1}),
        "oversized": ed.sign(claims(padding="x" * MAX_TOKEN_CHARS)),
    }


def _tamper(token: str) -> str:
    head, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["sub"] = "someone-else"
    return f"{head}.{b64url(json.dumps(decoded).encode())}.{signature}"
