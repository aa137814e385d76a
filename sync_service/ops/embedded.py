"""An embedded PostgreSQL (the pgserver wheel ships the binaries) for running without DATABASE_URL.

The data folder is kept between runs. pgserver counts the processes using a folder and the last one to
let go stops the server, so `serve` and an operator command (`prune-events`, `check-config`) can share
one running server, and the server stops with the last of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sync_service.errors import ConfigError

log = logging.getLogger(__name__)

# pgserver's record of the processes using a data folder (see pgserver.utils.DiskList).
_HANDLE_PIDS_FILE = ".handle_pids.json"
_HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def is_initialised(data_dir: Path) -> bool:
    """A data folder an earlier `serve` created (initdb has run)."""
    return (data_dir / "PG_VERSION").is_file()


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) PostgreSQL in `data_dir` and yield its URL; stop it on the way out unless another
    process still uses it."""
    pgserver = _import_pgserver()
    data_dir = data_dir.expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("EMBEDDED_PG_DIR", f"cannot create {data_dir}: {exc.strerror}") from None
    log.info(f"embedded PostgreSQL data folder: {data_dir}", extra={"data_dir": str(data_dir)})
    _forget_dead_processes(data_dir)
    with _signals_held() as held:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        for signum in held:
            signal.raise_signal(signum)
        yield str(server.get_uri())
    finally:
        server.cleanup()


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Hold SIGTERM and SIGINT while the server starts, to be raised once we hold its handle.

    Interrupted halfway, pgserver would have started PostgreSQL without recording this process as its
    user, and nothing would stop it."""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held  # only the main thread receives signals
        return
    previous = {s: signal.signal(s, lambda signum, _frame: held.append(signum)) for s in _HELD_SIGNALS}
    try:
        yield held
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _import_pgserver() -> Any:
    # Importing pgserver resolves a runtime folder through platformdirs, which warns where
    # XDG_RUNTIME_DIR is unset (containers, CI) before falling back to /tmp: harmless, so silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:
            raise ConfigError(
                "DATABASE_URL", "is not set and no embedded PostgreSQL is available on this platform; set it"
            ) from None
    # Its INFO lines describe pg_ctl invocations step by step; our own line above says what matters.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    return pgserver


def _forget_dead_processes(data_dir: Path) -> None:
    """Drop processes that died without letting go (SIGKILL, power loss) from pgserver's list of users
    of the folder. Otherwise the server would never again be stopped: pgserver stops it only when the
    exiting process is the last one listed."""
    path = data_dir / _HANDLE_PIDS_FILE
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _process_exists(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
