"""Users as the read API shows them: the row from PostgreSQL, snake_case JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import msgspec

from sync_service import sql

# Better Auth's own date format (UTC, milliseconds, "Z"), so the frontend sees the values it sent.
# (`extra_json_schema["extra"]` is how Litestar takes extra OpenAPI schema keys from a msgspec field.)
IsoDateTime = Annotated[
    str,
    msgspec.Meta(examples=["2026-11-27T11:58:53.300Z"], extra_json_schema={"extra": {"format": "date-time"}}),
]


class User(msgspec.Struct, frozen=True, kw_only=True):
    """`{"id", "email", "email_verified", "name", "image", "created_at", "updated_at"}`."""

    id: str
    email: str
    email_verified: bool
    name: str | None
    image: str | None
    created_at: IsoDateTime
    updated_at: IsoDateTime


async def fetch_user(conn: asyncpg.Connection, user_id: str) -> User | None:
    row = await conn.fetchrow(sql.SELECT_USER, user_id)
    if row is None:
        return None
    return User(
        id=row["id"],
        email=row["email"],
        email_verified=row["email_verified"],
        name=row["name"],
        image=row["image"],
        created_at=iso_millis(row["created_at"]),
        updated_at=iso_millis(row["updated_at"]),
    )


def iso_millis(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
