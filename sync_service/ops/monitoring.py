"""Feeding the Prometheus metrics: callbacks for deliveries and batches, and gauges read at scrape time."""

from __future__ import annotations

import functools
from typing import Any

import asyncpg
from prometheus_client.exposition import choose_encoder

from sync_service import sql
from sync_service.database import is_unavailable
from sync_service.ingest.records import Outcome
from sync_service.ops import metrics

# The statuses COUNT_WAITING_EVENTS reports: each is exported, at 0 when there are none, so an alert
# on "rejected > 0" has a series to look at from the start.
_WAITING_STATUSES = (Outcome.REJECTED.value, Outcome.CONFLICT.value)


def observe_delivery(event_type: str, outcome: Outcome, seconds: float) -> None:
    """`WebhookReceiver.observe`: one answered delivery."""
    # `event_type` is already a label of the small fixed set (the route maps sender types to "other").
    _deliveries(event_type, outcome).inc()
    metrics.DELIVERY_LATENCY.observe(seconds)


@functools.lru_cache(maxsize=64)  # `labels()` costs more than `inc()`; the label sets are tiny
def _deliveries(event_type: str, outcome: Outcome) -> Any:
    return metrics.DELIVERIES.labels(event_type=event_type, outcome=outcome.value)


def observe_batch(size: int, seconds: float) -> None:
    """`GroupCommitter(on_batch=...)`: one committed (or failed) batch."""
    metrics.BATCH_SIZE.observe(size)
    metrics.BATCH_LATENCY.observe(seconds)


async def scrape(pool: asyncpg.Pool, queued: int, *, accept: str, db_timeout: float) -> tuple[bytes, str]:
    """The exposition (body, content type) in the format the scraper's Accept header asks for (the
    classic text format 0.0.4 unless it asks for another), with the gauges that are read rather than
    counted brought up to date.

    The inbox query gets a short timeout and a failing database only drops its series, so a scrape
    answers while PostgreSQL is down (that is when the metrics matter most).
    """
    open_connections = pool.get_size()
    metrics.POOL_CONNECTIONS.labels(state="open").set(open_connections)
    metrics.POOL_CONNECTIONS.labels(state="in_use").set(open_connections - pool.get_idle_size())
    metrics.POOL_CONNECTIONS.labels(state="max").set(pool.get_max_size())
    metrics.INGEST_QUEUE.set(queued)
    await _count_waiting_events(pool, db_timeout)
    encode, content_type = choose_encoder(accept)
    return encode(metrics.REGISTRY), content_type


async def _count_waiting_events(pool: asyncpg.Pool, db_timeout: float) -> None:
    try:
        async with pool.acquire(timeout=db_timeout) as conn:
            rows = await conn.fetch(sql.COUNT_WAITING_EVENTS, timeout=db_timeout)
    except Exception as exc:
        if not (is_unavailable(exc) or isinstance(exc, asyncpg.PostgresError)):
            raise
        metrics.DATABASE_UP.set(0)
        metrics.EVENTS_WAITING.clear()
        return
    counts = {status: 0 for status in _WAITING_STATUSES}
    counts.update({row[0]: row[1] for row in rows})
    for status, count in counts.items():
        metrics.EVENTS_WAITING.labels(status=status).set(count)
    metrics.DATABASE_UP.set(1)
