"""What the webhook route needs, built once at startup: the verifier, the committer, the rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sync_service.ingest.group_commit import GroupCommitter
from sync_service.ingest.records import Outcome
from sync_service.webhooks.events import Rules
from sync_service.webhooks.signatures import SignatureVerifier


@dataclass(frozen=True, slots=True)
class WebhookReceiver:
    verifier: SignatureVerifier
    committer: GroupCommitter
    rules: Rules
    observe: Callable[[str, Outcome, float], None] = field(default=lambda _type, _outcome, _seconds: None)
