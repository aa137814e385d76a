"""The README's run command on a machine with nothing but Python: `sync-service serve` without
DATABASE_URL runs on an embedded PostgreSQL, keeps its data folder, and stops it on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers.process import SYNC_SERVICE, serve, service_environment
from tests.helpers.support import deliver, envelope, user_data

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


@pytest.mark.slow
def test_operator_commands_join_the_embedded_postgres_serve_runs(tmp_path: Path, data_dir: Path) -> None:
    """`migrate --list` and `replay --direct` without DATABASE_URL work on the server `serve` started
    (one postmaster, still running after them), and the URL `serve` logs is one psql accepts."""
    env = service_environment(EMBEDDED_PG_DIR=str(data_dir))
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(envelope(user_data(email="joined.embedded@example.com"))) + "\n")
    with serve(tmp_path, env) as running:
        postmaster = _postmaster_pid(data_dir)
        assert postmaster is not None
        for argv in (["migrate", "--list"], ["replay", str(events), "--direct", "--json"]):
            done = subprocess.run(
                [str(SYNC_SERVICE), *argv], env=env, cwd=tmp_path, capture_output=True, text=True,
                timeout=120, check=False,
            )  # fmt: skip
            assert done.returncode == 0, (argv, done.stderr)
            assert _postmaster_pid(data_dir) == postmaster  # joined, not a second server
            assert _alive(postmaster)
        assert json.loads(done.stdout)["outcomes"]["applied"] == 1
        line = next(line for line in running.stderr.splitlines() if "embedded PostgreSQL: psql" in line)
        url = json.loads(line)["database_url"]
        with psycopg.connect(url) as conn:  # libpq, as psql and GUIs use it
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
        psql = shutil.which("psql")
        if psql is not None:  # a laptop may have no psql client: libpq above took the same URL
            count = subprocess.run(
                [psql, url, "-Atc", "SELECT count(*) FROM users"], capture_output=True, text=True,
                timeout=30, check=False,
            )  # fmt: skip
            assert (count.returncode, count.stdout.strip()) == (0, "1"), count.stderr
        assert running.terminate() == 0, running.stderr
