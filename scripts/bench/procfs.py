"""Memory and CPU of processes, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


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


def cpu_seconds_named(name: str) -> float:
    """CPU time so far of every process called `name` (e.g. all of PostgreSQL's), including children
    that have exited (the postmaster reaps its backends: their time moves to its children's time), so
    that the difference between two readings never misses a backend that ended in between."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        if comm == name:
            fields = stat.rpartition(")")[2].split()
            total += sum(int(v) for v in fields[11:15]) / _TICKS  # utime, stime, cutime, cstime
    return total


def core_count() -> tuple[int, int]:
    """(cores in the machine, cores this process may run on)."""
    return os.cpu_count() or 1, len(os.sched_getaffinity(0))


def machine_busy_seconds() -> float:
    """CPU time all cores together spent not idle since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS
