"""The README's run command on a machine with nothing but Python: `sync-service serve` without
DATABASE_URL runs on an embedded PostgreSQL, keeps its data folder, and stops it on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import SYNC_SERVICE, serve, service_environment
from tests.support import deliver, envelope, user_data

pytest.importorskip("pgserver", reason="no embedded PostgreSQL wheel for this platform")


def _postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster's pid (initdb's bootstrap backend writes a negative one: not a server)."""
    try:
        first_line = (data_dir / "postmaster.pid").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    pid = int(first_line)
    return pid if pid > 0 else None


def _alive(pid: int) -> bool:
    """Running, not a zombie (this machine's init does not reap orphans, so the dead linger as zombies)."""
    import psutil  # pgserver depends on it

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The embedded data folder; a server a failing test left running there is shut down."""
    path = tmp_path / "data" / "postgres"
    yield path
    pid = _postmaster_pid(path)
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown


@pytest.mark.slow
async def test_serve_without_database_url_runs_on_a_kept_embedded_postgres(
    tmp_path: Path, data_dir: Path
) -> None:
    env = service_environment(EMBEDDED_PG_DIR=str(data_dir))
    payload = envelope(user_data(email="zero.setup@example.com"))

    with serve(tmp_path, env) as first:
        postgres_pid = _postmaster_pid(data_dir)
        assert postgres_pid is not None
        assert _alive(postgres_pid)
        async with first.client() as client:
            response = await deliver(client, payload, message_id="msg_zero_setup")
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "applied"}
        assert first.terminate() == 0, first.stderr

    assert f"embedded PostgreSQL data folder: {data_dir}" in first.stderr
    assert not _alive(postgres_pid), "the embedded PostgreSQL outlived `serve`"
    assert _postmaster_pid(data_dir) is None

    # As if an earlier `serve` had been killed (SIGKILL) while holding the folder: pgserver stops the server
    # only when the last process it lists lets go, so a dead one must not count.
    (data_dir / ".handle_pids.json").write_text(f"[{_dead_pid()}]")

    # A second run reuses the folder: the data is still there (the message id is known), no new initdb.
    # This time it is stopped with Ctrl-C (SIGINT), PostgreSQL stopped all the same. Exit status 130, or 0
    # where SIGINT was ignored when the test run started (a background job), so uvicorn's re-raise is too.
    with serve(tmp_path, env) as second:
        async with second.client() as client:
            response = await deliver(client, payload, message_id="msg_zero_setup")
        assert response.json() == {"status": "duplicate"}
        second_pid = _postmaster_pid(data_dir)
        assert second.terminate(signal.SIGINT) in (0, 130), second.stderr
    assert "applied migrations" not in second.stderr
    assert second_pid is not None
    assert not _alive(second_pid)


@pytest.mark.slow
def test_sigterm_during_startup_still_stops_the_embedded_postgres(tmp_path: Path, data_dir: Path) -> None:
    """SIGTERM before uvicorn takes the signal over (here: while PostgreSQL starts) must not leave the
    embedded server behind."""
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [SYNC_SERVICE, "serve", "--port", "1"],  # never reached: stopped before binding
            cwd=tmp_path,
            env=service_environment(EMBEDDED_PG_DIR=str(data_dir)),
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 60
        while _postmaster_pid(data_dir) is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "embedded PostgreSQL did not start"
            time.sleep(0.05)
        postgres_pid = _postmaster_pid(data_dir)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert postgres_pid is not None
    deadline = time.monotonic() + 10
    while _alive(postgres_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(postgres_pid), log.read_text()
