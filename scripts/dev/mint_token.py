#!/usr/bin/env python3
"""A stand-in for Better Auth's jwt plugin, to try `/users/me` without a Better Auth deployment.
DEV ONLY, NEVER FOR PRODUCTION.

It makes an Ed25519 key in memory, serves its JWKS at http://127.0.0.1:PORT/api/auth/jwks (loopback
only), and prints a token for the user id you give, as Better Auth would sign it (EdDSA, `kid`, `sub`,
`iss` and `aud` = the origin, 15 minutes). It changes nothing in the service: the service trusts only
the JWKS of its own BETTER_AUTH_URL (or JWT_JWKS_URL), so it accepts these tokens only when you start it
with BETTER_AUTH_URL=http://127.0.0.1:PORT yourself. Stop it with Ctrl-C; the key dies with it.

    python scripts/dev/mint_token.py --sub 7add488a-d920-479d-ba11-612a1390ddba
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sub", required=True, help="the user id the token is for (a synced user)")
    parser.add_argument("--port", type=int, default=3999, help="loopback port of the JWKS (default: 3999)")
    parser.add_argument("--minutes", type=int, default=15, help="token lifetime (default: 15)")
    args = parser.parse_args()

    key = Ed25519PrivateKey.generate()
    kid = secrets.token_hex(8)
    public: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**public, "kid": kid, "alg": "EdDSA"}]}).encode()
    origin = f"http://127.0.0.1:{args.port}"
    now = int(time.time())
    claims = {"sub": args.sub, "id": args.sub, "iss": origin, "aud": origin, "iat": now,
              "exp": now + 60 * args.minutes}  # fmt: skip
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path.split("?")[0] == "/api/auth/jwks"
            self.send_response(200 if found else 404)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(jwks if found else b"{}")

        def log_message(self, format: str, *values: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Jwks)
    print("DEV ONLY - never point a production service at this key set.", file=sys.stderr)
    print(f"Start (or restart) the service with:  BETTER_AUTH_URL={origin}", file=sys.stderr)
    print(f"Token for {args.sub}, valid {args.minutes} min:", file=sys.stderr)
    print(token, flush=True)  # stdout may be a file: `... > token.txt &`
    print(
        'Try:  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/users/me  (Ctrl-C stops it)',
        file=sys.stderr,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
