"""Webhook ingest: a warm-up, the measured deliveries, then the deletion mix, each sent exactly once.

One stream (half user.created of new users, half user.updated of earlier users, every message id
unique) goes on across the three phases; the deletion mix also deletes 5% users created before, in any
earlier phase. The service's RSS is read after each phase (growth across the measured deliveries) and
the inbox's transactions counted (deliveries per commit: what group commit does).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import procfs, workload
from bench.database import inbox_transactions
from bench.measure import measure, write_signed
from bench.profiling import profiled
from bench.progress import log
from bench.session import Session

WARMUP = "ingest warm-up"
INGEST = "webhook ingest"
DELETION_MIX = "ingest 5% deletions"


@dataclass(frozen=True, slots=True)
class Ingested:
    sent: list[workload.Event]  # every delivery wrk sent, in any order
    answered_all: bool  # every one of them answered 2xx: every one must be in the inbox
    acknowledged: int  # answered 2xx

    def surviving(self) -> list[workload.Event]:
        """The deliveries of users no delivery deleted."""
        deleted = {e.user.id for e in self.sent if e.event_type == "user.deleted"}
        return [e for e in self.sent if e.user.id not in deleted]


def run(session: Session) -> Ingested:
    plan, service = session.plan, session.apps.service
    stream = workload.Workload(seed=1)
    sent: list[workload.Event] = []
    acknowledged = 0
    answered_all = True
    for name, count, delete_share in (
        (WARMUP, plan.warmup, 0.0),
        (INGEST, plan.deliveries, 0.0),
        (DELETION_MIX, plan.deliveries, 0.05),
    ):
        events = stream.events(count, delete_share=delete_share)
        log(f"{name}: signing {count:,} deliveries")
        prefix = session.tmp / name.replace(" ", "-")
        order = write_signed(session, prefix, events)
        transactions_before = inbox_transactions(session.apps.database_url)
        with profiled(session, name, service.pid, enabled=name == INGEST):
            figures = measure(session, name, service, prefix, mode="once", seconds=plan.ingest_cap_seconds)
        result = figures.result
        assert result is not None
        for thread, indexes in enumerate(order):
            sent += [events[i] for i in indexes[: result.issued[thread]]]
        acknowledged += result.ok
        if not result.finished:
            answered_all = False
            session.notes.append(
                f"{name}: stopped at the {plan.ingest_cap_seconds:g} s cap after "
                f"{sum(result.issued):,} of {count:,} deliveries"
            )
        if result.not_ok:
            answered_all = False
        session.rss[name] = procfs.status_kib(service.pid, "VmRSS")
        transactions = inbox_transactions(session.apps.database_url) - transactions_before
        figures.note = (
            f"{transactions:,} transactions wrote the inbox: "
            f"{sum(result.issued) / max(transactions, 1):.1f} deliveries per commit on average (group commit)"
        )
    return Ingested(sent, answered_all, acknowledged)
