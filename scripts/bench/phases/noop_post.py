"""The no-op POST: the framework ceiling the webhook ingest is held against.

The no-op app decodes signed deliveries like the service's (see bench/noop_app.py), cycling through
`plan.noop_requests` of them for `plan.phase_seconds`.
"""

from __future__ import annotations

from bench import workload
from bench.measure import measure, write_signed
from bench.profiling import profiled
from bench.session import Session

NAME = "no-op POST"


def run(session: Session) -> None:
    prefix = session.tmp / "noop-post"
    write_signed(session, prefix, workload.Workload(seed=7).events(session.plan.noop_requests))
    noop = session.apps.noop
    with profiled(session, NAME, noop.pid):
        measure(session, NAME, noop, prefix, mode="cycle", seconds=session.plan.phase_seconds)
