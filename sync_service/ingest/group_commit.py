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
(The queue, the deadlines and the failure policy are `batching.Batcher`'s, shared with the user reads;
the writer loop with its read-ahead is this module's.)
"""

from __future__ import annotations

import asyncio

import asyncpg

from sync_service.batching import Batch, Batcher, BatchObserver
from sync_service.database import acquire
from sync_service.ingest.core import BatchState, Result, apply_and_read_ahead, read_state
from sync_service.ingest.records import Delivery

__all__ = ["BatchObserver", "GroupCommitter"]

_Batch = Batch[Delivery, Result]


class GroupCommitter(Batcher[Delivery, Result]):
    name = "ingest"
    worker_name = "ingest-writer"
    queue_full = "ingest queue is full"
    # The delivery may still commit; the sender's retry is then answered "duplicate".
    timed_out = "timed out waiting for the commit"

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
            batch_size=batch_size,
            queue_size=queue_size,
            workers=writers,
            timeout=timeout,
            acquire_timeout=acquire_timeout,
            on_batch=on_batch,
        )

    async def _serve(self, batch: _Batch) -> _Batch:
        """Apply `batch` and answer its waiters; whatever is queued when its write is sent becomes the next
        batch, whose state that write reads along. Goes on while there is work, on one connection (see
        `Batcher._serve`); after a failure returns the batch taken but not yet applied."""
        loop = asyncio.get_running_loop()
        state: BatchState | None = None
        upcoming: _Batch = []
        started = loop.time()
        try:
            async with acquire(self._pool, self._acquire_timeout) as conn:
                while batch:
                    deliveries = [delivery for delivery, _ in batch]
                    upcoming = []
                    if state is None:
                        state = await read_state(conn, deliveries)
                    self._take_queued(upcoming)
                    outcomes, state = await apply_and_read_ahead(
                        conn, deliveries, state, [delivery for delivery, _ in upcoming]
                    )
                    self._settle(batch, outcomes, started)
                    batch, started = upcoming, loop.time()
                    if not batch:
                        # Nothing was queued when the write went out, but deliveries may have come in since:
                        # they start a batch of their own (its state read first) on the same connection.
                        self._take_queued(batch)
        except Exception as exc:
            # Nothing of `batch` was committed: every sender retries later. A bug must not acknowledge.
            self._settle(batch, self._failed(exc, len(batch)), started)
            return upcoming
        return []
