"""GET (and HEAD) /health/live and /health/ready.

HEAD answers as GET does, status and headers without the body: load balancers probe with it."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar import HttpMethod, Response, route
from litestar.datastructures import State

from sync_service import sql
from sync_service.database import is_unavailable
from sync_service.ops.migrations import expected_migration_ids

# One handler for both: uvicorn sends no body for HEAD, and the headers (content-length included) are
# those GET would send, as RFC 9110 asks. (Litestar's `@head` handlers may not return a body at all.)
_PROBE_METHODS = [HttpMethod.GET, HttpMethod.HEAD]


@route("/live", http_method=_PROBE_METHODS, summary="The process is up", security=[])
async def live() -> dict[str, str]:
    return {"status": "ok"}


@route(
    "/ready",
    http_method=_PROBE_METHODS,
    summary="Database reachable and schema at head; 503 naming the reason if not",
    security=[],
)
async def ready(state: State) -> Response[dict[str, Any]]:
    pool: asyncpg.Pool = state.services.pool
    try:
        async with pool.acquire(timeout=state.services.database.acquire_timeout) as conn:
            try:
                applied = {r[0] for r in await conn.fetch(sql.APPLIED_MIGRATIONS)}
            except asyncpg.exceptions.UndefinedTableError:
                applied = set()
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        return _not_ready("database unreachable")
    missing = expected_migration_ids() - applied
    if missing:
        return _not_ready(f"migrations pending: {', '.join(sorted(missing))}")
    return Response({"status": "ready"}, status_code=200)


def _not_ready(reason: str) -> Response[dict[str, Any]]:
    return Response({"status": "not ready", "reason": reason}, status_code=503, headers={"Retry-After": "5"})
