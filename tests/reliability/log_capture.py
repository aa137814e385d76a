"""Every log record the process creates, kept for a search for secrets and PII afterwards.

Records are collected through the log record factory rather than a handler: Litestar's default
logging config (`dictConfig`) replaces the root logger's handlers each time an app is created, so a
handler would silently stop seeing anything. The factory sees every record any logger makes, in every
thread, whatever the handlers. Records are rendered with the service's own JSON formatter (message,
`extra` fields and traceback), which is what reaches stderr in production.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sync_service.ops.logs import JsonFormatter

# Every name and email the reliability tests send contains this marker, so one search finds them all.
PII_MARKER = "pii-canary"

# The tests' own HTTP clients log the URLs they request (query strings included); those lines are the
# test's, not the service's, and are left out of the search.
CLIENT_LOGGERS = ("httpx", "httpcore", "urllib3", "requests", "hypothesis", "schemathesis")


class RecordCollector:
    def __init__(self) -> None:
        self._records: list[logging.LogRecord] = []
        self._sensitive: set[str] = set()
        self._lock = threading.Lock()
        self._previous: Callable[..., logging.LogRecord] | None = None

    def install(self) -> None:
        previous = logging.getLogRecordFactory()
        self._previous = previous

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            self._records.append(record)
            return record

        logging.setLogRecordFactory(factory)

    def uninstall(self) -> None:
        if self._previous is not None:
            logging.setLogRecordFactory(self._previous)
            self._previous = None

    def mark_sensitive(self, *values: str) -> None:
        """Strings that must never be logged (secrets, tokens); PII carries `PII_MARKER` instead."""
        with self._lock:
            self._sensitive.update(v for v in values if len(v) >= 8)

    @property
    def count(self) -> int:
        return len(self._records)

    def rendered(self, start: int = 0) -> list[str]:
        formatter = JsonFormatter()
        lines = []
        for record in list(self._records[start:]):
            if record.name.split(".")[0] in CLIENT_LOGGERS:
                continue
            try:
                lines.append(formatter.format(record))
            except Exception as exc:  # a record that cannot be rendered is itself a finding
                lines.append(f"<unrenderable record {record.name}: {exc.__class__.__name__}> {record.msg!r}")
        return lines

    def leaks(self, start: int = 0) -> list[str]:
        """Rendered lines holding a secret, a token or a PII marker (case-insensitive, raw or escaped)."""
        with self._lock:
            needles = {PII_MARKER, *self._sensitive}
        return [line for line in self.rendered(start) if _contains_any(line, needles)]


def _contains_any(line: str, needles: Iterable[str]) -> bool:
    folded = line.casefold()
    for needle in needles:
        for form in (needle, needle.replace("/", "\\/"), needle.encode("unicode_escape").decode()):
            if form.casefold() in folded:
                return True
    return False


collector = RecordCollector()
