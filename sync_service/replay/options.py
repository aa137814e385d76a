"""The arguments of `sync-service replay`, checked against the settings into one `Options`.

Kept apart from the replay machinery so that building the CLI parser imports nothing heavy.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sync_service.config import DatabaseSettings, Settings
from sync_service.errors import ConfigError
from sync_service.ingest.records import INBOX_STATUSES
from sync_service.webhooks.events import Rules

DESCRIPTION = """\
Re-apply webhook payloads (the same as scripts/replay_webhooks.py).

Source: a JSON Lines file (`-` for stdin, gzip by name) or the inbox table with filters.
Target: `--direct` (the ingest core, on DATABASE_URL) or `--url` (signed POSTs to a running service).

Message ids. By default each event gets an id derived from its payload (`rpl_` + SHA-256), so replaying
the same input twice is idempotent: the second run is all `duplicate` and writes nothing, and a
`rejected` event replayed after a fix is re-evaluated under the same id. `--keep-ids` uses the event's
own id (a file delivery's `id`, an inbox row's message id) where it has one; `--random-ids` gives every
event a new id, so everything is evaluated again (an identical row then comes back `stale`).

Conflicts (an email held by another user id) can be caused by replaying users in parallel out of their
original order (an email swap), so they are retried at the end of the run, up to three passes.

Exit status: 0 when every event ended applied, duplicate, stale or ignored; 1 when any was rejected,
conflicting or failed (or the run stopped early); 2 on a usage or configuration error.
"""

WEBHOOK_PATH = "/webhooks/better-auth"


@dataclass(frozen=True, slots=True)
class InboxFilter:
    statuses: Sequence[str] | None
    types: Sequence[str] | None
    user_ids: Sequence[str] | None
    since: datetime  # received_at, inclusive
    until: datetime  # received_at, exclusive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("source (a FILE or --inbox)")
    source.add_argument(
        "file", nargs="?", metavar="FILE",
        help='JSON Lines: one payload, or one {"id": ..., "payload": {...}} delivery, per line; '
        "- for stdin; *.gz is gunzipped",
    )  # fmt: skip
    source.add_argument("--inbox", action="store_true", help="replay rows of the webhook_events table")
    source.add_argument(
        "--inbox-database-url", metavar="URL", help="the database whose inbox is read (default: DATABASE_URL)"
    )  # fmt: skip
    source.add_argument(
        "--status", dest="statuses", action="extend", type=_statuses, metavar="STATUS",
        help=f"inbox rows with this status ({', '.join(INBOX_STATUSES)}); repeat or comma-separate",
    )  # fmt: skip
    source.add_argument(
        "--type", dest="types", action="extend", type=_csv, metavar="TYPE",
        help="inbox rows of this event type, e.g. user.updated",
    )  # fmt: skip
    source.add_argument(
        "--user-id", dest="user_ids", action="extend", type=_csv, metavar="ID",
        help="inbox rows of this user id",
    )  # fmt: skip
    source.add_argument(
        "--since", type=parse_when, metavar="WHEN",
        help="inbox rows received at or after WHEN (ISO 8601, a date, or an age: 30m, 12h, 7d)",
    )  # fmt: skip
    source.add_argument(
        "--until", type=parse_when, metavar="WHEN",
        help="inbox rows received before WHEN (at the latest, when the run starts)",
    )  # fmt: skip

    target = parser.add_argument_group("target (one of --url, --direct)")
    exclusive = target.add_mutually_exclusive_group(required=True)
    exclusive.add_argument(
        "--url", metavar="URL",
        help=f"sign and POST each event to this service (a bare origin gets {WEBHOOK_PATH})",
    )  # fmt: skip
    exclusive.add_argument(
        "--direct", action="store_true",
        help="apply to DATABASE_URL through the ingest core (applies pending migrations first)",
    )  # fmt: skip
    target.add_argument(
        "--dry-run", action="store_true", help="validate and report what would happen; write and send nothing"
    )  # fmt: skip
    ids = target.add_mutually_exclusive_group()
    ids.add_argument(
        "--keep-ids", action="store_true", help="use each event's own message id where it has one"
    )
    ids.add_argument("--random-ids", action="store_true", help="a new random message id for every event")
    target.add_argument("--no-migrate", action="store_true", help="--direct: do not apply pending migrations")

    tuning = parser.add_argument_group("tuning")
    tuning.add_argument(
        "--batch-size", type=bounded_int(1, 10_000), default=2_000, metavar="N",
        help="--direct: events per transaction (default 2000)",
    )  # fmt: skip
    tuning.add_argument(
        "--connections", type=bounded_int(1, 32), default=2, metavar="N",
        help="--direct: connections applying batches in parallel (default 2)",
    )  # fmt: skip
    tuning.add_argument(
        "--concurrency", type=bounded_int(1, 512), default=16, metavar="N",
        help="--url: requests in flight (default 16)",
    )  # fmt: skip
    tuning.add_argument(
        "--max-attempts", type=bounded_int(1, 50), default=8, metavar="N",
        help="tries per event (--url) or batch (--direct) on 429/503/connection errors (default 8)",
    )  # fmt: skip
    tuning.add_argument(
        "--timeout", type=_positive_float, default=30.0, metavar="SECONDS",
        help="--url: per-request timeout (default 30)",
    )  # fmt: skip

    output = parser.add_argument_group("output")
    output.add_argument(
        "--failed-out", metavar="FILE",
        help="write everything that did not go through here, to re-run with the same command: the events "
        "not done (rejected, conflict, failed) as JSON Lines, and every input line that was not an event "
        "at all exactly as it was read; *.gz is gzipped",
    )  # fmt: skip
    output.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")


@dataclass(frozen=True, slots=True)
class Options:
    file: str | None
    inbox_database: DatabaseSettings | None
    inbox_filter: InboxFilter | None
    url: str | None
    database: DatabaseSettings | None  # --direct's target
    secret: bytes | None  # --url's signing key
    rules: Rules  # the service's validation settings, for --direct and --dry-run
    dry_run: bool
    id_mode: str  # content | keep | random
    batch_size: int
    connections: int
    concurrency: int
    max_attempts: int
    timeout: float
    failed_out: str | None
    as_json: bool
    migrate: bool

    @property
    def source_label(self) -> str:
        if self.file is not None:
            return "stdin" if self.file == "-" else self.file
        assert self.inbox_database is not None
        return f"inbox of {self.inbox_database.redacted}"

    @property
    def target_label(self) -> str:
        if self.url is not None:
            return self.url
        assert self.database is not None
        return f"direct to {self.database.redacted}"


def resolve(args: argparse.Namespace, settings: Settings) -> Options:
    """Check the combination of arguments against the settings; `parser.error` (exit 2) if it is wrong."""
    parser: argparse.ArgumentParser = args.replay_parser
    if (args.file is None) == (not args.inbox):
        parser.error("give exactly one source: a FILE (- for stdin) or --inbox")
    filters = [
        ("--status", args.statuses), ("--type", args.types), ("--user-id", args.user_ids),
        ("--since", args.since), ("--until", args.until), ("--inbox-database-url", args.inbox_database_url),
    ]  # fmt: skip
    if args.file is not None:
        used = [name for name, value in filters if value]
        if used:
            parser.error(f"{', '.join(used)} only apply to --inbox")
        if args.file != "-" and not Path(args.file).is_file():
            parser.error(f"{args.file}: no such file")
    if args.failed_out:
        if args.file not in (None, "-") and _same_file(args.failed_out, args.file):
            parser.error("--failed-out must not be the input FILE")
        folder = Path(args.failed_out).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            parser.error(f"--failed-out {args.failed_out}: cannot write in {folder}")
    # Never later than the start: rows this run adds to the same inbox must not be read back.
    until = min(args.until or datetime.max.replace(tzinfo=UTC), datetime.now(UTC))
    since = args.since or datetime(1, 1, 1, tzinfo=UTC)
    if since >= until:
        parser.error("--since must be earlier than --until")

    url = _webhook_url(parser, args.url) if args.url else None
    secret: bytes | None = None
    if url is not None:
        if not settings.webhook_secrets:
            raise ConfigError("WEBHOOK_SECRET", "is not set; --url signs each event with the first secret")
        secret = settings.webhook_secrets[0]
    if args.direct and settings.database is None:
        raise ConfigError("DATABASE_URL", "is not set; --direct applies events to it")

    inbox_database: DatabaseSettings | None = None
    inbox_filter: InboxFilter | None = None
    if args.inbox:
        if args.inbox_database_url:
            inbox_database = settings.parse_database_url(args.inbox_database_url, "--inbox-database-url")
        elif settings.database is not None:
            inbox_database = settings.database
        else:
            raise ConfigError("DATABASE_URL", "is not set; --inbox reads the inbox from it")
        inbox_filter = InboxFilter(args.statuses, args.types, args.user_ids, since, until)

    id_mode = "keep" if args.keep_ids else "random" if args.random_ids else "content"
    return Options(
        file=args.file,
        inbox_database=inbox_database,
        inbox_filter=inbox_filter,
        url=url,
        database=settings.database if args.direct else None,
        secret=secret,
        rules=Rules.from_settings(settings),
        dry_run=args.dry_run,
        id_mode=id_mode,
        batch_size=args.batch_size,
        connections=args.connections,
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        failed_out=args.failed_out,
        as_json=args.json,
        migrate=args.direct and not args.dry_run and not args.no_migrate,
    )


_RELATIVE = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str) -> datetime:
    """ISO 8601 (naive means UTC), a date (midnight UTC), or an age like 30m, 12h, 7d."""
    text = text.strip()
    if match := _RELATIVE.fullmatch(text):
        return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ISO 8601, a date, or an age like 12h") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _csv(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected a value")
    return values


def _statuses(text: str) -> list[str]:
    values = _csv(text)
    unknown = [v for v in values if v not in INBOX_STATUSES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown status {unknown[0]!r}; one of {', '.join(INBOX_STATUSES)}")
    return values


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _webhook_url(parser: argparse.ArgumentParser, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        parser.error(f"--url {url!r} is not an http:// or https:// URL")
    if parts.path in ("", "/"):
        return url.rstrip("/") + WEBHOOK_PATH
    return url


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
