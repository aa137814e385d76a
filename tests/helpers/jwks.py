"""The one Better Auth stand-in for tokens, used by the tests, the benchmark and `scripts/dev/mint_token.py`:
real signing keys, a real JWKS endpoint on loopback (http.server in a thread), and `Issuer`, the two put
together as one deployment.

The served key set, the HTTP status and a response delay can be changed while it runs, and the server can
be taken down and brought back up on the same port. Tokens are shaped like Better Auth's: protected header
`{alg, kid}` only, payload = the whole user (camelCase) plus sub, iss, aud, iat, exp.

Imports only the standard library, PyJWT and cryptography (and `ports`), so that the scripts can use it
without the test extra.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.helpers.ports import free_port

JWKS_PATH = "/api/auth/jwks"


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Final[Any] = _Drop()  # as a claim or header value: leave it out (None is sent as JSON null)


def _without_dropped(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not DROP}


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
        payload, headers = _without_dropped(payload), _without_dropped(headers)
        return jwt.encode(payload, self.private_key, algorithm=alg or self.alg, headers=headers)


def better_auth_claims(user: Mapping[str, Any], *, issuer: str, **overrides: Any) -> dict[str, Any]:
    """Better Auth's jwt plugin payload, `{iat, ...user, sub, exp, iss, aud}`; an override of DROP removes
    that claim."""
    now = int(time.time())
    payload = {"iat": now, **user, "sub": user["id"], "exp": now + 900, "iss": issuer, "aud": issuer}
    return _without_dropped({**payload, **overrides})


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


class Issuer:
    """One Better Auth deployment as the service sees it for tokens: a JWKS on loopback serving one EdDSA
    key (the jwt plugin's default), and tokens signed with it. `origin` is what the service takes as
    BETTER_AUTH_URL, hence every token's `iss` and `aud`."""

    def __init__(self, *, port: int | None = None) -> None:
        self.key = SigningKey.generate("EdDSA")
        self.server = JwksServer() if port is None else JwksServer(port=port)
        self.server.serve(self.key)

    @property
    def origin(self) -> str:
        return self.server.base_url

    def env(self) -> dict[str, str]:
        """What the service needs to trust these tokens."""
        return {"BETTER_AUTH_URL": self.origin}

    def claims(self, user: str | Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
        """`user`: the whole user (as the webhook's `data`) or only its id."""
        whole = {"id": user} if isinstance(user, str) else user
        return better_auth_claims(whole, issuer=self.origin, **overrides)

    def token(self, user: str | Mapping[str, Any], **overrides: Any) -> str:
        return self.key.sign(self.claims(user, **overrides))

    def __enter__(self) -> Issuer:
        self.server.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.stop()
