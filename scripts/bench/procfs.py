"""Memory and CPU of processes, read from /proc (Linux)."""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
# A client backend's process title: "postgres: [cluster: ]USER DATABASE HOST(PORT) STATE" (or [local]).
_BACKEND_TITLE = re.compile(r"\s(?P<database>\S+) (?:\S+\(\d+\)|\[local\])(?:\s|$)")


def status_kib(pid: int, field: str) -> int:
    """A `kB` line of /proc/PID/status: VmRSS (resident now), VmHWM (peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def family(pid: int) -> list[int]:
    """`pid` and its live descendants: an app started with several uvicorn workers is a supervisor and
    its worker processes."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, ()))
    return found


def family_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of `pid` and its live descendants (see `family`)."""
    return sum(cpu_seconds(member) for member in family(pid))


def family_status_kib(pid: int, field: str) -> int:
    """`status_kib` summed over `pid` and its live descendants (for VmHWM, the sum of their peaks)."""
    return sum(status_kib(member, field) for member in family(pid))


@dataclass(frozen=True, slots=True)
class PostgresCpu:
    """One reading of PostgreSQL's CPU time so far."""

    total: float  # every `postgres` process, the children it has reaped included
    # Each live process: the database it serves (None for the server's own processes: postmaster,
    # checkpointer, walwriter, background writer, ...) and its own CPU seconds.
    processes: dict[int, tuple[str | None, float]]


def postgres_cpu() -> PostgresCpu:
    total = 0.0
    processes: dict[int, tuple[str | None, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.find("(") + 1 : stat.rfind(")")] != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        total += sum(int(v) for v in fields[11:15]) / _TICKS  # utime, stime, cutime, cstime
        backend = _BACKEND_TITLE.search(title)
        own = (int(fields[11]) + int(fields[12])) / _TICKS
        processes[int(entry.name)] = (backend["database"] if backend else None, own)
    return PostgresCpu(total, processes)


def postgres_cpu_between(
    before: PostgresCpu, after: PostgresCpu, databases: Collection[str]
) -> tuple[float, float]:
    """CPU seconds PostgreSQL used between two readings: (for the run, every process).

    For the run: the backends serving `databases` and the server's own processes, as far as they are
    there at `after` (the server may be shared with other work: its backends are not the run's). A
    backend that ended in between is not in it (its time has moved to its parent's children's time).
    Every process: all of them, the backends that ended in between (anyone's) included.
    """
    run = 0.0
    for pid, (database, seconds) in after.processes.items():
        if database is not None and database not in databases:
            continue
        held = before.processes.get(pid)
        run += seconds - (held[1] if held is not None and held[0] == database else 0.0)
    return run, after.total - before.total


def core_count() -> tuple[int, int]:
    """(cores in the machine, cores this process may run on)."""
    return os.cpu_count() or 1, len(os.sched_getaffinity(0))


def machine_busy_seconds() -> float:
    """CPU time all cores together spent not idle since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS
