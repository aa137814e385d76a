"""`sync-service check-config`: try each piece of the configuration for real and report on one screen.

Every check returns a `Check`; nothing here prints a secret, a token or a password (URLs go through
`redact_url`, secrets are only counted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
import httpx
import jwt

from sync_service import sql
from sync_service.config import DatabaseSettings, Settings, redact_url
from sync_service.database import is_unavailable
from sync_service.ops.migrations import expected_migration_ids
from sync_service.webhooks.signatures import SignatureVerifier, sign

_JWKS_TIMEOUT_SECONDS = 5.0
_SAMPLE_BODY = b'{"type":"user.updated","timestamp":"2026-01-01T00:00:00.000Z","data":{}}'


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    detail: str
    variables: str = ""  # what to fix when it is not ok, e.g. "DATABASE_URL"


async def run_checks(
    settings: Settings, database: DatabaseSettings | None, database_label: str
) -> list[Check]:
    """Every check, in report order. `database` is what the service would use (None: nothing to try)."""
    checks = [_environment(settings), _secrets(settings)]
    if database is None:
        checks.append(Check("database", Level.OK, database_label))
    else:
        checks.extend(await _database(database, database_label, "DATABASE_URL"))
    if settings.migrations_database is not None:
        migrations = settings.migrations_database
        found = await _database(migrations, migrations.redacted, "MIGRATIONS_DATABASE_URL")
        checks.append(Check("migrations_db", found[0].level, found[0].detail, found[0].variables))
    checks.extend(await _jwt(settings))
    checks.append(_cors(settings))
    return checks


def format_report(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [
        f"  {c.level.value:<5} {c.name:<{width}}  {c.detail}"
        + (f"  [check {c.variables}]" if c.variables and c.level is not Level.OK else "")
        for c in checks
    ]
    failed = sum(c.level is Level.FAIL for c in checks)
    warned = sum(c.level is Level.WARN for c in checks)
    verdict = f"{failed} failed" if failed else "ok"
    if warned:
        verdict += f", {warned} warning{'s' if warned > 1 else ''}"
    return "\n".join(["sync-service check-config", *lines, f"result: {verdict}"])


def _environment(settings: Settings) -> Check:
    return Check(
        "environment",
        Level.OK,
        f"LOG_LEVEL={settings.log_level} USER_ID_FORMAT={settings.user_id_format} "
        f"WEBHOOK_MAX_BODY_BYTES={settings.webhook_max_body_bytes}",
    )


def _secrets(settings: Settings) -> Check:
    if not settings.webhook_secrets:
        return Check(
            "secrets",
            Level.FAIL,
            "WEBHOOK_SECRET is not set; `serve` refuses to start without it",
            "WEBHOOK_SECRET",
        )
    everyone = SignatureVerifier(settings.webhook_secrets)
    timestamp = int(time.time())
    for number, secret in enumerate(settings.webhook_secrets, start=1):
        headers = sign(secret, f"msg_check_config_{number}", timestamp, _SAMPLE_BODY)
        alone = SignatureVerifier((secret,))
        try:
            alone.verify(_SAMPLE_BODY, headers)
            everyone.verify(_SAMPLE_BODY, headers)
        except Exception as exc:
            return Check(
                "secrets",
                Level.FAIL,
                f"secret {number} did not verify its own sample: {type(exc).__name__}",
                "WEBHOOK_SECRET",
            )
    count = len(settings.webhook_secrets)
    summary = "1 webhook secret; it" if count == 1 else f"{count} webhook secrets; each"
    return Check("secrets", Level.OK, f"{summary} signed and verified a sample delivery")


async def _database(database: DatabaseSettings, label: str, variable: str) -> list[Check]:
    try:
        conn = await asyncpg.connect(
            database.asyncpg_dsn,
            timeout=database.connect_timeout,
            statement_cache_size=100 if database.statement_cache else 0,
        )
    except Exception as exc:
        if not (is_unavailable(exc) or isinstance(exc, asyncpg.PostgresError)):
            raise
        return [Check("database", Level.FAIL, f"{label}: cannot connect ({_describe(exc)})", variable)]
    try:
        server = await conn.fetchrow(sql.SERVER_SETTINGS)
        try:
            applied = {row[0] for row in await conn.fetch(sql.APPLIED_MIGRATIONS)}
        except asyncpg.UndefinedTableError:
            applied = set()
    finally:
        await conn.close()
    pool_max = database.pool_size + database.max_overflow
    detail = (
        f"{label} (PostgreSQL {server['version']}); pool up to {pool_max} of max_connections "
        f"{server['max_connections']}; statement cache {'on' if database.statement_cache else 'off'}"
    )
    level = Level.WARN if pool_max >= server["max_connections"] else Level.OK
    if level is Level.WARN:
        detail += " (lower DB_POOL_SIZE + DB_MAX_OVERFLOW)"
    return [Check("database", level, detail, "DB_POOL_SIZE, DB_MAX_OVERFLOW"), _migrations(applied)]


def _migrations(applied: set[str]) -> Check:
    expected = expected_migration_ids()
    pending = sorted(expected - applied)
    unknown = sorted(applied - expected)
    if unknown:
        return Check("migrations", Level.WARN, f"applied but unknown to this version: {', '.join(unknown)}")
    if pending:
        return Check(
            "migrations",
            Level.WARN,
            f"pending: {', '.join(pending)} (`serve` applies them; or `sync-service migrate`)",
        )
    return Check("migrations", Level.OK, f"schema at head ({len(expected)} migrations)")


async def _jwt(settings: Settings) -> list[Check]:
    if settings.jwt_jwks_url is None:
        return [
            Check(
                "jwks",
                Level.WARN,
                "BETTER_AUTH_URL (or JWT_JWKS_URL) is not set: /users/me rejects every token",
                "BETTER_AUTH_URL",
            )
        ]
    algorithms = ",".join(settings.jwt_algorithms)
    claims = Check(
        "jwt",
        Level.OK,
        f"issuer {settings.jwt_issuer}, audience {settings.jwt_audience}, algorithms {algorithms}",
    )
    return [await _jwks(settings.jwt_jwks_url, settings.jwt_algorithms), claims]


_JWKS_VARIABLES = "BETTER_AUTH_URL / JWT_JWKS_URL"


async def _jwks(url: str, algorithms: Sequence[str]) -> Check:
    shown = redact_url(url)
    try:
        async with httpx.AsyncClient(timeout=_JWKS_TIMEOUT_SECONDS, follow_redirects=True) as client:
            response = await client.get(url, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        return Check("jwks", Level.FAIL, f"{shown}: {type(exc).__name__}", _JWKS_VARIABLES)
    if response.status_code != 200:
        return Check("jwks", Level.FAIL, f"{shown}: HTTP {response.status_code}", _JWKS_VARIABLES)
    try:
        document: Any = response.json()
        keys = document["keys"]
        assert isinstance(keys, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        return Check("jwks", Level.FAIL, f"{shown}: not a JWKS document", _JWKS_VARIABLES)
    described, usable = [], 0
    for key in keys:
        try:
            jwk = jwt.PyJWK(key)
        except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError) as exc:
            kid = key.get("kid", "?") if isinstance(key, dict) else "?"
            described.append(f"{kid} unusable ({type(exc).__name__})")
            continue
        algorithm = jwk.algorithm_name
        allowed = algorithm in algorithms
        usable += allowed
        described.append(
            f"{jwk.key_id or '(no kid)'} {algorithm}" + ("" if allowed else " (not in JWT_ALGORITHMS)")
        )
    if not usable:
        return Check(
            "jwks",
            Level.FAIL,
            f"{shown}: no usable key ({'; '.join(described) or 'the key set is empty'}): is Better Auth's "
            "jwt plugin enabled, and does JWT_ALGORITHMS allow its algorithm?",
            "BETTER_AUTH_URL / JWT_JWKS_URL, JWT_ALGORITHMS",
        )
    level = Level.OK if usable == len(keys) else Level.WARN
    return Check(
        "jwks",
        level,
        f"{shown}: {len(keys)} key{'s' if len(keys) > 1 else ''}: {'; '.join(described)}",
        "JWT_ALGORITHMS",
    )


def _cors(settings: Settings) -> Check:
    if not settings.cors_allow_origins:
        return Check(
            "cors", Level.OK, "no CORS_ALLOW_ORIGINS: only same-origin browsers and servers call the API"
        )
    return Check("cors", Level.OK, f"allowed origins: {', '.join(settings.cors_allow_origins)}")


def _describe(exc: BaseException) -> str:
    # asyncpg's messages name the host and user, never the password; OSError text is the errno string.
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
