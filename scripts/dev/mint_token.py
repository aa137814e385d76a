#!/usr/bin/env python3
"""A stand-in for Better Auth's jwt plugin, to try `/users/me` without a Better Auth deployment.
DEV ONLY, NEVER FOR PRODUCTION.

It makes an Ed25519 key in memory, serves its JWKS at http://127.0.0.1:PORT/api/auth/jwks (loopback
only), and prints a token for the user id you give, as Better Auth would sign it (EdDSA, `kid`, `sub`,
`iss` and `aud` = the origin). It changes nothing in the service: the service trusts only the JWKS of
its own BETTER_AUTH_URL (or JWT_JWKS_URL), so it accepts these tokens only when you start it with
BETTER_AUTH_URL=http://127.0.0.1:PORT yourself. Stop it with Ctrl-C; the key dies with it.

    python scripts/dev/mint_token.py --sub 7add488a-d920-479d-ba11-612a1390ddba
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from pathlib import Path

# The stand-in is the tests' own (tests/helpers/jwks.py), so that what you try is what the tests trust.
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from tests.helpers.jwks import Issuer


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sub", required=True, help="the user id the token is for (a synced user)")
    parser.add_argument("--port", type=int, default=3999, help="loopback port of the JWKS (default: 3999)")
    parser.add_argument("--minutes", type=int, default=15, help="token lifetime (default: 15)")
    args = parser.parse_args()

    with Issuer(port=args.port) as issuer:
        token = issuer.token(args.sub, exp=int(time.time()) + 60 * args.minutes)
        print("DEV ONLY - never point a production service at this key set.", file=sys.stderr)
        print(f"Start (or restart) the service with:  BETTER_AUTH_URL={issuer.origin}", file=sys.stderr)
        print(f"Token for {args.sub}, valid {args.minutes} min:", file=sys.stderr)
        print(token, flush=True)  # stdout may be a file: `... > token.txt &`
        print(
            'Try:  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/users/me  (Ctrl-C stops it)',
            file=sys.stderr,
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()  # the JWKS answers from its own thread until Ctrl-C
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
