"""A Better Auth stand-in for tokens: a real JWKS served over HTTP on loopback, and real JWTs signed
with its Ed25519 key (the jwt plugin's default), genuine or subtly wrong."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

JWKS_PATH = "/api/auth/jwks"


@dataclass
class TokenIssuer:
    """Holds the signing key; `origin` is BETTER_AUTH_URL, hence the expected `iss` and `aud`."""

    origin: str = ""
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    jwks_requests: int = 0

    def jwks(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": self.kid, "alg": "EdDSA", "use": "sig"})
        return {"keys": [public]}

    def claims(self, subject: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "iss": self.origin,
            "aud": self.origin,
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not _DROP}

    def token(
        self, subject: str, *, key: Any = None, kid: Any = None, algorithm: str = "EdDSA", **claims: Any
    ) -> str:
        headers: dict[str, Any] = {}
        chosen_kid = self.kid if kid is None else kid
        if chosen_kid is not _DROP:
            headers["kid"] = chosen_kid
        return jwt.encode(
            self.claims(subject, **claims), key or self.key, algorithm=algorithm, headers=headers
        )


_DROP = object()
DROP: Any = _DROP  # pass as a claim (or kid) value to leave it out


@contextlib.contextmanager
def serve_jwks(issuer: TokenIssuer) -> Iterator[TokenIssuer]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != JWKS_PATH:
                self.send_error(404)
                return
            issuer.jwks_requests += 1
            body = json.dumps(issuer.jwks()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.origin = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="jwks", daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
