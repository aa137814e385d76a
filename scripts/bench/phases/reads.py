"""Reads: the no-op GET (the ceiling), then GET /users/me with real EdDSA tokens of users ingested.

Both cycle through the same requests, one token each for up to `plan.tokens` users at their newest
state. /users/me is skipped when this build has no such route (404) and is a failed check when a valid
token is not answered 200 with its user.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench import checks, workload
from bench.measure import measure
from bench.processes import HOST, http_get
from bench.profiling import profiled
from bench.progress import log
from bench.session import Figures, Session

NOOP_GET = "no-op GET"
USERS_ME = "GET /users/me"


def run(session: Session, sent: Sequence[workload.Event]) -> None:
    """`sent`: deliveries of users that exist now."""
    newest: dict[str, workload.UserVersion] = {}
    for event in sent:
        held = newest.get(event.user.id)
        if held is None or event.user.updated_at > held.updated_at:
            newest[event.user.id] = event.user
    users = list(newest.values())[: session.plan.tokens]
    tokens = [session.apps.issuer.token(workload.user_data(user)) for user in users]
    requests = [
        workload.http_request("GET", "/users/me", HOST, [("Authorization", f"Bearer {token}")])
        for token in tokens
    ]
    prefix = session.tmp / "read"
    workload.write_thread_files(prefix, requests, session.threads)
    noop, service = session.apps.noop, session.apps.service
    with profiled(session, NOOP_GET, noop.pid):
        measure(session, NOOP_GET, noop, prefix, mode="cycle", seconds=session.plan.phase_seconds)

    status, body = http_get(f"{service.url}/users/me", {"Authorization": f"Bearer {tokens[0]}"})
    if status == 404 and all(
        http_get(f"{service.url}/users/me", {"Authorization": f"Bearer {t}"})[0] == 404 for t in tokens[1:5]
    ):
        session.figures[USERS_ME] = Figures(
            USERS_ME, note="skipped: GET /users/me answers 404 (not there yet in this build)"
        )
        log("GET /users/me: skipped (404)")
        return
    if status != 200 or users[0].id.encode() not in body:
        session.figures[USERS_ME] = Figures(
            USERS_ME, note=f"skipped: a valid token was answered {status}: {body[:200]!r}"
        )
        session.checks.append(
            checks.Check(False, f"GET /users/me with a valid EdDSA token answers 200 (got {status})")
        )
        return
    with profiled(session, USERS_ME, service.pid):
        measure(session, USERS_ME, service, prefix, mode="cycle", seconds=session.plan.phase_seconds)
