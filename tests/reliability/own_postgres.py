"""A PostgreSQL server of the test's own, from the binaries the `pgserver` wheel ships.

Fault tests stop, kill and restart it; they must never do that to a shared server. It listens on a
free loopback TCP port (like a real deployment, unlike pgserver's Unix socket) and lives in a
temporary directory that is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.ports import free_port

# PostgreSQL refuses to run as root; pgserver uses this account in that case, and so do we.
_SERVICE_ACCOUNT = "pgserver"


def _binaries() -> Path:
    # find_spec does not import pgserver (its import warns about XDG_RUNTIME_DIR, an error here).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver package (PostgreSQL binaries) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class OwnPostgres:
    """initdb + pg_ctl on a private data directory; `stop(mode)` and `start()` at will."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.bin = _binaries()
        self._account = _SERVICE_ACCOUNT if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.data.mkdir(parents=True)
        if self._account is not None:
            _make_reachable_by(self._account, self.root, self.bin.parent)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8")

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start"
        )

    def is_running(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True, timeout=30, user=self._account, cwd=self.root, check=False,
        )  # fmt: skip
        return result.returncode == 0

    def start_if_stopped(self) -> None:
        """Leave the server up for the next test whatever happened in this one."""
        if not self.is_running():
            self.start()

    def stop(self, mode: str = "fast") -> None:
        """`fast`: backends are terminated, transactions roll back; `immediate`: like a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / program), *args],
            check=True,
            capture_output=True,
            timeout=60,
            user=self._account,
            cwd=self.root,
        )


def _make_reachable_by(account: str, root: Path, install: Path) -> None:
    import pwd

    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/false", account], check=True, capture_output=True)
        entry = pwd.getpwnam(account)
    traverse = stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
    for folder in [*root.parents, *install.parents]:
        folder.chmod(folder.stat().st_mode | traverse)
    for path in [root, *root.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    for path in [install, *install.rglob("*")]:
        path.chmod(path.stat().st_mode | traverse)


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    root = Path(tempfile.mkdtemp(prefix="sync-service-faults-"))
    server = OwnPostgres(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
