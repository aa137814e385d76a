"""`sync-service backfill`'s source: Better Auth's own user table on PostgreSQL, read in keyset pages.

The table and its columns are looked up in the catalog (Better Auth's migrations name them in camelCase,
Drizzle and Prisma schemas often in snake_case), and the page query is built from the names the catalog
returned, each quoted as an identifier: nothing the operator typed is pasted into SQL.

Rows come in byte order of their id as text (PostgreSQL's "C" collation, which is also Python's `str`
order), the order the other side of the reconciliation (our `users`) is read in, so the two can be merged
page by page with flat memory. A uuid id column (Better Auth's `generateId: "uuid"`) and a text column
whose collation is already C keep that order on their own index; any other needs a sort per page.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
import msgspec

from sync_service import sql

DEFAULT_TABLE = "user"
_UUID_CHARS = frozenset("0123456789abcdef-")


class SourceError(Exception):
    """The source table cannot be read as a Better Auth user table: one line, naming what is missing."""


# Each field the event needs: the column names looked for, in order (Better Auth's own first).
_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "email": ("email",),
    "emailVerified": ("emailVerified", "email_verified"),
    "name": ("name",),
    "image": ("image",),
    "createdAt": ("createdAt", "created_at"),
    "updatedAt": ("updatedAt", "updated_at"),
}
_OPTIONAL = frozenset({"name", "image"})  # absent columns read as null, as absent fields in a webhook
_TIMESTAMPS = frozenset({"timestamptz", "timestamp"})


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def split_table_name(text: str) -> tuple[str | None, str]:
    """`user`, `auth.user`, `"My Schema"."User"`: (schema or None, table), unquoted."""
    parts: list[str] = []
    current, quoted, i = "", False, 0
    while i < len(text):
        char = text[i]
        if quoted:
            if char == '"' and text[i + 1 : i + 2] == '"':
                current, i = current + '"', i + 2
                continue
            if char == '"':
                quoted = False
            else:
                current += char
        elif char == '"':
            quoted = True
        elif char == ".":
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    parts.append(current)
    if quoted or len(parts) > 2 or not all(parts):
        raise SourceError(f"--table {text!r}: expected TABLE or SCHEMA.TABLE")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


class SourceRow(msgspec.Struct, frozen=True, gc=False):
    """One user as Better Auth would send it in a webhook's `data` (dates as Better Auth formats them)."""

    id: str
    email: str | None
    emailVerified: bool | None
    name: str | None
    image: str | None
    createdAt: str | None
    updatedAt: str | None


class _Event(msgspec.Struct, frozen=True, gc=False):
    type: str
    timestamp: str | None
    data: SourceRow


_ENCODE = msgspec.json.Encoder().encode


def event_body(row: SourceRow) -> bytes:
    """The `user.updated` webhook Better Auth would send for this row. Its timestamp is the row's
    updatedAt, so the same row always gives the same bytes."""
    return _ENCODE(_Event("user.updated", row.updatedAt, row))


def message_id(row: SourceRow) -> str:
    """Derived from (id, updatedAt): a rerun over an unchanged row is a `duplicate`; a changed row
    (a newer updatedAt) is a new message."""
    key = f"{row.id}\x00{row.updatedAt}".encode()
    return "backfill-" + hashlib.sha256(key).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class SourceTable:
    label: str  # schema.table as found, for messages
    page_first: str
    page_next: str
    count: str
    present: str  # which of a list of ids are in the table (re-checked before a deletion)
    id_is_uuid: bool

    async def pages(self, conn: asyncpg.Connection, page_size: int) -> AsyncIterator[list[SourceRow]]:
        """Every row, in pages of `page_size`, in byte order of the id; never two pages in memory."""
        records = await conn.fetch(self.page_first, page_size)
        last: str | None = None
        while records:
            rows = [SourceRow(*record) for record in records]
            for row in rows:
                if last is not None and not last < row.id:
                    raise SourceError(
                        f"{self.label}: ids do not come in byte order ({last!r} before {row.id!r})"
                    )
                last = row.id
            yield rows
            if len(records) < page_size:
                return
            records = await conn.fetch(self.page_next, last, page_size)

    async def present_ids(self, conn: asyncpg.Connection, ids: Sequence[str]) -> set[str]:
        if self.id_is_uuid:
            # Only a canonical uuid can be in a uuid column (and `::uuid` would fail on anything else).
            ids = [i for i in ids if len(i) == 36 and _UUID_CHARS.issuperset(i)]
        if not ids:
            return set()
        return {record[0] for record in await conn.fetch(self.present, list(ids))}


async def open_table(conn: asyncpg.Connection, table: str) -> SourceTable:
    """Find `table` (TABLE or SCHEMA.TABLE, search_path as PostgreSQL resolves it) and its columns."""
    schema, name = split_table_name(table)
    found = await conn.fetchrow(sql.BACKFILL_FIND_TABLE, schema, name)
    if found is None:
        where = f"schema {schema!r}" if schema else "the search_path (" + (
            await conn.fetchval(sql.BACKFILL_SEARCH_PATH)
        ) + ")"  # fmt: skip
        raise SourceError(f"no table {name!r} in {where}: give Better Auth's user table with --table")
    oid, found_schema, found_name = found["oid"], found["nspname"], found["relname"]
    label = f"{quote_ident(found_schema)}.{quote_ident(found_name)}"
    columns = {r["attname"]: r for r in await conn.fetch(sql.BACKFILL_TABLE_COLUMNS, oid)}
    chosen: dict[str, asyncpg.Record | None] = {}
    for field, candidates in _FIELDS.items():
        column = next((columns[c] for c in candidates if c in columns), None)
        if column is None and field not in _OPTIONAL:
            looked = ", ".join(quote_ident(c) for c in candidates)
            raise SourceError(f"table {label} has no column for {field} (looked for {looked})")
        chosen[field] = column
    return _build(label, chosen, c_collation=await conn.fetchval(sql.BACKFILL_DEFAULT_COLLATION_IS_C))


def _build(label: str, chosen: dict[str, asyncpg.Record | None], *, c_collation: bool) -> SourceTable:
    select: list[str] = []
    for field, column in chosen.items():
        if column is None:
            select.append("NULL::text")
            continue
        ident, typname = quote_ident(column["attname"]), column["typname"]
        if field in ("createdAt", "updatedAt"):
            if typname not in _TIMESTAMPS:
                raise SourceError(
                    f"table {label} column {ident} is {column['type']}; expected timestamptz or timestamp"
                )
            # A `timestamp` without time zone is taken as UTC (what Prisma and Drizzle store).
            moment = f"{ident} AT TIME ZONE 'UTC'" if typname == "timestamptz" else ident
            select.append(sql.BACKFILL_ISO_MILLISECONDS.format(moment=moment))
        elif field == "emailVerified":
            if typname != "bool":
                raise SourceError(f"table {label} column {ident} is {column['type']}; expected boolean")
            select.append(ident)
        else:
            select.append(f"{ident}::text")
    id_column = chosen["id"]
    assert id_column is not None
    ident = quote_ident(id_column["attname"])
    id_is_uuid = id_column["typname"] == "uuid"
    collation = id_column["collation"]
    if id_is_uuid:
        # uuid order is byte order of its canonical (lower-case hex) text: the primary key serves it.
        key, cast, array = ident, "uuid", "uuid[]"
        present_key = ident
    elif id_column["typname"] in ("text", "varchar", "bpchar") and (
        collation in ("C", "POSIX") or (collation == "default" and c_collation)
    ):
        key, cast, array, present_key = ident, "text", "text[]", ident
    elif id_column["typname"] in ("text", "varchar", "bpchar"):
        key, cast, array, present_key = f'{ident} COLLATE "C"', "text", "text[]", ident
    else:  # numeric ids (Better Auth's useNumberId) and anything else: ordered as text
        key, cast, array = f'({ident})::text COLLATE "C"', "text", "text[]"
        present_key = f"({ident})::text"
    parts = {"columns": ", ".join(select), "table": label, "key": key, "id": ident}
    return SourceTable(
        label=label,
        page_first=sql.BACKFILL_SOURCE_FIRST_PAGE.format(**parts),
        page_next=sql.BACKFILL_SOURCE_NEXT_PAGE.format(**parts, cast=cast),
        count=sql.BACKFILL_SOURCE_COUNT.format(**parts),
        present=sql.BACKFILL_SOURCE_PRESENT.format(**parts, present_key=present_key, array=array),
        id_is_uuid=id_is_uuid,
    )
