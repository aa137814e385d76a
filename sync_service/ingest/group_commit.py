"""Group commit: deliveries that arrive together are applied together, in one transaction.

Requests put their delivery on a bounded queue and wait for the result of the commit that holds it.
A writer task (`INGEST_WRITERS`, one by default) takes whatever is queued (up to `batch_size`), applies
it with the ingest core and hands each waiter its own result. While one batch waits on PostgreSQL, the
next one fills up, so the batch size follows the load by itself and an idle service still answers a lone
delivery at once. When the writer sends a batch and more deliveries are already queued, it takes them as
its next batch and has the ingest core read their state in the same statement (`apply_and_read_ahead`):
under load each batch costs one round trip to PostgreSQL instead of two. A second writer would take
deliveries as they arrive, before the first could read them along, and so pay two round trips per batch:
more writers only help when a batch can be held up for long (locks taken elsewhere).

Backpressure: a full queue, or a delivery still uncommitted after `timeout`, is answered 503 with
Retry-After instead of letting memory or latency grow. Nothing is acknowledged before its commit.
(The queue, the writer loop, the deadlines and the failure policy are `batching.Batcher`'s, shared with
the user reads; this module hands it the ingest core as a `ReadAhead`.)
"""

from __future__ import annotations

import asyncpg

from sync_service.batching import Batcher, BatchObserver, Labels, ReadAhead
from sync_service.ingest.core import Result, apply_and_read_ahead, read_state
from sync_service.ingest.records import Delivery

__all__ = ["BatchObserver", "GroupCommitter"]

_LABELS = Labels(
    name="ingest",
    worker="ingest-writer",
    queue_full="ingest queue is full",
    # The delivery may still commit; the sender's retry is then answered "duplicate".
    timed_out="timed out waiting for the commit",
)
_INGEST_CORE = ReadAhead(read=read_state, apply=apply_and_read_ahead)


class GroupCommitter(Batcher[Delivery, Result]):
    """`await committer.submit(delivery)`: its result, once the transaction holding it committed."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_size: int,
        queue_size: int,
        writers: int,
        timeout: float,
        acquire_timeout: float,
        on_batch: BatchObserver | None = None,
    ) -> None:
        super().__init__(
            pool,
            _INGEST_CORE,
            labels=_LABELS,
            batch_size=batch_size,
            queue_size=queue_size,
            workers=writers,
            timeout=timeout,
            acquire_timeout=acquire_timeout,
            on_batch=on_batch,
        )
