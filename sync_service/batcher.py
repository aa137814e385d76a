"""Group commit: deliveries that arrive together are applied together, in one transaction.

Requests put their delivery on a bounded queue and wait for the result of the commit that holds it.
A few writer tasks each take whatever is queued (up to `batch_size`), apply it with the ingest core and
hand each waiter its own result. While one batch waits on PostgreSQL, the next one fills up, so the
batch size follows the load by itself and an idle service still answers a lone delivery at once.
When a writer sends a batch and more deliveries are already queued, it takes them as its next batch and
has the ingest core read their state in the same statement (`apply_and_read_ahead`): under load each
batch costs one round trip to PostgreSQL instead of two.

Backpressure: a full queue, or a delivery still uncommitted after `timeout`, is answered 503 with
Retry-After instead of letting memory or latency grow. Nothing is acknowledged before its commit.
(The queue, the deadlines and the failure policy are `batching.Batcher`'s, shared with the user reads;
the writer loop with its read-ahead is this module's.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from sync_service.batching import Batch, Batcher, BatchObserver
from sync_service.database import acquire
from sync_service.errors import ServiceUnavailable
from sync_service.events import Delivery
from sync_service.ingest import BatchState, Result, apply_and_read_ahead, read_state

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

    async def _work_forever(self) -> None:
        batch: _Batch = []
        state: BatchState | None = None
        while True:
            if not batch:
                batch, state = [await self._queue.get()], None
                self._take_queued(batch)
            batch, state = await self._commit(batch, state)

    async def _commit(self, batch: _Batch, state: BatchState | None) -> tuple[_Batch, BatchState | None]:
        """Apply `batch` and answer its waiters. Whatever is queued when its write is sent becomes the next
        batch, returned with its state when that could be read along."""
        started = asyncio.get_running_loop().time()
        outcomes: Sequence[Result | ServiceUnavailable]
        upcoming: _Batch = []
        next_state: BatchState | None = None
        deliveries = [delivery for delivery, _ in batch]
        try:
            async with acquire(self._pool, self._acquire_timeout) as conn:
                if state is None:
                    state = await read_state(conn, deliveries)
                self._take_queued(upcoming)
                outcomes, next_state = await apply_and_read_ahead(
                    conn, deliveries, state, [delivery for delivery, _ in upcoming]
                )
        except Exception as exc:
            # Nothing was committed: every sender retries later. A bug must not acknowledge deliveries.
            outcomes = self._failed(exc, len(batch))
        finally:
            for _ in batch:
                self._queue.task_done()
        self._answer(batch, outcomes, started)
        return upcoming, next_state
