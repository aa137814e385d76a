"""Webhook ingest: a warm-up, the measured deliveries, then the deletion mix, each sent exactly once.

One stream (half user.created of new users, half user.updated of earlier users, every message id
unique) goes on across the three phases; the deletion mix also deletes 5% users created before, in any
earlier phase. The service's RSS is read after each phase (growth across the measured deliveries) and
the inbox's transactions counted (deliveries per commit: what group commit does).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from bench import checks, procfs, workload
from bench.database import inbox_transactions
from bench.measure import measure, write_signed
from bench.profiling import profiled
from bench.progress import log
from bench.session import Figures, Session

WARMUP = "ingest warm-up"
INGEST = "webhook ingest"
DELETION_MIX = "ingest 5% deletions"


@dataclass(frozen=True, slots=True)
class Ingested:
    sent: list[workload.Event]  # every delivery wrk sent, in any order
    answered_all: bool  # every one of them answered 2xx: every one must be in the inbox
    acknowledged: int  # answered 2xx

    def __add__(self, other: Ingested) -> Ingested:
        return Ingested(
            self.sent + other.sent, self.answered_all and other.answered_all,
            self.acknowledged + other.acknowledged,
        )  # fmt: skip

    def surviving(self) -> list[workload.Event]:
        """The deliveries of users no delivery deleted."""
        deleted = {e.user.id for e in self.sent if e.event_type == "user.deleted"}
        return [e for e in self.sent if e.user.id not in deleted]

    def check(self, database_url: str, label: str = "") -> list[checks.Check]:
        """Is every acknowledged delivery in the inbox and every user row at its newest state?"""
        found = asyncio.run(
            checks.check_ingest(
                database_url, self.sent, acknowledged=self.acknowledged, answered_all=self.answered_all
            )
        )
        return [dataclasses.replace(c, text=label + c.text) for c in found]


def run(session: Session) -> Ingested:
    plan = session.plan
    stream = workload.Workload(seed=1)
    ingested = Ingested([], True, 0)
    for name, count, delete_share in (
        (WARMUP, plan.warmup, 0.0),
        (INGEST, plan.deliveries, 0.0),
        (DELETION_MIX, plan.deliveries, 0.05),
    ):
        _, sent = deliver(
            session, name, stream.events(count, delete_share=delete_share), profile=name == INGEST
        )
        ingested += sent
        session.rss[name] = procfs.family_status_kib(session.apps.service.pid, "VmRSS")
    return ingested


def deliver(
    session: Session,
    name: str,
    events: Sequence[workload.Event],
    *,
    connections: int | None = None,
    profile: bool = False,
) -> tuple[Figures, Ingested]:
    """One phase: every event sent once to the service, signed right before (the phase stops at
    `plan.ingest_cap_seconds` even if not all were sent)."""
    plan, service = session.plan, session.apps.service
    log(f"{name}: signing {len(events):,} deliveries")
    prefix = session.tmp / name.replace(" ", "-")
    order = write_signed(session, prefix, events)
    transactions_before = inbox_transactions(session.apps.database_url)
    with profiled(session, name, service.pid, enabled=profile):
        figures = measure(
            session, name, service, prefix, mode="once", seconds=plan.ingest_cap_seconds,
            connections=connections,
        )  # fmt: skip
    result = figures.result
    assert result is not None
    sent = [events[i] for thread, indexes in enumerate(order) for i in indexes[: result.issued[thread]]]
    if not result.finished:
        session.notes.append(
            f"{name}: stopped at the {plan.ingest_cap_seconds:g} s cap after "
            f"{sum(result.issued):,} of {len(events):,} deliveries"
        )
    transactions = inbox_transactions(session.apps.database_url) - transactions_before
    figures.note = (
        f"{transactions:,} transactions wrote the inbox: "
        f"{sum(result.issued) / max(transactions, 1):.1f} deliveries per commit on average (group commit)"
    )
    return figures, Ingested(sent, result.finished and not result.not_ok, result.ok)
