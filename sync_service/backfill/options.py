"""The arguments of `sync-service backfill`, checked against the settings into one `BackfillOptions`.

Kept apart from the backfill machinery so that building the CLI parser imports nothing heavy.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from sync_service.config import DatabaseSettings, Settings
from sync_service.errors import ConfigError
from sync_service.replay.options import bounded_int
from sync_service.webhooks.events import Rules

SOURCE_URL_VARIABLE = "BETTER_AUTH_DATABASE_URL"

DESCRIPTION = f"""\
Bring `users` up to date with Better Auth's own user table on PostgreSQL, or (--dry-run) report how far
it has drifted. Each row is applied through the ingest core as a `user.updated` event whose message id
is derived from the row's id and updatedAt: a rerun is all `duplicate`, a newer webhook is never
overwritten (`stale`), a deleted (tombstoned) user stays deleted. Safe while the service runs.

Drift (--dry-run, nothing written): missing (in Better Auth, not here), different (both, fields differ),
extra (here, not in Better Auth), rejected (invalid per the service's rules); listed by user id.

--delete-missing deletes the extra users as a `user.deleted` webhook would (tombstone, erasure), only
after the whole source was read, and refuses (exit 2, nothing deleted) when the source table is empty or
more than --max-delete-fraction of `users` would go, unless --force.

The source URL may come from {SOURCE_URL_VARIABLE} instead of the command line (keeps the password out
of `ps` and cron files). It is read through PgBouncer as well (no prepared statement cache for
PgBouncer/-pooler hosts, as for DATABASE_URL).

Exit status: 0 all rows through (--dry-run: no drift); 1 some rows rejected, conflicting or failed, or
the run stopped early; 2 usage, configuration or connection error, a missing table or column, or a
refused --delete-missing; 3 (--dry-run only) drift found, of any kind. Every run ends with one line on stderr,
`backfill: drift=N missing=N different=N extra=N rejected=N`, for monitors.
"""


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    source: DatabaseSettings  # Better Auth's database
    table: str
    database: DatabaseSettings  # ours (DATABASE_URL)
    rules: Rules  # the service's validation settings: a row is checked as its webhook would be
    dry_run: bool
    delete_missing: bool
    max_delete_fraction: float
    force: bool
    as_json: bool
    page_size: int
    batch_size: int
    connections: int
    migrate: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--better-auth-database-url", metavar="URL",
        help=f"Better Auth's PostgreSQL database (default: ${SOURCE_URL_VARIABLE})",
    )  # fmt: skip
    parser.add_argument(
        "--table", default="user", metavar="NAME",
        help='the user table, TABLE or SCHEMA.TABLE (default "user"; Better Auth\'s user.modelName)',
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="report the drift; write nothing")
    parser.add_argument(
        "--delete-missing", action="store_true", help="delete the users Better Auth no longer has (tombstone)"
    )
    parser.add_argument(
        "--max-delete-fraction", type=_fraction, default=0.1, metavar="F",
        help="--delete-missing refuses when more than this share of users would go (default 0.1)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="--delete-missing: delete past the fraction")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations first")
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument("--page-size", type=bounded_int(100, 50_000), default=5_000, metavar="N",
                        help="source rows per page (default 5000)")  # fmt: skip
    tuning.add_argument("--batch-size", type=bounded_int(1, 10_000), default=2_000, metavar="N",
                        help="events per transaction (default 2000)")  # fmt: skip
    tuning.add_argument("--connections", type=bounded_int(1, 32), default=2, metavar="N",
                        help="connections applying batches in parallel (default 2)")  # fmt: skip


def resolve(args: argparse.Namespace, settings: Settings) -> BackfillOptions:
    url = (args.better_auth_database_url or settings.better_auth_database_url or "").strip()
    if not url:
        raise ConfigError("--better-auth-database-url", f"is required (or set {SOURCE_URL_VARIABLE})")
    try:
        source = settings.parse_database_url(url, SOURCE_URL_VARIABLE)
    except ConfigError as exc:
        raise ConfigError("--better-auth-database-url", exc.problem) from None
    if settings.database is None:
        raise ConfigError("DATABASE_URL", "is not set; backfill writes to it")
    if args.force and not args.delete_missing:
        raise ConfigError("--force", "only applies to --delete-missing")
    return BackfillOptions(
        source=source,
        table=args.table,
        database=settings.database,
        rules=Rules.from_settings(settings),
        dry_run=args.dry_run,
        delete_missing=args.delete_missing,
        max_delete_fraction=args.max_delete_fraction,
        force=args.force,
        as_json=args.json,
        page_size=args.page_size,
        batch_size=args.batch_size,
        connections=args.connections,
        migrate=not args.dry_run and not args.no_migrate,
    )


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value
