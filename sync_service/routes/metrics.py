"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST

from sync_service import monitoring

# A scrape must answer quickly even while PostgreSQL hangs: Prometheus' default scrape timeout is 10 s.
_DATABASE_TIMEOUT_SECONDS = 1.0


@get("/metrics", summary="Prometheus metrics (text exposition format)", security=[], tags=["operations"])
async def metrics_endpoint(state: State) -> Response[bytes]:
    body = await monitoring.scrape(state.pool, state.committer.queued, db_timeout=_DATABASE_TIMEOUT_SECONDS)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
