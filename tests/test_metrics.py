"""GET /metrics: Prometheus text with deliveries, batches, HTTP requests, the pool and the inbox."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.databases import unreachable_database_url
from tests.helpers.support import ServiceUnderTest, deliver, envelope, make_settings, start_service, user_data

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    # The registry is per process and tests share the process: compare before and after.
    return _value(after, name, **labels) - _value(before, name, **labels)


async def test_metrics_count_deliveries_batches_requests_and_waiting_events(
    service: ServiceUnderTest,
) -> None:
    async with service.client() as client:
        before = await _scrape(client)
        payload = envelope(user_data())
        assert (await deliver(client, payload, message_id="msg_metrics_1")).json() == {"status": "applied"}
        assert (await deliver(client, payload, message_id="msg_metrics_1")).json() == {"status": "duplicate"}
        other = envelope(user_data(), event_type="session.created")
        assert (await deliver(client, other)).json() == {"status": "ignored"}
        rejected = await deliver(client, envelope(user_data(email="not-an-email")))
        assert rejected.status_code == 422
        deleted = await deliver(client, envelope(payload["data"], "user.deleted"))
        assert deleted.json() == {"status": "applied"}
        unsigned = await client.post("/webhooks/better-auth", content=b"{}")
        assert unsigned.status_code == 401
        after = await _scrape(client)
        text = (await client.get("/metrics")).text

    deliveries = "sync_webhook_deliveries_total"
    assert _delta(before, after, deliveries, event_type="user.created", outcome="applied") == 1
    assert _delta(before, after, deliveries, event_type="user.created", outcome="duplicate") == 1
    assert _delta(before, after, deliveries, event_type="other", outcome="ignored") == 1
    assert _delta(before, after, deliveries, event_type="user.created", outcome="rejected") == 1
    assert _delta(before, after, deliveries, event_type="user.deleted", outcome="applied") == 1
    assert _delta(before, after, "sync_webhook_delivery_seconds_count") == 5
    assert _delta(before, after, "sync_ingest_batch_size_count") >= 1
    assert _delta(before, after, "sync_ingest_batch_size_sum") == 5
    assert _delta(before, after, "sync_ingest_batch_seconds_count") >= 1

    route = "/webhooks/better-auth"
    requests = "sync_http_requests_total"
    assert _delta(before, after, requests, method="POST", route=route, status="200") == 4
    assert _delta(before, after, requests, method="POST", route=route, status="422") == 1
    assert _delta(before, after, requests, method="POST", route=route, status="401") == 1
    assert _delta(before, after, "sync_http_request_seconds_count", method="POST", route=route) == 6

    # Read at scrape time: the inbox (tables were emptied for this test) and the pool.
    assert _value(after, "sync_inbox_events_waiting", status="rejected") == 1
    assert _value(after, "sync_inbox_events_waiting", status="conflict") == 0
    assert _value(after, "sync_database_up") == 1
    assert _value(after, "sync_db_pool_connections", state="max") == 6  # DB_POOL_SIZE 2 + DB_MAX_OVERFLOW 4
    assert 0 < _value(after, "sync_db_pool_connections", state="open") <= 6
    assert _value(after, "sync_db_pool_connections", state="in_use") >= 0
    assert ("sync_ingest_queue_depth", frozenset()) in after
    assert _value(after, "process_resident_memory_bytes") > 0
    # Counted by the JWT verifier; a labelled counter shows only its description until first used.
    assert "# TYPE sync_jwks_refreshes_total counter" in text


async def test_unmatched_paths_are_one_label_and_never_the_raw_path(service: ServiceUnderTest) -> None:
    async with service.client() as client:
        await client.get("/users-by-email/alice@example.com?token=abc")
        text = (await client.get("/metrics")).text
    assert "alice@example.com" not in text
    assert "token" not in text
    assert 'route="<unmatched>",status="404"' in text


async def test_metrics_answer_while_the_database_is_down() -> None:
    settings = make_settings(unreachable_database_url(), DB_CONNECT_TIMEOUT="1", DB_ACQUIRE_TIMEOUT="1")
    with start_service(settings) as running:
        async with running.client() as client:
            samples = await _scrape(client)
    assert _value(samples, "sync_database_up") == 0
    assert not any(name == "sync_inbox_events_waiting" for name, _ in samples)
    assert _value(samples, "sync_db_pool_connections", state="in_use") == 0
