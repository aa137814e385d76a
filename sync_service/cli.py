"""The `sync-service` command (also `python -m sync_service`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sync_service.config import Settings, load_settings
from sync_service.errors import ConfigError, MigrationError


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

    serve = verbs.add_parser("serve", help="apply pending migrations and serve HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations first")
    serve.set_defaults(handler=_serve)

    migrate = verbs.add_parser("migrate", help="apply pending migrations (yoyo)")
    group = migrate.add_mutually_exclusive_group()
    group.add_argument("--rollback", type=int, metavar="N", help="roll back the newest N migrations")
    group.add_argument("--list", action="store_true", help="show each migration and whether it is applied")
    migrate.set_defaults(handler=_migrate)

    from sync_service.replay_options import DESCRIPTION as REPLAY_DESCRIPTION
    from sync_service.replay_options import add_arguments as add_replay_arguments

    replay = verbs.add_parser(
        "replay", help="re-apply webhook payloads from a JSON Lines file or the inbox",
        description=REPLAY_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_replay_arguments(replay)
    replay.set_defaults(handler=_replay, replay_parser=replay)
    return parser


def _migration_url(settings: Settings) -> str:
    import os

    from sync_service.config import parse_database_url

    override = os.environ.get("MIGRATIONS_DATABASE_URL", "").strip()
    if override:
        return parse_database_url(override, settings.environ).yoyo_url
    if settings.database is None:
        raise ConfigError("DATABASE_URL", "is not set (only `serve` starts an embedded PostgreSQL)")
    return settings.database.yoyo_url


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from sync_service import migrations

    url = _migration_url(settings)
    if args.list:
        for entry in migrations.status(url):
            print(f"{'applied' if entry.applied else 'pending'}  {entry.migration_id}")
        return 0
    if args.rollback is not None:
        done = migrations.rollback(url, args.rollback)
        print("rolled back: " + (", ".join(done) if done else "nothing"))
        return 0
    done = migrations.apply(url)
    print("applied: " + (", ".join(done) if done else "nothing (schema at head)"))
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from sync_service import replay

    return replay.main(args, settings, migration_url=_migration_url)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from sync_service import migrations
    from sync_service.logs import configure_logging

    configure_logging(settings.log_level)
    if not settings.webhook_secrets:
        raise ConfigError("WEBHOOK_SECRET", "is not set; give one or more whsec_... secrets")
    if settings.database is None:
        from sync_service.embedded import start_embedded_postgres

        url = start_embedded_postgres(settings.embedded_pg_dir)
        settings = settings.with_database(url)
        import os

        os.environ["DATABASE_URL"] = url  # workers build their settings from the environment
    assert settings.database is not None
    if not args.no_migrate:
        applied = migrations.apply(_migration_url(settings))
        if applied:
            print(f"sync-service: applied migrations {', '.join(applied)}", file=sys.stderr)
    if args.workers > 1:
        uvicorn.run(
            "sync_service.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
            log_config=None, server_header=False, timeout_graceful_shutdown=30,
        )  # fmt: skip
        return 0
    from sync_service.app import create_app

    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_config=None, server_header=False,
        timeout_graceful_shutdown=30,
    )  # fmt: skip
    return 0
