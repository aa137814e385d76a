"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.datastructures import State

from sync_service.ops import monitoring

# A scrape must answer quickly even while PostgreSQL hangs: Prometheus' default scrape timeout is 10 s.
_DATABASE_TIMEOUT_SECONDS = 1.0


@get("/metrics", summary="Prometheus metrics (text exposition format)", security=[], tags=["operations"])
async def metrics_endpoint(request: Request[object, object, State], state: State) -> Response[bytes]:
    body, content_type = await monitoring.scrape(
        state.services.pool,
        state.services.committer.queued,
        accept=request.headers.get("accept", ""),
        db_timeout=_DATABASE_TIMEOUT_SECONDS,
    )
    # Given as a header: Litestar would append a second charset to a text/ media type.
    return Response(body, headers={"content-type": content_type})
