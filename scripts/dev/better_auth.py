#!/usr/bin/env python3
"""Start a real Better Auth 1.7 (the one the tests run: tests/better_auth/, memory adapter, jwt plugin,
the README's hook file) wired to a local sync-service, sign up one user and print their token.
DEV ONLY: the memory adapter forgets everything when this stops (Ctrl-C). Needs Node.js 20+ and npm.

    # terminal 1: the service, trusting this Better Auth
    WEBHOOK_SECRET=whsec_... BETTER_AUTH_URL=http://127.0.0.1:3000 sync-service serve
    # terminal 2:
    WEBHOOK_SECRET=whsec_... python scripts/dev/better_auth.py --email me@example.com
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parent.parent.parent / "tests" / "better_auth"


def main() -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--port", type=int, default=3000, help="Better Auth's loopback port (default: 3000)")
    parser.add_argument("--service", default="http://127.0.0.1:8000", help="sync-service's base URL")
    parser.add_argument("--email", default="dev@example.com", help="the user to sign up")
    parser.add_argument("--name", default="Dev User")
    args = parser.parse_args()
    node, npm = shutil.which("node"), shutil.which("npm")
    secret = os.environ.get("WEBHOOK_SECRET", "").replace(",", " ").split()
    if node is None or npm is None:
        print(
            "better_auth: needs Node.js 20+ and npm; without them use scripts/dev/mint_token.py",
            file=sys.stderr,
        )
        return 2
    if not secret:
        print("better_auth: set WEBHOOK_SECRET to the service's secret (whsec_...)", file=sys.stderr)
        return 2
    if not (PROJECT / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PROJECT, check=True)
    subprocess.run([node, "build.mjs"], cwd=PROJECT, check=True)

    base_url = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "BETTER_AUTH_URL": base_url, "BETTER_AUTH_SECRET": secrets.token_hex(32),
           "SYNC_SERVICE_URL": args.service, "SYNC_WEBHOOK_SECRET": secret[0]}  # fmt: skip
    # Its own lines go to stderr: stdout carries only the token, for `TOKEN=$(...)`.
    server = subprocess.Popen([node, "server.mjs"], cwd=PROJECT, env=env, stdout=sys.stderr)
    try:
        # Better Auth refuses cookie-authenticated calls without a trusted Origin (CSRF protection).
        with httpx.Client(base_url=base_url, headers={"origin": base_url}, timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get("/api/auth/ok")
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        print("better_auth: the server did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.1)
            password = secrets.token_urlsafe(12)
            signed_up = client.post(
                "/api/auth/sign-up/email", json={"email": args.email, "password": password, "name": args.name}
            )
            if signed_up.status_code != 200:
                print(
                    f"better_auth: sign-up failed: {signed_up.status_code} {signed_up.text}", file=sys.stderr
                )
                return 1
            token = client.get("/api/auth/token").json()["token"]
        user_id = signed_up.json()["user"]["id"]
        print(f"Signed up {args.email} (id {user_id}, password {password}); the hook sent user.created.",
              file=sys.stderr)  # fmt: skip
        print("Token (15 min; a new one: GET /api/auth/token with the session):", file=sys.stderr)
        print(token, flush=True)
        print(f'Try:  curl -H "Authorization: Bearer $TOKEN" {args.service}/users/me   (Ctrl-C stops)',
              file=sys.stderr)  # fmt: skip
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
