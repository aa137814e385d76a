"""Prometheus metrics, on a registry of our own (so several apps in one process, as in tests, share it).

Only identifiers of kinds (event type, outcome, route) are labels, never ids or emails.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# The `*_created` companion series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERIES = Counter(
    "sync_webhook_deliveries_total",
    "Webhook deliveries answered, by event type and outcome.",
    ["event_type", "outcome"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "sync_webhook_delivery_seconds",
    "Time from receiving a delivery to answering it (includes waiting for the group commit).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "sync_ingest_batch_size",
    "Deliveries per group-commit transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
BATCH_LATENCY = Histogram(
    "sync_ingest_batch_seconds",
    "Time to apply and commit one batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
JWKS_REFRESHES = Counter(
    "sync_jwks_refreshes_total",
    "JWKS fetches from Better Auth, by result (ok, error, rate_limited).",
    ["result"],
    registry=REGISTRY,
)
EVENTS_WAITING = Gauge(
    "sync_inbox_events_waiting",
    "Inbox events that ended rejected or conflict and wait for a retry or a replay.",
    ["status"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "sync_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "sync_http_request_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
POOL_CONNECTIONS = Gauge(
    "sync_db_pool_connections",
    "Connections of the asyncpg pool, by state (open, in_use, max), read at scrape time.",
    ["state"],
    registry=REGISTRY,
)
INGEST_QUEUE = Gauge(
    "sync_ingest_queue_depth",
    "Deliveries waiting for a group commit, read at scrape time.",
    registry=REGISTRY,
)
DATABASE_UP = Gauge(
    "sync_database_up",
    "1 if the scrape-time inbox query succeeded, else 0 (then sync_inbox_events_waiting is absent).",
    registry=REGISTRY,
)

ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
