#!/usr/bin/env python3
"""What PostgreSQL spends per delivery in the ingest core, by plan cache mode and batch size.

The levers of plan choice and batch size, measured without HTTP: the ingest core (`apply_and_read_ahead`,
as the group commit calls it, reading each next batch along) on one connection, and the CPU time of that
connection's backend (from /proc, so PostgreSQL must run on this host), per delivery.

    .venv/bin/python scripts/bench_plans.py            # plan modes x batch sizes, then the growth test
    .venv/bin/python scripts/bench_plans.py --quick

1. Each plan cache mode at batches of 10 and 100, after 20,000 users and ANALYZE.
2. Growth: plans made after ANALYZE on 200 users (a young database), then 30,000 more deliveries
   (5% deletions) with autovacuum off for those tables, per chunk: a generic plan made on small
   statistics is kept as the tables grow; a custom plan is made for each batch.
3. Tombstones: batches of 10 that delete no one, after 20,000 users and 0, 10,000 or 40,000 tombstones
   (no ANALYZE, as in a young database): what a batch pays for the deletions ever made.
4. The floor: custom plans at batches of 1,000 and 2,000 (replay's batch size), after 20,000 users and
   ANALYZE: what writing one delivery costs PostgreSQL however many share a statement.

Every run is on a throwaway database of the server given (--database-url, else BENCH_DATABASE_URL, else
TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from bench.database import throwaway_database
from bench.procfs import cpu_seconds
from bench.workload import Workload

from sync_service.ingest.core import BatchState, apply_and_read_ahead
from sync_service.ingest.records import Delivery
from sync_service.ops import migrations
from sync_service.webhooks.events import Rules, parse_delivery

MODES = ("force_custom_plan", "auto", "force_generic_plan")
FLOOR_BATCHES = (1_000, 2_000)  # 10 and 100: section 1's custom row
RULES = Rules("uuid", timedelta(minutes=5))


def deliveries(workload: Workload, count: int, **shares: float) -> list[Delivery]:
    now = datetime.now(UTC)
    return [
        parse_delivery(e.message_id, e.body, RULES, received_at=now) for e in workload.events(count, **shares)
    ]


@contextlib.contextmanager
def migrated_database(server: str) -> Iterator[str]:
    with throwaway_database(server) as url:
        migrations.apply(url.replace("postgresql://", "postgresql+psycopg://", 1))
        yield url


async def apply_all(conn: asyncpg.Connection, batches: Sequence[Sequence[Delivery]]) -> None:
    state: BatchState | None = None
    for index, batch in enumerate(batches):
        upcoming = batches[index + 1] if index + 1 < len(batches) else ()
        _, state = await apply_and_read_ahead(conn, batch, state, upcoming)


def batched(items: Sequence[Delivery], size: int) -> list[Sequence[Delivery]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def connect(url: str, mode: str) -> tuple[asyncpg.Connection, int]:
    conn = await asyncpg.connect(url, server_settings={"plan_cache_mode": mode}, statement_cache_size=1024)
    return conn, await conn.fetchval("SELECT pg_backend_pid()")


async def by_mode(url: str, mode: str, batch: int, count: int) -> float:
    """Backend CPU us per delivery at `batch`, after 20,000 users and ANALYZE."""
    workload = Workload(seed=7)
    setup = await asyncpg.connect(url)
    await apply_all(setup, batched(deliveries(workload, 20_000, update_share=0.0), 1_000))
    await setup.execute("ANALYZE")
    await setup.close()
    conn, pid = await connect(url, mode)
    try:
        await apply_all(conn, batched(deliveries(workload, 20 * batch), batch))  # plans made and cached
        measured = deliveries(workload, count)
        started = cpu_seconds(pid)
        await apply_all(conn, batched(measured, batch))
        return (cpu_seconds(pid) - started) / count * 1e6
    finally:
        await conn.close()


async def growth(url: str, mode: str, chunks: int, chunk: int) -> list[float]:
    """Backend CPU us per delivery, chunk by chunk, from plans made on 200 analyzed users."""
    workload = Workload(seed=3)
    setup = await asyncpg.connect(url)
    for table in ("users", "webhook_events", "deleted_users"):
        await setup.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    await apply_all(setup, [deliveries(workload, 200, update_share=0.0)])
    await setup.execute("ANALYZE")
    await setup.close()
    conn, pid = await connect(url, mode)
    figures = []
    try:
        for _ in range(chunks):
            part = batched(deliveries(workload, chunk, delete_share=0.05), 10)
            started = cpu_seconds(pid)
            for batch in part:  # each batch reads its own state: no read-ahead across chunks
                await apply_and_read_ahead(conn, batch, None, ())
            figures.append((cpu_seconds(pid) - started) / chunk * 1e6)
    finally:
        await conn.close()
    return figures


async def with_tombstones(url: str, tombstones: int, count: int) -> float:
    """Backend CPU us per delivery at batches of 10, after 20,000 users and `tombstones` tombstones."""
    workload = Workload(seed=9)
    setup = await asyncpg.connect(url)
    await apply_all(setup, batched(deliveries(workload, 20_000, update_share=0.0), 1_000))
    tombstoned = "INSERT INTO deleted_users (id) SELECT gen_random_uuid()::text FROM generate_series(1, $1)"
    await setup.execute(tombstoned, tombstones)
    await setup.close()
    conn, pid = await connect(url, "force_custom_plan")
    try:
        await apply_all(conn, batched(deliveries(workload, 200), 10))
        measured = deliveries(workload, count)
        started = cpu_seconds(pid)
        await apply_all(conn, batched(measured, 10))
        return (cpu_seconds(pid) - started) / count * 1e6
    finally:
        await conn.close()


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url")
    parser.add_argument("--quick", action="store_true", help="fewer deliveries (coarser figures)")
    args = parser.parse_args(argv)
    server = (
        args.database_url
        or os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    count, chunks, chunk = (2_000, 3, 2_000) if args.quick else (6_000, 6, 5_000)
    floor_count = 8_000 if args.quick else 20_000  # several of the largest batches

    print("PostgreSQL backend CPU per delivery (us), ingest core, one connection, read-ahead on")
    print("1. after 20,000 users and ANALYZE")
    print(f"   {'plan_cache_mode':<20} {'batch 10':>9} {'batch 100':>10}")
    for mode in MODES:
        figures = []
        for batch in (10, 100):
            with migrated_database(server) as url:
                figures.append(await by_mode(url, mode, batch, count))
        print(f"   {mode:<20} {figures[0]:9.0f} {figures[1]:10.0f}", flush=True)
    print(f"2. plans made on 200 analyzed users, then {chunks} x {chunk:,} deliveries (batches of 10,")
    print("   5% deletions, autovacuum off for the tables), per chunk")
    for mode in MODES:
        with migrated_database(server) as url:
            figures = await growth(url, mode, chunks, chunk)
        print(f"   {mode:<20} " + " ".join(f"{figure:6.0f}" for figure in figures), flush=True)
    print("3. batches of 10 deleting no one, after 20,000 users and N tombstones (no ANALYZE)")
    for tombstones in (0, 10_000, 40_000):
        with migrated_database(server) as url:
            figure = await with_tombstones(url, tombstones, count)
        print(f"   {tombstones:>6,} tombstones {figure:9.0f}", flush=True)
    print(f"4. the floor: custom plans, {floor_count:,} deliveries after 20,000 users and ANALYZE")
    for batch in FLOOR_BATCHES:
        with migrated_database(server) as url:
            figure = await by_mode(url, "force_custom_plan", batch, floor_count)
        print(f"   batch {batch:>5,} {figure:9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
