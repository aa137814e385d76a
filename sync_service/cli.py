"""The `sync-service` command (also `python -m sync_service`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from types import FrameType
from typing import Any

from sync_service.config import DatabaseSettings, Settings, load_settings
from sync_service.errors import ConfigError, MigrationError
from sync_service.ingest.records import INBOX_STATUSES

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return int(args.handler(args, settings))
    except (ConfigError, MigrationError) as exc:
        print(f"sync-service: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sync-service", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    serve = verbs.add_parser(
        "serve",
        help="apply pending migrations and serve HTTP",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument(
        "--limit-concurrency", type=int, default=1000, help="requests in progress at once; beyond it, 503"
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations first")
    serve.set_defaults(handler=_serve)

    migrate = verbs.add_parser("migrate", help="apply pending migrations (yoyo)")
    group = migrate.add_mutually_exclusive_group()
    group.add_argument("--rollback", type=int, metavar="N", help="roll back the newest N migrations")
    group.add_argument("--list", action="store_true", help="show each migration and whether it is applied")
    migrate.set_defaults(handler=_migrate)

    prune = verbs.add_parser(
        "prune-events",
        help="delete old rows from the webhook inbox (their payloads hold emails and names)",
        description="Delete inbox rows received longer ago than --older-than, in bounded chunks.",
    )
    prune.add_argument(
        "--older-than", required=True, type=_age, metavar="AGE", help="e.g. 30d, 12h, 15m, 90s"
    )
    prune.add_argument(
        "--status", action="append", choices=INBOX_STATUSES, help="only rows with this outcome (repeatable)"
    )
    prune.add_argument("--chunk-size", type=_positive, default=5_000, help="rows deleted per transaction")
    prune.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    prune.set_defaults(handler=_prune_events)

    check = verbs.add_parser(
        "check-config",
        help="check the environment, the database, the JWKS and the webhook secrets; one-screen report",
    )
    check.set_defaults(handler=_check_config)

    from sync_service.replay.options import DESCRIPTION as REPLAY_DESCRIPTION
    from sync_service.replay.options import add_arguments as add_replay_arguments

    replay = verbs.add_parser(
        "replay", help="re-apply webhook payloads from a JSON Lines file or the inbox",
        description=REPLAY_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_replay_arguments(replay)
    replay.set_defaults(handler=_replay, replay_parser=replay)
    _add_backfill(verbs)
    return parser


def _add_backfill(verbs: Any) -> None:
    from sync_service.backfill.options import DESCRIPTION as BACKFILL_DESCRIPTION
    from sync_service.backfill.options import add_arguments as add_backfill_arguments

    backfill = verbs.add_parser(
        "backfill", help="bring users up to date from Better Auth's own PostgreSQL database; report drift",
        description=BACKFILL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_backfill_arguments(backfill)
    backfill.set_defaults(handler=_backfill)


def _age(text: str) -> timedelta:
    from sync_service.ops.pruning import parse_age

    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _migration_url(settings: Settings) -> tuple[str, str]:
    """Where migrations run, and the variable that said so (for the error an operator reads)."""
    if settings.migrations_database is not None:
        return settings.migrations_database.yoyo_url, "MIGRATIONS_DATABASE_URL"
    if settings.database is None:
        raise ConfigError("DATABASE_URL", "is not set (only `serve` starts an embedded PostgreSQL)")
    return settings.database.yoyo_url, "DATABASE_URL"


@contextlib.contextmanager
def _with_operator_database(settings: Settings) -> Iterator[Settings]:
    """`settings` pointed at `_operator_database`: DATABASE_URL, else the embedded server."""
    with _operator_database(settings) as database:
        yield dataclasses.replace(settings, database=database)


@contextlib.contextmanager
def _operator_database(settings: Settings) -> Iterator[DatabaseSettings]:
    """The database an operator command works on: DATABASE_URL, else the embedded one `serve` created
    (joined while `serve` runs, started and stopped again otherwise)."""
    if settings.database is not None:
        yield settings.database
        return
    from sync_service.ops.embedded import embedded_postgres, is_initialised

    if not is_initialised(settings.embedded_pg_dir):
        raise ConfigError(
            "DATABASE_URL", "is not set, and no embedded PostgreSQL exists yet (`serve` creates one)"
        )
    with embedded_postgres(settings.embedded_pg_dir) as url:
        database = settings.with_database(url).database
        assert database is not None
        yield database


def _prune_events(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    import asyncpg

    from sync_service.ops import pruning
    from sync_service.ops.logs import configure_logging

    configure_logging(settings.log_level)

    async def run(database: DatabaseSettings) -> str:
        conn = await asyncpg.connect(database.asyncpg_dsn, timeout=database.connect_timeout)
        try:
            cutoff = await pruning.cutoff_for(conn, args.older_than)
            which = f" with status {', '.join(args.status)}" if args.status else ""
            when = cutoff.isoformat(timespec="seconds")
            if args.dry_run:
                count = await pruning.count_prunable(conn, cutoff, args.status)
                return f"would delete {count} events{which} received before {when}"
            count = await pruning.prune_events(conn, cutoff, args.status, chunk_size=args.chunk_size)
            return f"deleted {count} events{which} received before {when}"
        finally:
            await conn.close()

    with _operator_database(settings) as database:
        try:
            print(asyncio.run(run(database)))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            print(
                f"sync-service: prune-events failed: {type(exc).__name__}: {_first_line(exc)}",
                file=sys.stderr,
            )
            return 1
    return 0


def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from sync_service.ops import config_check
    from sync_service.ops.logs import configure_logging

    configure_logging("WARNING")  # the report is the output; an embedded start says nothing
    with contextlib.ExitStack() as stack:
        if settings.database is not None:
            database: DatabaseSettings | None = settings.database
            label = settings.database.redacted
        else:
            from sync_service.ops.embedded import is_initialised

            folder = settings.embedded_pg_dir
            if is_initialised(folder):
                database = stack.enter_context(_operator_database(settings))
                label = f"embedded PostgreSQL in {folder}"
            else:
                database, label = (
                    None,
                    f"DATABASE_URL not set; `serve` will create an embedded PostgreSQL in {folder}",
                )
        checks = asyncio.run(config_check.run_checks(settings, database, label))
    print(config_check.format_report(checks))
    return 1 if any(c.level is config_check.Level.FAIL for c in checks) else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    with _with_operator_database(settings) as settings:
        return _migrate_on(args, settings)


def _migrate_on(args: argparse.Namespace, settings: Settings) -> int:
    from sync_service.ops import migrations

    url, variable = _migration_url(settings)
    if args.list:
        for entry in migrations.status(url, variable=variable):
            print(f"{'applied' if entry.applied else 'pending'}  {entry.migration_id}")
        return 0
    if args.rollback is not None:
        done = migrations.rollback(url, args.rollback, variable=variable)
        print("rolled back: " + (", ".join(done) if done else "nothing"))
        return 0
    done = migrations.apply(url, variable=variable)
    print("applied: " + (", ".join(done) if done else "nothing (schema at head)"))
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from sync_service.replay import command as replay

    if not (args.direct or args.inbox):  # --url alone needs no database
        return replay.main(args, settings, migration_url=_migration_url)
    with _with_operator_database(settings) as settings:
        return replay.main(args, settings, migration_url=_migration_url)


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    from sync_service.backfill import command as backfill

    with _with_operator_database(settings) as settings:
        return backfill.main(args, settings, migration_url=_migration_url)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from sync_service.ops import migrations
    from sync_service.ops.logs import configure_logging

    configure_logging(settings.log_level)
    if not settings.webhook_secrets:
        raise ConfigError("WEBHOOK_SECRET", "is not set; give one or more whsec_... secrets")
    with contextlib.ExitStack() as stack:
        # From here on SIGTERM unwinds this block (stopping an embedded PostgreSQL) instead of killing
        # the process where it stands. While serving, uvicorn takes the signal over, shuts down
        # gracefully, then raises it again, which lands here.
        stack.enter_context(_sigterm_exits())
        if settings.database is None:
            from sync_service.ops.embedded import embedded_postgres

            url = stack.enter_context(embedded_postgres(settings.embedded_pg_dir))
            settings = settings.with_database(url)
            os.environ["DATABASE_URL"] = url  # workers build their settings from the environment
            # The one line an operator needs to look inside: psql, a GUI, or DATABASE_URL for
            # `replay`/`backfill` (which also find the embedded server by themselves while it runs).
            log.info(f"embedded PostgreSQL: psql '{url}'", extra={"database_url": url})
        assert settings.database is not None
        if not args.no_migrate:
            url, variable = _migration_url(settings)
            applied = migrations.apply(url, variable=variable)
            if applied:
                log.info(f"applied migrations {', '.join(applied)}", extra={"migrations": applied})
        server_options: dict[str, Any] = {
            "host": args.host,
            "port": args.port,
            "log_config": None,
            "server_header": False,  # no version for scanners
            "timeout_graceful_shutdown": 30,
            "http": "sync_service.http_protocol:DeadlineHttpToolsProtocol",  # slow clients are cut off
            "limit_concurrency": args.limit_concurrency,  # beyond it uvicorn answers 503 at once
        }
        if args.workers > 1:
            uvicorn.run(
                "sync_service.app:create_app_from_environment",
                factory=True,
                workers=args.workers,
                **server_options,
            )
            return 0
        from sync_service.app import create_app

        uvicorn.run(create_app(settings), **server_options)
    return 0


class _Terminated(SystemExit):
    """SIGTERM: a requested, orderly stop (exit status 0)."""


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    def _exit(_signum: int, _frame: FrameType | None) -> None:
        raise _Terminated(0)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    except _Terminated:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
