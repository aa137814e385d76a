"""tests/better_auth with its pinned npm packages installed (once per lock file) and the hook code built.

The Better Auth tests get it from a session fixture. `python -m tests.helpers.node_project` does the same
ahead of a run that has no route to the npm registry (CI's laptop run, in a network namespace), so those
tests run there too instead of failing on `npm ci`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1] / "better_auth"
NO_NODE = "node is not on PATH: the Better Auth end-to-end tests need Node.js 20+ and npm"


def prepare() -> Path | None:
    """The installed and built project, or None without `node` (the tests skip then)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        return None
    assert npm is not None, "node is installed but npm is not"
    lock = PROJECT / "package-lock.json"
    stamp = PROJECT / "node_modules" / ".sync-service-lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], timeout=300)
        stamp.write_text(digest)
    run([node, "build.mjs"], timeout=60)
    return PROJECT


def run(argv: list[str], *, timeout: float) -> None:
    result = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"


if __name__ == "__main__":
    print(f"{PROJECT}: ready" if prepare() else f"{NO_NODE} (they will be skipped)", file=sys.stderr)
