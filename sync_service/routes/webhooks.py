"""POST /webhooks/better-auth: verify, decode, hand to the group committer, answer after commit."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import RawBody

from sync_service.events import HANDLED_TYPES, Outcome, check_message_id, parse_delivery
from sync_service.ingest import Result
from sync_service.webhook_receiver import WebhookReceiver

log = logging.getLogger("sync_service.webhooks")

_JSON = "application/json"
_ACK_BODIES = {outcome: b'{"status":"%s"}' % outcome.value.encode() for outcome in Outcome}


@post(
    "/better-auth",
    status_code=200,
    summary="Receive a signed Better Auth user event",
    description=(
        "Standard Webhooks signature over the raw body (webhook-* or svix-* headers). Answers only after "
        "the commit: 200 applied/duplicate/stale/ignored, 401 bad signature, 400 not a JSON object, "
        "409 email held by another user (retry), 413 too large, 422 invalid fields, 503 retry later."
    ),
    security=[],
)
async def receive_better_auth_webhook(
    request: Request[Any, Any, Any], body: RawBody, receiver: NamedDependency[WebhookReceiver]
) -> Response[bytes]:
    started = time.perf_counter()
    message_id = check_message_id(receiver.verifier.verify(body, request.headers))
    delivery = parse_delivery(
        message_id,
        body,
        user_id_format=receiver.user_id_format,
        clock_skew=receiver.clock_skew,
        received_at=datetime.now(UTC),
    )
    result = await receiver.committer.submit(delivery)
    # Only validated identifiers reach logs and metric labels: an unhandled type or a rejected event's
    # id is free text from the sender (an email put in data.id, say).
    event_type = delivery.event_type if delivery.event_type in HANDLED_TYPES else "other"
    seconds = time.perf_counter() - started
    receiver.observe(event_type, result.outcome, seconds)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "webhook delivery",
            extra={
                "message_id": message_id,
                "event_type": event_type,
                "outcome": result.outcome.value,
                "user_id": delivery.user.id if delivery.user is not None else None,
                "latency_ms": round(seconds * 1000, 2),
            },
        )
    return _response(result)


def _response(result: Result) -> Response[bytes]:
    if result.outcome.acknowledged:
        return Response(_ACK_BODIES[result.outcome], status_code=200, media_type=_JSON)
    status = 409 if result.outcome is Outcome.CONFLICT else 422
    content: dict[str, Any] = {
        "status_code": status,
        "detail": result.detail,
        "extra": {"status": result.outcome.value, "field": result.field},
    }
    return Response(content, status_code=status, media_type=_JSON)  # type: ignore[arg-type]
