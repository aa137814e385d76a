"""Deleting old inbox rows (`sync-service prune-events`): their payloads hold emails and names.

A message id that is pruned is no longer recognised as a duplicate, so keep rows longer than any
sender retries (Better Auth hooks retry for seconds, Svix for days): a late retry would then be
re-evaluated, and the `updatedAt` ordering still keeps it from overwriting newer data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from sync_service import sql

_AGE = re.compile(r"\s*([0-9]+)\s*([smhd])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d` -> a positive timedelta; ValueError otherwise."""
    match = _AGE.fullmatch(text.lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not an age like 30d, 12h, 15m or 90s")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ValueError(f"{text!r} is too long ago") from None


async def cutoff_for(conn: asyncpg.Connection, older_than: timedelta) -> datetime:
    """Fixed once per run, so rows arriving meanwhile are never touched and the prune loop ends."""
    cutoff: datetime = await conn.fetchval(sql.PRUNE_CUTOFF, older_than)
    return cutoff


async def count_prunable(conn: asyncpg.Connection, cutoff: datetime, statuses: Sequence[str] | None) -> int:
    count: int = await conn.fetchval(sql.COUNT_PRUNABLE_EVENTS, cutoff, list(statuses) if statuses else None)
    return count


async def prune_events(
    conn: asyncpg.Connection, cutoff: datetime, statuses: Sequence[str] | None, *, chunk_size: int
) -> int:
    """Delete inbox rows received before `cutoff`, `chunk_size` per transaction; returns how many."""
    deleted = 0
    while True:
        if statuses:
            status = await conn.execute(sql.PRUNE_EVENTS_WITH_STATUS, cutoff, chunk_size, list(statuses))
        else:
            status = await conn.execute(sql.PRUNE_EVENTS, cutoff, chunk_size)
        count = int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"
        deleted += count
        if count < chunk_size:
            return deleted
