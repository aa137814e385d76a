"""What every phase of a run shares: its plan, the apps under test, and what it has found so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.apps import Apps
from bench.checks import Check
from bench.wrk import WrkResult


@dataclass(frozen=True, slots=True)
class Plan:
    phase_seconds: float  # each time-bounded phase (no-op POST, no-op GET, /users/me)
    warmup: int  # deliveries before the RSS baseline
    deliveries: int  # deliveries measured (RSS growth is across these)
    ingest_cap_seconds: float  # stop the ingest phase there even if not all were sent
    noop_requests: int  # distinct requests the no-op POST phase cycles through
    tokens: int  # distinct users/tokens for the read phase
    replay_events: int
    per_request_deliveries: int  # unique deliveries the per-request receiver phase may send
    many_connections_deliveries: int  # --ingest-at: deliveries sent at that many connections


DEFAULT = Plan(10, 10_000, 200_000, 170, 20_000, 1_000, 20_000, 40_000, 50_000)
QUICK = Plan(3, 2_000, 20_000, 30, 5_000, 200, 3_000, 10_000, 5_000)


@dataclass
class Figures:
    name: str
    result: WrkResult | None = None
    # CPU seconds used while wrk ran: "app"; "postgres" (the run's databases' backends and the server's
    # own processes); "wrk"; "other" (everything else, other work's PostgreSQL backends included);
    # "postgres_all" (every PostgreSQL process, any backend that ended meanwhile included).
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0  # how long wrk ran
    note: str = ""

    def cores(self, what: str) -> float:
        """Cores `what` used on average while wrk ran."""
        return self.cpu_seconds[what] / self.wall_s if self.wall_s else 0.0

    def per_answer_us(self, what: str, *, ok_only: bool = False) -> float | None:
        """CPU microseconds `what` used per answer (per 2xx answer with `ok_only`)."""
        answers = 0 if self.result is None else self.result.ok if ok_only else self.result.answered
        return self.cpu_seconds[what] / answers * 1e6 if answers else None


@dataclass
class Session:
    plan: Plan
    apps: Apps
    tmp: Path  # wrk's request files, the apps' logs
    threads: int  # wrk's
    connections: int  # wrk's, unless a phase says otherwise
    profile_dir: Path | None  # --profile
    workers: int  # uvicorn worker processes of each app (--workers)
    figures: dict[str, Figures] = field(default_factory=dict)  # by phase, in the order measured
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rss: dict[str, int] = field(default_factory=dict)  # KiB: after each ingest phase, peaks
    profiles: dict[str, str] = field(default_factory=dict)  # phase -> py-spy summary
