"""Requests that arrive together share one database round trip.

A request puts its item on a bounded queue and waits for its own result. A few worker tasks each take
whatever is queued (up to `batch_size`), run it on one pooled connection and hand each waiter its
result. While one batch waits on PostgreSQL the next one fills up, so the batch size follows the load by
itself and an idle service still answers a lone request at once. An item is only sent to PostgreSQL
after its request arrived, so a batch never answers from a state older than the request.

Backpressure: a full queue, or an item still unanswered after `timeout`, is `Overloaded` (503 with
Retry-After) instead of letting memory or latency grow. A database failure, or a bug, answers every item
of its batch `DatabaseUnavailable`: nothing half-done is ever acknowledged.

One loop serves both users: the user reads hand it a function that runs one batch
(`users.reader.UserReader`); the group commit of webhook deliveries hands it a `ReadAhead`, whose write of
one batch also reads the state of the next (`ingest.group_commit.GroupCommitter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from sync_service.database import acquire, is_unavailable
from sync_service.errors import DatabaseUnavailable, Overloaded, ServiceUnavailable

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
StateT = TypeVar("StateT")

BatchObserver = Callable[[int, float], None]
Waiter = asyncio.Future[ResultT | ServiceUnavailable]
Batch = list[tuple[ItemT, Waiter[ResultT]]]

ApplyBatch = Callable[[asyncpg.Connection, Sequence[ItemT]], Awaitable[Sequence[ResultT]]]
"""One batch on one connection: one result per item, in order."""


@dataclass(frozen=True, slots=True)
class ReadAhead(Generic[ItemT, ResultT, StateT]):
    """Batches whose write also reads what the next batch needs, so that under load a batch costs one round
    trip instead of two.

    `read(conn, items)` reads the state of a batch that nothing read ahead (the first on a connection);
    `apply(conn, items, state, upcoming)` runs `items` against `state` and returns their results and the
    state of `upcoming` (what was queued when the write went out, the next batch)."""

    read: Callable[[asyncpg.Connection, Sequence[ItemT]], Awaitable[StateT]]
    apply: Callable[
        [asyncpg.Connection, Sequence[ItemT], StateT, Sequence[ItemT]],
        Awaitable[tuple[Sequence[ResultT], StateT]],
    ]


@dataclass(frozen=True, slots=True)
class Labels:
    """How a batcher names its worker tasks and logs, and what its 503s say."""

    name: str  # "ingest": "ingest batch failed"
    worker: str  # task names: "ingest-writer-0"
    queue_full: str
    timed_out: str


class Batcher(Generic[ItemT, ResultT]):
    """The queue, the workers, the deadlines and the failure policy, around `work`: an `ApplyBatch`
    function, or a `ReadAhead` pair."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        work: ApplyBatch[ItemT, ResultT] | ReadAhead[ItemT, ResultT, Any],
        *,
        labels: Labels,
        batch_size: int,
        queue_size: int,
        workers: int,
        timeout: float,
        acquire_timeout: float,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._pool = pool
        self._work = work
        self._labels = labels
        self._batch_size = batch_size
        self._queue: asyncio.Queue[tuple[ItemT, Waiter[ResultT]]] = asyncio.Queue(queue_size)
        self._worker_count = workers
        self._timeout = timeout
        self._acquire_timeout = acquire_timeout
        self._on_batch = on_batch
        self._workers: list[asyncio.Task[None]] = []
        self._accepting = False

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._accepting = True
        self._workers = [
            asyncio.create_task(self._work_forever(), name=f"{self._labels.worker}-{i}")
            for i in range(self._worker_count)
        ]

    async def close(self) -> None:
        """Stop taking items, answer everything already queued, then stop the workers."""
        self._accepting = False
        await self._queue.join()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []

    async def submit(self, item: ItemT) -> ResultT:
        """Wait for `item`'s batch and return its result; `ServiceUnavailable` when it cannot be had."""
        if not self._accepting:
            raise Overloaded("shutting down")
        loop = asyncio.get_running_loop()
        waiter: Waiter[ResultT] = loop.create_future()
        try:
            self._queue.put_nowait((item, waiter))
        except asyncio.QueueFull:
            raise Overloaded(self._labels.queue_full) from None
        # A timer that answers the waiter, cheaper than `asyncio.timeout` (no task cancellation). The worker
        # skips a waiter answered this way; the item itself may still be applied later.
        deadline = loop.call_later(self._timeout, self._expire, waiter)
        try:
            outcome = await waiter
        finally:
            deadline.cancel()
        if isinstance(outcome, ServiceUnavailable):
            raise outcome
        return outcome

    def _expire(self, waiter: Waiter[ResultT]) -> None:
        if not waiter.done():
            waiter.set_result(Overloaded(self._labels.timed_out))

    async def _work_forever(self) -> None:
        batch: Batch[ItemT, ResultT] = []
        while True:
            if not batch:
                batch = [await self._queue.get()]
                self._take_queued(batch)
            batch = await self._serve(batch)

    def _take_queued(self, batch: Batch[ItemT, ResultT]) -> None:
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def _serve(self, batch: Batch[ItemT, ResultT]) -> Batch[ItemT, ResultT]:
        """Run `batch`, then whatever queued meanwhile, until the queue is empty, on one connection.

        The connection is held from batch to batch while there is work: taking one from the pool and giving
        it back each cost the worker a pass of the event loop (asyncpg runs both in tasks of their own),
        which under load is milliseconds of every waiter's latency. After a failure the connection goes
        back (the pool discards a broken one) and the next batch takes a fresh one.

        With a `ReadAhead`, what is queued when a write goes out becomes the next batch, whose state that
        write reads along. Returns what was taken from the queue but not run, after a failure (for
        `_work_forever` to serve next)."""
        loop = asyncio.get_running_loop()
        work = self._work
        state: Any = None  # the read-ahead state of `batch`; None: not read yet
        upcoming: Batch[ItemT, ResultT] = []
        started = loop.time()
        try:
            async with acquire(self._pool, self._acquire_timeout) as conn:
                while batch:
                    items = [item for item, _ in batch]
                    upcoming = []
                    if isinstance(work, ReadAhead):
                        if state is None:
                            state = await work.read(conn, items)
                        self._take_queued(upcoming)
                        outcomes, state = await work.apply(conn, items, state, [item for item, _ in upcoming])
                    else:
                        outcomes = await work(conn, items)
                    self._settle(batch, outcomes, started)
                    batch, started = upcoming, loop.time()
                    if not batch:
                        # Items may have come in during the round trip without being read along: they start
                        # a batch of their own (its state read first) on the same connection.
                        state = None
                        self._take_queued(batch)
        except Exception as exc:
            # Nothing of `batch` is answered as done: every sender retries later. A bug must not acknowledge.
            self._settle(batch, self._failed(exc, len(batch)), started)
            return upcoming
        return []

    def _failed(self, exc: Exception, count: int) -> list[ServiceUnavailable]:
        """What each of `count` items is answered when their batch raised `exc` (call it in `except`)."""
        if isinstance(exc, DatabaseUnavailable):
            return [exc] * count
        if is_unavailable(exc):
            log.warning("database failed during a batch", extra={"error": exc.__class__.__name__})
        else:
            log.exception(f"{self._labels.name} batch failed", extra={"batch_size": count})
        return [DatabaseUnavailable(exc.__class__.__name__)] * count

    def _settle(
        self, batch: Batch[ItemT, ResultT], outcomes: Sequence[ResultT | ServiceUnavailable], started: float
    ) -> None:
        """Mark `batch` done on the queue (`close` waits for that) and answer each waiter still waiting."""
        for _ in batch:
            self._queue.task_done()
        for (_, waiter), outcome in zip(batch, outcomes, strict=True):
            if not waiter.done():
                waiter.set_result(outcome)
        if self._on_batch is not None:
            self._on_batch(len(batch), asyncio.get_running_loop().time() - started)
