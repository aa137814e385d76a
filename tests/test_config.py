"""Settings from the environment: DATABASE_URL normalisation, secrets, and one-line errors."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sync_service.config import load_settings, parse_webhook_secrets, redact_url
from sync_service.errors import ConfigError
from tests.helpers.support import SECRET, SECRET_2


def _settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(environ=env, env_file=None)


def test_defaults() -> None:
    settings = _settings()
    assert settings.database is None
    assert settings.user_id_format == "uuid"
    assert settings.webhook_secrets == ()
    assert settings.jwt_algorithms == ("EdDSA", "ES256", "ES512", "RS256", "PS256")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db.example.com:5432/app",
        "postgres://u:p@db.example.com:5432/app",
        "postgresql+asyncpg://u:p@db.example.com:5432/app",
    ],
)
def test_accepted_database_url_schemes(url: str) -> None:
    database = _settings(DATABASE_URL=url).database
    assert database is not None
    assert database.asyncpg_dsn == "postgresql://u:p@db.example.com:5432/app"
    assert database.yoyo_url == "postgresql+psycopg://u:p@db.example.com:5432/app"
    assert database.statement_cache is True


def test_neon_pooled_url() -> None:
    url = (
        "postgresql://neondb_owner:secretpw@ep-cool-name-a1b2c3-pooler.eu-central-1.aws.neon.tech/neondb"
        "?sslmode=require&channel_binding=require"
    )
    database = _settings(DATABASE_URL=url).database
    assert database is not None
    assert "channel_binding" not in database.asyncpg_dsn
    assert "sslmode=require" in database.asyncpg_dsn
    assert "channel_binding=require" in database.yoyo_url  # libpq (yoyo via psycopg) understands it
    assert database.statement_cache is False
    assert "secretpw" not in database.redacted


@pytest.mark.parametrize(("value", "expected"), [("on", True), ("off", False)])
def test_statement_cache_can_be_forced(value: str, expected: bool) -> None:
    url = "postgresql://u@ep-x-pooler.neon.tech/db"
    database = _settings(DATABASE_URL=url, DB_STATEMENT_CACHE=value).database
    assert database is not None
    assert database.statement_cache is expected


def test_pool_settings_and_connect_timeout() -> None:
    database = _settings(
        DATABASE_URL="postgresql://u@h/db?connect_timeout=7",
        DB_POOL_SIZE="3",
        DB_MAX_OVERFLOW="5",
        DB_POOL_RECYCLE="60",
    ).database
    assert database is not None
    assert (database.pool_size, database.max_overflow, database.pool_recycle) == (3, 5, 60.0)
    assert database.connect_timeout == 7.0
    assert "connect_timeout" not in database.asyncpg_dsn


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/db?sslmode=sometimes"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h:notaport/db"}, "DATABASE_URL"),
        ({"DB_POOL_SIZE": "ten", "DATABASE_URL": "postgresql://u@h/db"}, "DB_POOL_SIZE"),
        ({"DB_POOL_SIZE": "0", "DATABASE_URL": "postgresql://u@h/db"}, "DB_POOL_SIZE"),
        ({"WEBHOOK_SECRET": "not-a-secret"}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_SECRET": "whsec_***notbase64***"}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"short").decode()}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"x" * 65).decode()}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_SECRET": "v1,whsec_" + base64.b64encode(b"x" * 32).decode()}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_MAX_BODY_BYTES": "-1"}, "WEBHOOK_MAX_BODY_BYTES"),
        ({"USER_ID_FORMAT": "serial"}, "USER_ID_FORMAT"),
        ({"BETTER_AUTH_URL": "auth.example.com"}, "BETTER_AUTH_URL"),
        ({"JWT_ALGORITHMS": "HS256"}, "JWT_ALGORITHMS"),
        ({"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
        ({"JWT_LEEWAY_SECONDS": "soon"}, "JWT_LEEWAY_SECONDS"),
        ({"CORS_ALLOW_ORIGINS": "https://app.example.com/path"}, "CORS_ALLOW_ORIGINS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(**env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_several_secrets_separated_by_spaces_or_commas() -> None:
    secrets = parse_webhook_secrets(f"{SECRET}, {SECRET_2}  {SECRET}")
    assert len(secrets) == 3
    assert secrets[0] == base64.b64decode(SECRET.removeprefix("whsec_"))
    assert 24 <= len(secrets[1]) <= 64


def test_better_auth_url_gives_jwks_issuer_and_audience() -> None:
    settings = _settings(BETTER_AUTH_URL="https://auth.example.com/some/base/")
    assert settings.jwt_jwks_url == "https://auth.example.com/some/base/api/auth/jwks"
    assert settings.jwt_issuer == "https://auth.example.com"
    assert settings.jwt_audience == "https://auth.example.com"
    overridden = _settings(
        BETTER_AUTH_URL="https://auth.example.com",
        JWT_JWKS_URL="https://keys.example.com/jwks",
        JWT_ISSUER="issuer",
        JWT_AUDIENCE="aud",
    )
    assert (overridden.jwt_jwks_url, overridden.jwt_issuer, overridden.jwt_audience) == (
        "https://keys.example.com/jwks",
        "issuer",
        "aud",
    )


def test_cors_origins_are_exact() -> None:
    settings = _settings(CORS_ALLOW_ORIGINS="https://app.example.com, http://localhost:5173")
    assert settings.cors_allow_origins == ("https://app.example.com", "http://localhost:5173")


def test_env_file_fills_in_what_the_environment_lacks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env_file = tmp_path / ".env"
    env_file.write_text(f'WEBHOOK_SECRET="{SECRET}"\nUSER_ID_FORMAT=opaque\n')
    settings = load_settings(environ={"USER_ID_FORMAT": "uuid"}, env_file=env_file)
    assert settings.user_id_format == "uuid"
    assert len(settings.webhook_secrets) == 1


def test_redact_url_hides_the_password() -> None:
    assert redact_url("postgresql://user:hunter2@db:5432/app") == "postgresql://user:***@db:5432/app"
    assert redact_url("postgresql://user@db/app") == "postgresql://user@db/app"


def test_cli_prints_one_line_naming_the_variable_without_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "DATABASE_URL": "postgresql://u@h/db", "DB_POOL_SIZE": "lots"}
    result = subprocess.run(
        [sys.executable, "-m", "sync_service", "migrate", "--list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sync-service: DB_POOL_SIZE: must be an integer, got 'lots'"
    ]


def test_serve_refuses_to_start_with_a_mistyped_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "DATABASE_URL": "postgresql://u@h/db", "WEBHOOK_SECRET": "whsec_abc"}
    result = subprocess.run(
        [sys.executable, "-m", "sync_service", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("sync-service: WEBHOOK_SECRET:")
    assert "whsec_abc" not in result.stderr


# Every variable config.py reads, a value different from its default, and where it shows in Settings.
_DB = "postgresql://postgres@db.example.com:5432/app"
_FROM_DOTENV: dict[str, tuple[str, Any]] = {
    "DATABASE_URL": (_DB, lambda s: s.database.url),
    "MIGRATIONS_DATABASE_URL": (
        "postgresql://postgres@direct.example.com/app",
        lambda s: s.migrations_database.url,
    ),
    "BETTER_AUTH_DATABASE_URL": (
        "postgresql://auth@auth.example.com/ba",
        lambda s: s.better_auth_database_url,
    ),
    "DB_POOL_SIZE": ("3", lambda s: str(s.database.pool_size)),
    "DB_MAX_OVERFLOW": ("7", lambda s: str(s.database.max_overflow)),
    "DB_POOL_RECYCLE": ("77", lambda s: f"{s.database.pool_recycle:g}"),
    "DB_STATEMENT_CACHE": ("off", lambda s: "off" if not s.database.statement_cache else "on"),
    "DB_CONNECT_TIMEOUT": ("4", lambda s: f"{s.database.connect_timeout:g}"),
    "DB_ACQUIRE_TIMEOUT": ("2", lambda s: f"{s.database.acquire_timeout:g}"),
    "DB_COMMAND_TIMEOUT": ("3", lambda s: f"{s.database.command_timeout:g}"),
    "WEBHOOK_SECRET": (
        "whsec_QDyi+na7I5taWmuHuY4vhIazBdiBX23MChMBBBIrTXg=",
        lambda s: "whsec_" + base64.b64encode(s.webhook_secrets[0]).decode(),
    ),
    "WEBHOOK_MAX_BODY_BYTES": ("4096", lambda s: str(s.webhook_max_body_bytes)),
    "WEBHOOK_CLOCK_SKEW_SECONDS": ("12", lambda s: f"{s.webhook_clock_skew_seconds:g}"),
    "USER_ID_FORMAT": ("opaque", lambda s: s.user_id_format),
    "BETTER_AUTH_URL": ("https://auth.example.com", lambda s: s.better_auth_url),
    "JWT_JWKS_URL": ("https://keys.example.com/jwks", lambda s: s.jwt_jwks_url),
    "JWT_ISSUER": ("https://issuer.example.com", lambda s: s.jwt_issuer),
    "JWT_AUDIENCE": ("https://aud.example.com", lambda s: s.jwt_audience),
    "JWT_ALGORITHMS": ("ES256", lambda s: " ".join(s.jwt_algorithms)),
    "JWT_LEEWAY_SECONDS": ("5", lambda s: f"{s.jwt_leeway_seconds:g}"),
    "JWT_JWKS_COOLDOWN_SECONDS": ("9", lambda s: f"{s.jwt_jwks_cooldown_seconds:g}"),
    "JWT_JWKS_MAX_AGE_SECONDS": ("99", lambda s: f"{s.jwt_jwks_max_age_seconds:g}"),
    "CORS_ALLOW_ORIGINS": ("https://app.example.com", lambda s: " ".join(s.cors_allow_origins)),
    "LOG_LEVEL": ("DEBUG", lambda s: s.log_level),
    "INGEST_BATCH_SIZE": ("17", lambda s: str(s.ingest_batch_size)),
    "INGEST_QUEUE_SIZE": ("170", lambda s: str(s.ingest_queue_size)),
    "INGEST_WRITERS": ("2", lambda s: str(s.ingest_writers)),
    "INGEST_TIMEOUT_SECONDS": ("2.5", lambda s: f"{s.ingest_timeout_seconds:g}"),
    "RETRY_AFTER_SECONDS": ("8", lambda s: str(s.retry_after_seconds)),
    "EMBEDDED_PG_DIR": ("/srv/sync-service-dotenv-pg", lambda s: str(s.embedded_pg_dir)),
}


@pytest.mark.parametrize("name", sorted(_FROM_DOTENV))
def test_every_variable_takes_effect_from_dotenv_alone(name: str, tmp_path: Path) -> None:
    value, shown = _FROM_DOTENV[name]
    env_file = tmp_path / ".env"
    # DATABASE_URL in the file too, so the DB_* variables have a database to apply to.
    env_file.write_text(f"DATABASE_URL={_DB}\n{name}={value}\n")
    settings = load_settings(environ={}, env_file=env_file)
    assert shown(settings) == value


def test_migrations_use_migrations_database_url_from_dotenv(tmp_path: Path) -> None:
    from sync_service.cli import _migration_url

    env_file = tmp_path / ".env"
    env_file.write_text(
        f"DATABASE_URL={_DB}\nMIGRATIONS_DATABASE_URL=postgresql://postgres@direct.example.com/app\n"
    )
    url, variable = _migration_url(load_settings(environ={}, env_file=env_file))
    assert (url, variable) == (
        "postgresql+psycopg://postgres@direct.example.com/app",
        "MIGRATIONS_DATABASE_URL",
    )


def test_settings_keep_no_copy_of_the_environment() -> None:
    environ = {"WEBHOOK_SECRET": "whsec_wEI3M3vAYjZHYziLgtZJruB7Kml+T+AS", "SOME_TOKEN": "canary",
               "DB_POOL_SIZE": "3"}  # fmt: skip
    settings = load_settings(environ=environ, env_file=None)
    assert not hasattr(settings, "environ")
    assert dict(settings.database_tuning) == {"DB_POOL_SIZE": "3"}


def test_issuer_and_audience_never_carry_the_url_credentials() -> None:
    settings = load_settings(
        environ={"JWT_JWKS_URL": "https://reader:pw-canary@keys.example.com/jwks"}, env_file=None
    )
    assert (settings.jwt_issuer, settings.jwt_audience) == (
        "https://keys.example.com",
        "https://keys.example.com",
    )
