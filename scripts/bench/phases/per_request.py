"""The straightforward receiver (verify, decode, one transaction per request; bench/per_request_app.py)
on the same kind of stream: the baseline that group commit is measured against."""

from __future__ import annotations

from bench import workload
from bench.measure import measure, write_signed
from bench.session import Session

NAME = "per-request receiver"


def run(session: Session) -> None:
    prefix = session.tmp / "per-request"
    write_signed(session, prefix, workload.Workload(seed=3).events(session.plan.per_request_deliveries))
    measure(session, NAME, session.apps.per_request, prefix, mode="once", seconds=session.plan.phase_seconds)
