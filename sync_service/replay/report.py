"""What a replay tells the operator: counts by outcome, the problems, a progress line, the failed file.

Outcomes are the ingest core's (applied, duplicate, stale, ignored, rejected, conflict) plus `failed`:
a line that is not an event, or an event the target could not process (an HTTP error, the service or
database unreachable after the retries). `rejected`, `conflict` and `failed` are "not done": they make
the exit status 1 and, when they carry an event, go to `--failed-out` for a later re-run.
"""

from __future__ import annotations

import gzip
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, TextIO, cast

import msgspec

from sync_service.ingest.records import Outcome
from sync_service.replay.sources import InvalidLine, ReplayEvent

FAILED = "failed"  # replay's own outcome: the event could not be applied at all (retries exhausted)
OUTCOMES = (*(outcome.value for outcome in Outcome), FAILED)
NOT_DONE = frozenset({*(o.value for o in Outcome if not o.acknowledged), FAILED})
WOULD_SEND = "would_send"  # --url --dry-run: valid locally; only the service can say what it would do

_SHOWN_PROBLEMS = 50  # printed on stderr as they happen
_KEPT_PROBLEMS = 1_000  # listed in the --json summary


@dataclass(frozen=True, slots=True)
class Problem:
    position: str
    outcome: str
    detail: str | None
    message_id: str | None = None
    status: int | None = None

    def as_text(self) -> str:
        # Ids and details can be the sender's text: escaped, so a newline cannot split the report line
        # and no terminal escape sequence reaches the operator's terminal.
        where = self.position + (f" (id {printable(self.message_id)})" if self.message_id else "")
        status = f" HTTP {self.status}" if self.status is not None else ""
        return f"{where}: {self.outcome}{status}" + (f": {printable(self.detail)}" if self.detail else "")


def printable(text: str) -> str:
    """`text` with every non-printable character (controls, ESC, line breaks, lone surrogates) escaped as
    Python would write it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class FailedOut:
    """The events not done, as `{"id": ..., "payload": ...}` lines: the input format, so the same
    command re-runs them. The id is the event's own (file or inbox) or, if it had none, the one used."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        # Closed by `close()`, at the end of the run.
        self._file: IO[bytes] = (
            cast("IO[bytes]", gzip.open(path, "wb"))  # noqa: SIM115
            if path.endswith(".gz")
            else open(path, "wb")  # noqa: SIM115
        )

    def write(self, event: ReplayEvent, message_id: str | None) -> None:
        event_id = event.original_id or message_id
        head = b'{"id":' + msgspec.json.encode(event_id) + b',"payload":' if event_id else b'{"payload":'
        self._file.write(head + event.payload + b"}\n")
        self.count += 1

    def write_raw(self, line: bytes) -> None:
        """An input line that was not an event at all, as it was read: the re-run reports it again."""
        self._file.write(line + b"\n")
        self.count += 1

    def close(self) -> None:
        self._file.close()


class Progress:
    """One self-rewriting line on stderr, at most ten times a second. Only used on a terminal."""

    def __init__(
        self, stream: TextIO, total: int | None, *, label: str = "replay", unit: str = "events"
    ) -> None:
        self._stream = stream
        self._label, self._unit = label, unit
        self._total = total
        self._started = time.monotonic()
        self._last = 0.0

    def update(self, done: int, not_done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        rate = done / max(now - self._started, 1e-9)
        if self._total:
            share = min(done / self._total, 1.0)
            filled = int(share * 30)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done:,}/{self._total:,} {share:4.0%}"
        else:
            bar = f"{done:,} {self._unit}"
        self._stream.write(f"\r\x1b[K{self._label} {bar}  {rate:,.0f}/s  not done: {not_done:,}")
        self._stream.flush()

    def close(self) -> None:
        self._stream.write("\r\x1b[K")
        self._stream.flush()


@dataclass
class Report:
    failed_out: FailedOut | None = None
    progress: Progress | None = None
    problems_stream: TextIO = field(default_factory=lambda: sys.stderr)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    invalid_lines: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def not_done(self) -> int:
        return sum(self.counts[o] for o in NOT_DONE)

    def record(
        self,
        event: ReplayEvent,
        message_id: str | None,
        outcome: str,
        detail: str | None = None,
        status: int | None = None,
    ) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if outcome in NOT_DONE:
            if self.failed_out is not None:
                self.failed_out.write(event, message_id)
            self._problem(Problem(event.position, outcome, detail, event.original_id or message_id, status))
        self._tick()

    def invalid(self, line: InvalidLine) -> None:
        self.counts[FAILED] += 1
        self.invalid_lines += 1
        if self.failed_out is not None:
            self.failed_out.write_raw(line.raw)
        self._problem(Problem(line.position, FAILED, line.reason))
        self._tick()

    def _problem(self, problem: Problem) -> None:
        self.problem_count += 1
        if len(self.problems) < _KEPT_PROBLEMS:
            self.problems.append(problem)
        if self.problem_count <= _SHOWN_PROBLEMS:
            self._clear_progress()
            print(f"replay: {problem.as_text()}", file=self.problems_stream)
        elif self.problem_count == _SHOWN_PROBLEMS + 1:
            self._clear_progress()
            print("replay: further problems are not shown here (see the summary)", file=self.problems_stream)

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.update(self.total, self.not_done)

    def _clear_progress(self) -> None:
        if self.progress is not None:
            self.progress.close()

    def finish(self) -> None:
        self.finished = time.monotonic()
        if self.progress is not None:
            self.progress.update(self.total, self.not_done, force=True)
            self.progress.close()
        if self.failed_out is not None:
            self.failed_out.close()

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def as_dict(self, *, source: str, target: str, dry_run: bool) -> dict[str, Any]:
        counts = {k: v for k, v in self.counts.items() if k in OUTCOMES or v}
        return {
            "source": source,
            "target": target,
            "dry_run": dry_run,
            "events": self.total,
            "outcomes": counts,
            "not_done": self.not_done,
            "invalid_lines": self.invalid_lines,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.total / max(self.seconds, 1e-9), 1),
            "failed_out": self.failed_out.path if self.failed_out is not None else None,
            "failed_out_events": self.failed_out.count if self.failed_out is not None else 0,
            "problems": [{k: v for k, v in vars_of(p).items() if v is not None} for p in self.problems],
            "problems_not_listed": self.problem_count - len(self.problems),
        }

    def as_text(self, *, source: str, target: str, dry_run: bool) -> str:
        rate = self.total / max(self.seconds, 1e-9)
        head = f"replay {source} -> {target}" + (" (dry run: nothing written or sent)" if dry_run else "")
        lines = [head, f"  {self.total:,} events in {self.seconds:.2f} s ({rate:,.0f} events/s)"]
        for outcome, count in self.counts.items():
            if outcome in OUTCOMES or count:
                lines.append(f"  {outcome:<10} {count:>10,}")
        if self.invalid_lines:
            lines.append(f"  (failed includes {self.invalid_lines:,} invalid lines)")
        if self.failed_out is not None:
            written = self.failed_out.count
            lines.append(f"  {written:,} events to re-run written to {self.failed_out.path}")
        return "\n".join(lines)


def vars_of(problem: Problem) -> dict[str, Any]:
    return {
        "position": problem.position,
        "id": problem.message_id,
        "outcome": problem.outcome,
        "status": problem.status,
        "detail": problem.detail,
    }
