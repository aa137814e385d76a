"""A real JWKS endpoint on loopback (http.server in a thread) and real signing keys, for the JWT tests.

The served key set, the HTTP status and a response delay can be changed while it runs, and the server can
be taken down and brought back up on the same port. Tokens are shaped like Better Auth's: protected header
`{alg, kid}` only, payload = the whole user (camelCase) plus sub, iss, aud, iat, exp.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from sync_service.users.tokens import MAX_TOKEN_CHARS
from tests.helpers.ports import free_port

JWKS_PATH = "/api/auth/jwks"


@dataclass
class SigningKey:
    """A private key as Better Auth's jwks table holds one, with the kid it publishes."""

    alg: str
    kid: str
    private_key: Any

    @classmethod
    def generate(cls, alg: str, kid: str | None = None) -> SigningKey:
        kid = kid or secrets.token_hex(16)  # 32 characters, like Better Auth's generated ids
        if alg == "EdDSA":
            private: Any = ed25519.Ed25519PrivateKey.generate()
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif alg == "ES512":
            private = ec.generate_private_key(ec.SECP521R1())
        elif alg in ("RS256", "PS256"):
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(alg)
        return cls(alg=alg, kid=kid, private_key=private)

    @property
    def public_key(self) -> Any:
        return self.private_key.public_key()

    def jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        """The public JWK as Better Auth serves it: kty/crv/x (or n/e), kid, alg; no `use`."""
        public = self.public_key
        if isinstance(public, ed25519.Ed25519PublicKey):
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        jwk["kid"] = self.kid
        if with_alg:
            jwk["alg"] = self.alg
        return jwk

    def sign(
        self, payload: dict[str, Any], *, header: dict[str, Any] | None = None, alg: str | None = None
    ) -> str:
        headers = {"kid": self.kid, "typ": None}  # typ None: PyJWT then leaves it out, as Better Auth does
        headers.update(header or {})
        return jwt.encode(payload, self.private_key, algorithm=alg or self.alg, headers=headers)


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


def better_auth_claims(user: dict[str, Any], *, issuer: str, **overrides: Any) -> dict[str, Any]:
    """Better Auth's jwt plugin payload, `{iat, ...user, sub, exp, iss, aud}`; an override of None removes
    that claim."""
    now = int(time.time())
    payload = {"iat": now, **user, "sub": user["id"], "exp": now + 900, "iss": issuer, "aud": issuer}
    for name, value in overrides.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


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
        "missing sub": ed.sign(claims(sub=None)),
        "empty sub": ed.sign(claims(sub="")),
        "numeric sub": ed.sign(claims(sub=12345)),
        "missing exp": ed.sign(claims(exp=None)),
        "exp as a string": ed.sign(claims(exp=str(now + 900))),
        "missing iss": ed.sign(claims(iss=None)),
        "missing aud": ed.sign(claims(aud=None)),
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


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout tests) is expected, not worth a traceback


@dataclass
class JwksServer:
    """GET /api/auth/jwks on 127.0.0.1:<port>, answering from `keys` (or `status`/`body` when set)."""

    port: int = field(default_factory=free_port)
    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    body: bytes | None = None  # served instead of the key set when set
    delay: float = 0.0
    requests: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    def serve(self, *keys: SigningKey) -> None:
        self.keys = [key.jwk() for key in keys]

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.requests += 1
                if owner.delay:
                    time.sleep(owner.delay)
                if self.path.split("?", 1)[0] != JWKS_PATH:  # a query (credentials in tests) is ignored
                    self.send_error(404)
                    return
                body = owner.body if owner.body is not None else json.dumps({"keys": owner.keys}).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name=f"jwks-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def reset_count(self) -> int:
        with self._lock:
            count, self.requests = self.requests, 0
        return count


@contextlib.contextmanager
def running(server: JwksServer) -> Iterator[JwksServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
