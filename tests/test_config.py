"""Settings from the environment: DATABASE_URL normalisation, secrets, and one-line errors."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from sync_service.config import load_settings, parse_webhook_secrets, redact_url
from sync_service.errors import ConfigError
from tests.support import SECRET, SECRET_2


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
