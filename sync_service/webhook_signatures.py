"""Standard Webhooks / Svix signature verification over the raw body, with several secrets.

svix accepts `svix-*` and `webhook-*` headers (svix-* wins when both are present), checks the
timestamp within 5 minutes and compares in constant time. On malformed input it raises plain
`ValueError`s (`binascii.Error`, `UnicodeDecodeError`) besides `WebhookVerificationError`: all of them
mean "not a genuine delivery" here, answered 401 with no detail about why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from svix.webhooks import Webhook, WebhookVerificationError

from sync_service.errors import InvalidSignature

_HEADER_NAMES = ("svix-id", "svix-timestamp", "svix-signature", "webhook-id", "webhook-timestamp",
                 "webhook-signature")  # fmt: skip


class SignatureVerifier:
    """Verifies deliveries against every configured secret (rotation: any one may match)."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        # bytes are used as the raw key by svix (no base64 step): config already decoded them strictly.
        self._webhooks = tuple(Webhook(secret) for secret in secrets)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the message id of a genuine delivery, or raise `InvalidSignature`."""
        relevant = {k.lower(): v for k, v in headers.items() if k.lower() in _HEADER_NAMES}
        for webhook in self._webhooks:
            try:
                webhook.verify(body, relevant)
            except (WebhookVerificationError, ValueError):
                continue
            return relevant.get("svix-id") or relevant["webhook-id"]
        raise InvalidSignature("invalid webhook signature")


def sign(secret: bytes, message_id: str, timestamp_seconds: int, body: bytes) -> dict[str, str]:
    """Headers for a delivery signed with `secret`, as Better Auth's hook sends them (replay, tests)."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(timestamp_seconds, tz=UTC)
    signature = Webhook(secret).sign(message_id, when, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_seconds),
        "webhook-signature": signature,
    }
