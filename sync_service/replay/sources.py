"""Where replayed events come from: a JSON Lines file (or stdin, gzip by name) or the inbox table.

Both sources yield, in order, `ReplayEvent`s (a payload to re-apply) and `InvalidLine`s (a file line
that is not an event, reported with its number). Neither validates payloads: that is the ingest core's
job (`webhooks.events.parse_delivery`), done once whichever way an event arrives.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple, cast

import asyncpg
import msgspec

from sync_service import sql
from sync_service.replay.options import InboxFilter

# Lines are read in chunks on a worker thread, so a slow pipe on stdin never stalls the event loop
# while a target holds a transaction open.
_READ_CHUNK_LINES = 2_000
INBOX_PAGE_ROWS = 1_000


class ReplayEvent(NamedTuple):
    """One payload to re-apply (a tuple: a replay makes millions of them)."""

    line: int  # its line in the file; 0 for an inbox row
    payload: bytes
    original_id: str | None = None  # a file delivery's "id", an inbox row's message id
    user_id: str | None = None  # known for inbox rows; see `user_id_of` for payloads

    @property
    def position(self) -> str:
        """How reports name it: a line number, or an inbox message id."""
        return f"line {self.line}" if self.line else f"message {self.original_id}"


@dataclass(frozen=True, slots=True)
class InvalidLine:
    line: int
    reason: str
    raw: bytes = b""  # the line as it was read, for --failed-out (a re-run file must drop nothing)

    @property
    def position(self) -> str:
        return f"line {self.line}"


SourceItem = ReplayEvent | InvalidLine


class _LineShape(msgspec.Struct):
    """What a line must look like to be read at all. Anything else in it (e.g. `note`) is ignored."""

    payload: msgspec.Raw = msgspec.Raw(b"")  # empty: absent
    id: msgspec.Raw = msgspec.Raw(b"null")


class _IdOnly(msgspec.Struct):
    id: str | None = None


class _UserIdOnly(msgspec.Struct):
    data: _IdOnly | None = None


def parse_line(number: int, line: bytes) -> SourceItem | None:
    """One line: a bare payload, or a delivery `{"id": ..., "payload": {...}}`. None for a blank line."""
    text = line.strip()
    if not text:
        return None
    raw = line.rstrip(b"\r\n")
    if text[:1] != b"{":
        return InvalidLine(number, "not a JSON object", raw)
    try:
        shape = msgspec.json.decode(text, type=_LineShape)
    except msgspec.DecodeError as exc:
        return InvalidLine(number, f"not valid JSON ({exc})", raw)
    except RecursionError:
        return InvalidLine(number, "nested too deeply", raw)
    if not shape.payload:
        return ReplayEvent(number, text)
    payload = bytes(shape.payload)
    if payload[:1] != b"{":
        return InvalidLine(number, "payload must be a JSON object", raw)
    try:
        original_id = msgspec.json.decode(shape.id, type=str | None)
    except msgspec.ValidationError:
        return InvalidLine(number, "id must be a string", raw)
    return ReplayEvent(number, payload, original_id)


def user_id_of(event: ReplayEvent) -> str | None:
    """The payload's `data.id`, best effort, read only to keep one user's events on one lane."""
    if event.user_id is not None:
        return event.user_id
    try:
        data = _decode_user_id(event.payload).data  # one pass; everything but data.id is skipped
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return data.id if data is not None else None


_decode_user_id = msgspec.json.Decoder(_UserIdOnly).decode


def open_lines(path: str) -> IO[bytes]:
    """`-` is stdin; a name ending in `.gz` is read through gzip."""
    if path == "-":
        return sys.stdin.buffer
    if path.endswith(".gz"):
        return cast("IO[bytes]", gzip.open(path, "rb"))
    return open(path, "rb", buffering=1 << 20)


def count_lines(path: str) -> int | None:
    """Lines in a plain file, for the progress bar; None where counting would mean reading twice."""
    if path == "-" or path.endswith(".gz") or not Path(path).is_file():
        return None
    count = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


async def file_chunks(path: str) -> AsyncIterator[list[SourceItem]]:
    """The file's items, a few thousand lines at a time."""
    stream = open_lines(path)
    number = 0
    try:
        while lines := await asyncio.to_thread(_read_lines, stream):
            items: list[SourceItem] = []
            for line in lines:
                number += 1
                item = parse_line(number, line)
                if item is not None:
                    items.append(item)
            yield items
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _read_lines(stream: IO[bytes]) -> list[bytes]:
    lines = []
    for line in stream:
        lines.append(line)
        if len(lines) >= _READ_CHUNK_LINES:
            break
    return lines


async def inbox_chunks(conn: asyncpg.Connection, where: InboxFilter) -> AsyncIterator[list[SourceItem]]:
    """Matching inbox rows, oldest first, a page at a time (keyset on received_at, message_id): memory
    stays flat and each page starts at the cursor in the index, whatever the table's size."""
    cursor_at, cursor_id = where.since, ""
    while True:
        rows = await conn.fetch(
            sql.REPLAY_INBOX_PAGE,
            _or_none(where.statuses),
            _or_none(where.types),
            _or_none(where.user_ids),
            where.until,
            cursor_at,
            cursor_id,
            INBOX_PAGE_ROWS,
        )
        yield [
            ReplayEvent(0, _inbox_payload(payload), message_id, user_id)
            for message_id, user_id, _, payload in rows
        ]
        if len(rows) < INBOX_PAGE_ROWS:
            return
        cursor_id, cursor_at = rows[-1][0], rows[-1][2]


def _inbox_payload(stored: str) -> bytes:
    """An inbox row's payload as the sender's body. Rows written before `ingest.payloads` existed kept a
    payload jsonb refused as a JSON string of the body's text: that text is the body."""
    if stored[:1] == '"':
        return msgspec.json.decode(stored, type=str).encode()
    return stored.encode()


async def count_inbox(conn: asyncpg.Connection, where: InboxFilter) -> int:
    count: int = await conn.fetchval(
        sql.REPLAY_INBOX_COUNT,
        _or_none(where.statuses),
        _or_none(where.types),
        _or_none(where.user_ids),
        where.since,
        where.until,
    )
    return count


def _or_none(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values else None


def describe_file(path: str) -> str:
    return "stdin" if path == "-" else path
