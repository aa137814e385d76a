"""`sync-service prune-events` and `sync-service check-config`, run through the real CLI entry point."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from sync_service.cli import main
from sync_service.ops.pruning import parse_age
from tests.helpers.databases import fresh_database, unreachable_database_url, with_database
from tests.helpers.jwks import Issuer
from tests.helpers.support import SECRET, SECRET_2

# --- prune-events -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("12h", timedelta(hours=12)),
     ("30d", timedelta(days=30)), (" 7D ", timedelta(days=7))],
)  # fmt: skip
def test_ages(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "-1d", "1w", "1.5h", "30 days", "9" * 30 + "d"])
def test_bad_ages_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not an age|too long ago"):
        parse_age(text)


def test_bad_age_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prune-events", "--older-than", "soon"])
    assert exit_info.value.code == 2
    assert "'soon' is not an age like 30d" in capsys.readouterr().err


async def _seed_inbox(db: asyncpg.Connection) -> None:
    """Events received 40, 35, 31, 31, 20 and 0 days ago, with assorted statuses."""
    rows = [("old-1", 40, "applied"), ("old-2", 35, "rejected"), ("old-3", 31, "applied"),
            ("old-4", 31, "stale"), ("recent", 20, "applied"), ("new", 0, "rejected")]  # fmt: skip
    for message_id, days, status in rows:
        await db.execute(
            "INSERT INTO webhook_events (message_id, event_type, received_at, status, payload)"
            " VALUES ($1, 'user.created', now() - make_interval(days => $2), $3, '{}')",
            message_id,
            days,
            status,
        )


async def _main(argv: list[str]) -> int:
    # The CLI runs its own event loop (asyncio.run); the test's loop is busy here.
    return await asyncio.to_thread(main, argv)


async def _remaining(db: asyncpg.Connection) -> set[str]:
    return {r["message_id"] for r in await db.fetch("SELECT message_id FROM webhook_events")}


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, migrated_database_url: str) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("BETTER_AUTH_URL", "JWT_JWKS_URL", "CORS_ALLOW_ORIGINS", "MIGRATIONS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("EMBEDDED_PG_DIR", str(tmp_path / "no-embedded"))


@pytest.mark.usefixtures("operator_env")
async def test_prune_deletes_old_events_in_chunks(
    db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    await _seed_inbox(db)
    assert await _main(["prune-events", "--older-than", "30d", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would delete 4 events received before ")
    assert len(await _remaining(db)) == 6

    assert await _main(["prune-events", "--older-than", "30d", "--chunk-size", "3"]) == 0  # two chunks: 3 + 1
    assert capsys.readouterr().out.startswith("deleted 4 events received before ")
    assert await _remaining(db) == {"recent", "new"}

    assert await _main(["prune-events", "--older-than", "30d"]) == 0
    assert capsys.readouterr().out.startswith("deleted 0 events")


@pytest.mark.usefixtures("operator_env")
async def test_prune_by_status(db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    await _seed_inbox(db)
    assert (
        await _main(["prune-events", "--older-than", "30d", "--status", "rejected", "--status", "stale"]) == 0
    )
    assert capsys.readouterr().out.startswith("deleted 2 events with status rejected, stale received before ")
    assert await _remaining(db) == {"old-1", "old-3", "recent", "new"}


def test_prune_without_any_database_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("EMBEDDED_PG_DIR", str(tmp_path / "never-created"))
    assert main(["prune-events", "--older-than", "30d"]) == 2
    assert "DATABASE_URL: is not set, and no embedded PostgreSQL exists yet" in capsys.readouterr().err


# --- check-config -----------------------------------------------------------------------------------


@pytest.fixture
def better_auth() -> Iterator[Issuer]:
    """Better Auth's stand-in: /api/auth/jwks on its origin answers the JWKS, anything else 404."""
    with Issuer() as issuer:
        yield issuer


def _report_lines(output: str) -> dict[str, tuple[str, str]]:
    lines = output.strip().splitlines()
    assert lines[0] == "sync-service check-config"
    report = {}
    for line in lines[1:-1]:
        level, name, detail = line.split(maxsplit=2)
        report[name] = (level, detail)
    return report


@pytest.mark.usefixtures("operator_env", "db")
def test_check_config_all_good(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    better_auth: Issuer,
    migrated_database_url: str,
) -> None:
    # A password the server ignores (trust auth in CI) so the redaction is really exercised.
    url = migrated_database_url.replace("postgresql://postgres@", "postgresql://postgres:canary-pw-3e1@", 1)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("WEBHOOK_SECRET", f"{SECRET} {SECRET_2}")
    monkeypatch.setenv("BETTER_AUTH_URL", better_auth.origin)
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "https://app.example.com")

    assert main(["check-config"]) == 0
    output = capsys.readouterr().out
    report = _report_lines(output)
    assert output.strip().splitlines()[-1] == "result: ok"
    assert {name: level for name, (level, _) in report.items()} == {
        "environment": "ok", "secrets": "ok", "database": "ok", "migrations": "ok", "jwks": "ok", "jwt": "ok",
        "cors": "ok",
    }  # fmt: skip
    assert report["secrets"][1] == "2 webhook secrets; each signed and verified a sample delivery"
    assert "schema at head" in report["migrations"][1]
    assert f"{better_auth.key.kid} EdDSA" in report["jwks"][1]
    assert f"issuer {better_auth.origin}, audience {better_auth.origin}" in report["jwt"][1]
    assert "PostgreSQL " in report["database"][1]
    if "canary-pw-3e1" in url:
        assert ":***@" in report["database"][1]
    for secret in (SECRET, SECRET_2, SECRET.removeprefix("whsec_"), "canary-pw-3e1"):
        assert secret not in output


@pytest.mark.usefixtures("operator_env")
def test_check_config_reports_each_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], better_auth: Issuer
) -> None:
    monkeypatch.setenv("DATABASE_URL", unreachable_database_url())
    monkeypatch.setenv("MIGRATIONS_DATABASE_URL", unreachable_database_url())
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("JWT_JWKS_URL", f"{better_auth.origin}/wrong/path")
    monkeypatch.setenv("JWT_ISSUER", "http://issuer.example")
    monkeypatch.setenv("JWT_AUDIENCE", "http://issuer.example")

    assert main(["check-config"]) == 1
    output = capsys.readouterr().out
    report = _report_lines(output)
    assert report["database"][0] == "FAIL"
    assert "cannot connect" in report["database"][1]
    # Each FAIL line names the variable to fix.
    assert report["database"][1].endswith("[check DATABASE_URL]")
    assert report["migrations_db"][0] == "FAIL"
    assert report["migrations_db"][1].endswith("[check MIGRATIONS_DATABASE_URL]")
    assert "migrations" not in report
    assert report["jwks"] == (
        "FAIL", f"{better_auth.origin}/wrong/path: HTTP 404  [check BETTER_AUTH_URL / JWT_JWKS_URL]"
    )  # fmt: skip
    assert output.strip().splitlines()[-1] == "result: 3 failed"


@pytest.mark.usefixtures("operator_env")
def test_check_config_warns_about_pending_migrations_and_a_missing_jwks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], postgres_server_url: str
) -> None:
    with fresh_database(postgres_server_url) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        assert main(["check-config"]) == 0
    report = _report_lines(capsys.readouterr().out)
    assert report["migrations"][0] == "warn"
    assert report["migrations"][1].startswith("pending: 0001_create_users, 0002_create_webhook_events")
    assert report["jwks"][0] == "warn"


def test_check_config_with_a_bad_variable_names_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "sync-service: LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'"
    )


# --- connection errors: which variable, where, and why, in one line ---------------------------------


@pytest.mark.usefixtures("operator_env")
@pytest.mark.parametrize("variable", ["DATABASE_URL", "MIGRATIONS_DATABASE_URL"])
@pytest.mark.parametrize("verb", [["migrate"], ["migrate", "--list"], ["serve", "--port", "0"]])
def test_a_database_that_cannot_be_reached_is_named_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], postgres_server_url: str,
    variable: str, verb: list[str],
) -> None:  # fmt: skip
    for url, reason in (
        (unreachable_database_url(), "refused"),
        (
            with_database(postgres_server_url, "no_such_database_3f9"),
            'database "no_such_database_3f9" does not exist',
        ),
    ):
        monkeypatch.setenv(variable, url.replace("postgres@", "postgres:pw-canary-77@", 1))
        assert main(verb) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith(f"sync-service: cannot connect to {variable} ("), err
        assert reason in err, err
        assert "check-config" in err
        assert "pw-canary-77" not in err


def test_serve_help_shows_each_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 127.0.0.1)", "(default: 8000)", "(default: 1)", "(default: 1000)"):
        assert default in out
