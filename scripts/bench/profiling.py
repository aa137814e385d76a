"""--profile: py-spy records an app while a phase runs; the report compares the service with the ceiling."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.profile_summary import per_request, summarise
from bench.session import Session

PROFILE_RATE_HZ = 250


@contextlib.contextmanager
def profiled(session: Session, phase: str, pid: int, *, enabled: bool = True) -> Iterator[None]:
    """With --profile, record `pid` with py-spy while the block runs (the no-op phases too, so that the
    service's profile can be compared with the ceiling's)."""
    profiler = _start(session, phase, pid) if enabled else None
    try:
        yield
    finally:
        if profiler is not None:
            _stop(session, phase, profiler)


def per_request_cpu(session: Session, phase: str) -> dict[str, float]:
    """Sampled CPU microseconds per answered request of `phase`, by component."""
    assert session.profile_dir is not None
    result = session.figures[phase].result
    return per_request(_path(session.profile_dir, phase), result.answered if result else 0, PROFILE_RATE_HZ)


def _path(directory: Path, phase: str) -> Path:
    return directory / (phase.replace("/", "").replace(" ", "-").strip("-") + ".txt")


def _start(session: Session, phase: str, pid: int) -> subprocess.Popen[bytes] | None:
    if session.profile_dir is None:
        return None
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        session.notes.append("--profile: py-spy not found (pip install py-spy)")
        return None
    session.profile_dir.mkdir(parents=True, exist_ok=True)
    command = [
        py_spy, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE_HZ), "--nonblocking",
        "--format", "raw", "--output", str(_path(session.profile_dir, phase)),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    return proc


def _stop(session: Session, phase: str, proc: subprocess.Popen[bytes]) -> None:
    assert session.profile_dir is not None
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        err = b""
    path = _path(session.profile_dir, phase)
    if path.exists():
        session.profiles[phase] = f"{path}\n" + summarise(path, top=15)
    else:
        session.notes.append(f"--profile: py-spy wrote nothing: {err.decode(errors='replace')[-300:]}")
