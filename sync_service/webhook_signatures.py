"""Standard Webhooks / Svix signature verification over the raw body, with several secrets.

The rules are svix's (its `Webhook.verify`): `svix-*` headers win over `webhook-*` ones when present; the
timestamp must be within 5 minutes of now either way; the signed content is `{id}.{timestamp}.{body}`;
`webhook-signature` holds space-separated `v1,<base64 HMAC-SHA256>` entries, any of which may match; the
comparison is constant-time. They are applied here directly because svix's implementation costs about
three times as much per delivery (it decodes the body to text, copies the headers twice, formats dates
and builds a Python-level HMAC object); tests sign with svix's own signer, so the two cannot drift apart
unnoticed. Anything malformed means "not a genuine delivery", answered 401 with no detail about why.
"""

from __future__ import annotations

import base64
import hmac
import math
import time
from collections.abc import Mapping, Sequence

from sync_service.errors import InvalidSignature

TOLERANCE_SECONDS = 5 * 60


class SignatureVerifier:
    """Verifies deliveries against every configured secret (rotation: any one may match)."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self._keys = tuple(secrets)  # raw keys: config already decoded the whsec_ secrets strictly

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the message id of a genuine delivery, or raise `InvalidSignature`.

        `headers` is looked up by lower-case name (Litestar's `Headers` ignore case anyway)."""
        message_id = _either(headers, "svix-id", "webhook-id")
        timestamp = _either(headers, "svix-timestamp", "webhook-timestamp")
        signatures = _either(headers, "svix-signature", "webhook-signature")
        if not (message_id and timestamp and signatures):
            raise InvalidSignature("missing webhook signature headers")
        try:
            sent_at = float(timestamp)
        except ValueError:
            raise InvalidSignature("invalid webhook timestamp") from None
        if not math.isfinite(sent_at) or abs(time.time() - sent_at) > TOLERANCE_SECONDS:
            raise InvalidSignature("webhook timestamp outside the tolerance")
        signed = b"%s.%d.%s" % (message_id.encode(), math.floor(sent_at), body)
        offered = [entry[3:].encode() for entry in signatures.split(" ") if entry.startswith("v1,")]
        for key in self._keys:
            expected = base64.b64encode(hmac.digest(key, signed, "sha256"))
            for signature in offered:
                if hmac.compare_digest(expected, signature):
                    return message_id
        raise InvalidSignature("invalid webhook signature")


def _either(headers: Mapping[str, str], preferred: str, fallback: str) -> str | None:
    value = headers.get(preferred)
    return value if value is not None else headers.get(fallback)


def sign(secret: bytes, message_id: str, timestamp_seconds: int, body: bytes) -> dict[str, str]:
    """Headers for a delivery signed with `secret`, as Better Auth's hook sends them (replay, tests)."""
    from datetime import UTC, datetime

    from svix.webhooks import Webhook

    when = datetime.fromtimestamp(timestamp_seconds, tz=UTC)
    signature = Webhook(secret).sign(message_id, when, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_seconds),
        "webhook-signature": signature,
    }
