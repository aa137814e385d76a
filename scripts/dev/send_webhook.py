#!/usr/bin/env python3
"""Sign one webhook body with svix's signer, as Better Auth's hook does, and POST it: a first delivery to
copy. DEV and debugging only.

    WEBHOOK_SECRET=whsec_... python scripts/dev/send_webhook.py examples/user.created.json
    -> 200 {"status":"applied"}     (again: 200 {"status":"duplicate"}, same message id)

Options: --url (default http://127.0.0.1:8000), --message-id (default: derived from the body, so a resend
is a duplicate). The secret is the first of WEBHOOK_SECRET's values.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from svix.webhooks import Webhook


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("body", type=Path, help="a JSON file holding one webhook body")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    parser.add_argument("--message-id", help="webhook-id header (default: msg_ + the body's SHA-256)")
    args = parser.parse_args()
    secrets = os.environ.get("WEBHOOK_SECRET", "").replace(",", " ").split()
    if not secrets:
        print("send_webhook: set WEBHOOK_SECRET to the service's secret (whsec_...)", file=sys.stderr)
        return 2
    body = args.body.read_bytes()
    message_id = args.message_id or "msg_" + hashlib.sha256(body).hexdigest()[:32]
    now = datetime.fromtimestamp(int(time.time()), tz=UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secrets[0]).sign(message_id, now, body.decode()),
    }
    response = httpx.post(f"{args.url.rstrip('/')}/webhooks/better-auth", content=body, headers=headers)
    print(response.status_code, response.text)
    return 0 if response.is_success else 1


if __name__ == "__main__":
    raise SystemExit(main())
