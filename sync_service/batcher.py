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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import asyncpg

from sync_service.database import acquire, is_unavailable
from sync_service.errors import DatabaseUnavailable, Overloaded, ServiceUnavailable
from sync_service.events import Delivery
from sync_service.ingest import BatchState, Result, apply_and_read_ahead, read_state

log = logging.getLogger(__name__)

BatchObserver = Callable[[int, float], None]
_Waiter = asyncio.Future[Result | ServiceUnavailable]
_Batch = list[tuple[Delivery, _Waiter]]


class GroupCommitter:
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
        self._pool = pool
        self._batch_size = batch_size
        self._queue: asyncio.Queue[tuple[Delivery, _Waiter]] = asyncio.Queue(queue_size)
        self._writer_count = writers
        self._timeout = timeout
        self._acquire_timeout = acquire_timeout
        self._on_batch = on_batch
        self._writers: list[asyncio.Task[None]] = []
        self._accepting = False

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._accepting = True
        self._writers = [
            asyncio.create_task(self._write_forever(), name=f"ingest-writer-{i}")
            for i in range(self._writer_count)
        ]

    async def close(self) -> None:
        """Stop taking deliveries, commit everything already queued, then stop the writers."""
        self._accepting = False
        await self._queue.join()
        for task in self._writers:
            task.cancel()
        for task in self._writers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._writers = []

    async def submit(self, delivery: Delivery) -> Result:
        """Wait for `delivery`'s commit and return its result; `ServiceUnavailable` when it cannot be."""
        if not self._accepting:
            raise Overloaded("shutting down")
        waiter: _Waiter = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((delivery, waiter))
        except asyncio.QueueFull:
            raise Overloaded("ingest queue is full") from None
        try:
            async with asyncio.timeout(self._timeout):
                outcome = await waiter
        except TimeoutError:
            # The writer skips a cancelled waiter. The delivery may still commit; the sender's retry is
            # then answered "duplicate".
            raise Overloaded("timed out waiting for the commit") from None
        if isinstance(outcome, ServiceUnavailable):
            raise outcome
        return outcome

    async def _write_forever(self) -> None:
        batch: _Batch = []
        state: BatchState | None = None
        while True:
            if not batch:
                batch, state = [await self._queue.get()], None
                self._take_queued(batch)
            batch, state = await self._commit(batch, state)

    def _take_queued(self, batch: _Batch) -> None:
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def _commit(self, batch: _Batch, state: BatchState | None) -> tuple[_Batch, BatchState | None]:
        """Apply `batch` and answer its waiters. Whatever is queued when its write is sent becomes the next
        batch, returned with its state when that could be read along."""
        loop = asyncio.get_running_loop()
        started = loop.time()
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
        except DatabaseUnavailable as exc:
            outcomes = [exc] * len(batch)
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("database failed during a batch", extra={"error": exc.__class__.__name__})
            else:
                log.exception("ingest batch failed", extra={"batch_size": len(batch)})
            # Nothing was committed: every sender retries later. A bug must not acknowledge deliveries.
            outcomes = [DatabaseUnavailable(exc.__class__.__name__)] * len(batch)
        finally:
            for _ in batch:
                self._queue.task_done()
        for (_, waiter), outcome in zip(batch, outcomes, strict=True):
            if not waiter.done():
                waiter.set_result(outcome)
        if self._on_batch is not None:
            self._on_batch(len(batch), loop.time() - started)
        return upcoming, next_state
