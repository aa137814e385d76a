"""Logging: one line per event, JSON when stderr is not a terminal, readable when it is.

Callers pass context in `extra`; only identifiers and measurements go there, never secrets, tokens,
emails, names or payloads.

Logger names: every module logs as `logging.getLogger(__name__)`, so a line's `logger` field is the module
that wrote it. The one exception is the access log (`ops.request_log`), named `ACCESS_LOGGER`
("sync_service.http"): operators route or silence it by that name, so it must not move with the module.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

ACCESS_LOGGER = "sync_service.http"

# Attributes every LogRecord has; anything else on a record came from `extra`.
# uvicorn adds `color_message` (its message with ANSI colours) to its own records: not worth a field.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


# PostgreSQL's DETAIL line repeats the values of the offending row ("Key (email)=(alice@...) already
# exists", "Failing row contains (...)"); asyncpg and psycopg put it into the exception's text, so it
# would reach a logged traceback.
_DETAIL = re.compile(r"^(\s*DETAIL:).*$", re.MULTILINE)


def _format_exception(formatter: logging.Formatter, exc_info: Any) -> str:
    return _DETAIL.sub(
        r"\1  (withheld from logs: it may hold row values)", formatter.formatException(exc_info)
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = _format_exception(self, record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}" + (
            f"  {extras}" if extras else ""
        )
        if record.exc_info:
            line += "\n" + _format_exception(self, record.exc_info)
        return line


HANDLER_NAME = "sync_service"


def configure_logging(level: str, *, json: bool | None = None) -> None:
    use_json = (not sys.stderr.isatty()) if json is None else json
    handler = logging.StreamHandler(sys.stderr)
    # Named, so that a caller running the CLI in-process (the tests) can take this handler off again.
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log repeats what our request log says, with the query string (which may hold
    # tokens someone put there by mistake): keep it off.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # httpx and httpcore log every request with its full URL (a JWKS URL may carry credentials or a token
    # in its query): our own lines say what was fetched, redacted, so theirs stay quiet at any level.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # yoyo narrates every migration step at INFO; `serve` and `migrate` print one line of their own.
    logging.getLogger("yoyo").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
