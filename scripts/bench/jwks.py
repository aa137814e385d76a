"""A Better Auth stand-in for the read API: an Ed25519 key, its JWKS on loopback, and tokens signed with it.

Tokens look like the jwt plugin's: protected header exactly {alg, kid}; payload the whole user plus
iat, sub, exp (iat + 15 min), iss and aud (the base URL's origin).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from bench.workload import UserVersion, iso

JWKS_PATH = "/api/auth/jwks"


class JwksServer:
    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        self.kid = "bench-ed25519"
        public: dict[str, Any] = OKPAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        public.update({"kid": self.kid, "alg": "EdDSA", "use": "sig"})
        body = json.dumps({"keys": [public]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != JWKS_PATH:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="jwks", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """What the service needs to trust these tokens."""
        return {
            "BETTER_AUTH_URL": self.base_url,
            "JWT_JWKS_URL": self.base_url + JWKS_PATH,
            "JWT_ISSUER": self.base_url,
            "JWT_AUDIENCE": self.base_url,
        }

    def token(self, user: UserVersion, lifetime_s: int = 900) -> str:
        now = int(time.time())
        claims = {
            "iat": now,
            "id": user.id,
            "createdAt": iso(user.created_at),
            "updatedAt": iso(user.updated_at),
            "email": user.email,
            "emailVerified": user.email_verified,
            "name": user.name,
            "image": user.image,
            "sub": user.id,
            "exp": now + lifetime_s,
            "iss": self.base_url,
            "aud": self.base_url,
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.kid, "typ": None})

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
