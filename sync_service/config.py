"""Settings: every environment variable is read here, once, into one typed object.

A bad value raises `ConfigError` naming the variable; the CLI prints that one line and exits.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from sync_service.errors import ConfigError

UserIdFormat = Literal["uuid", "opaque"]

# Every id the service can store, whatever USER_ID_FORMAT says (a UUID is one of them): Better Auth's ids.
# The webhook side stores no other; the read side answers 404 for any other without asking PostgreSQL.
STORABLE_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")


def is_storable_user_id(text: str) -> bool:
    return STORABLE_USER_ID.fullmatch(text) is not None


DEFAULT_JWT_ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
SUPPORTED_JWT_ALGORITHMS = frozenset(
    {"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)

# libpq accepts these in a connection URL but asyncpg does not (it would send them to the server as
# settings, which PostgreSQL rejects: Neon's URLs carry channel_binding=require, for instance).
_LIBPQ_ONLY_PARAMS = frozenset(
    {
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "fallback_application_name",
        "gssencmode",
        "gsslib",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "krbsrvname",
        "options",
        "passfile",
        "replication",
        "requirepeer",
        "requiressl",
        "service",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "tcp_user_timeout",
    }
)
_ACCEPTED_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg")
_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """Where PostgreSQL is and how the asyncpg pool talks to it."""

    url: str  # as given, with the password; never log it (use `redacted`)
    asyncpg_dsn: str  # postgresql:// without libpq-only parameters
    yoyo_url: str  # postgresql+psycopg:// for yoyo (psycopg 3, which is libpq and takes every parameter)
    connect_timeout: float
    statement_cache: bool
    pool_size: int
    max_overflow: int
    pool_recycle: float
    acquire_timeout: float
    command_timeout: float

    @property
    def redacted(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True, slots=True)
class Settings:
    database: DatabaseSettings | None  # None: no DATABASE_URL, so `serve` starts an embedded PostgreSQL
    webhook_secrets: tuple[bytes, ...]
    webhook_max_body_bytes: int
    webhook_clock_skew_seconds: float
    user_id_format: UserIdFormat
    better_auth_url: str | None
    jwt_jwks_url: str | None
    jwt_issuer: str | None
    jwt_audience: str | None
    jwt_algorithms: tuple[str, ...]
    jwt_leeway_seconds: float
    jwt_jwks_cooldown_seconds: float  # least time between two JWKS fetches (unknown kids cannot hammer it)
    jwt_jwks_max_age_seconds: float  # a key set older than this is refreshed in the background
    cors_allow_origins: tuple[str, ...]
    log_level: str
    ingest_batch_size: int
    ingest_queue_size: int
    ingest_writers: int
    ingest_timeout_seconds: float
    retry_after_seconds: int
    embedded_pg_dir: Path
    # MIGRATIONS_DATABASE_URL: a direct (non-PgBouncer) URL for migrations; None means DATABASE_URL's.
    migrations_database: DatabaseSettings | None = None
    better_auth_database_url: str | None = None  # BETTER_AUTH_DATABASE_URL, backfill's source
    # The DB_* variables only (pool sizes, timeouts, statement cache: no secrets), so that another URL
    # (the embedded server, backfill's source, replay's inbox) is parsed with the same rules.
    database_tuning: Mapping[str, str] = field(repr=False, default_factory=dict)

    def with_database(self, url: str) -> Settings:
        """The same settings pointed at another database (the embedded one, or a test's)."""
        from dataclasses import replace

        return replace(self, database=self.parse_database_url(url))

    def parse_database_url(self, url: str, variable: str = "DATABASE_URL") -> DatabaseSettings:
        """`url` with this configuration's pool and timeout rules; errors name `variable`."""
        return parse_database_url(url, self.database_tuning, variable=variable)


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Build settings from the environment; a `.env` file fills in what the environment lacks."""
    env: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)

    better_auth_url = _optional_url(env, "BETTER_AUTH_URL")
    jwks_url = _optional_url(env, "JWT_JWKS_URL") or (
        f"{better_auth_url.rstrip('/')}/api/auth/jwks" if better_auth_url else None
    )
    # Better Auth's iss and aud are its base URL's origin. Without BETTER_AUTH_URL the JWKS URL's origin
    # is the best guess; never None, so issuer and audience are always checked.
    origin = _origin(better_auth_url) if better_auth_url else (_origin(jwks_url) if jwks_url else None)
    database_url = env.get("DATABASE_URL", "").strip()
    migrations_url = env.get("MIGRATIONS_DATABASE_URL", "").strip()
    tuning = {key: value for key, value in env.items() if key.startswith("DB_")}
    return Settings(
        database=parse_database_url(database_url, env) if database_url else None,
        webhook_secrets=parse_webhook_secrets(env.get("WEBHOOK_SECRET", "")),
        webhook_max_body_bytes=_int(
            env, "WEBHOOK_MAX_BODY_BYTES", 262_144, minimum=1_024, maximum=10_485_760
        ),
        webhook_clock_skew_seconds=_float(env, "WEBHOOK_CLOCK_SKEW_SECONDS", 300.0, minimum=0),
        user_id_format=_choice(env, "USER_ID_FORMAT", ("uuid", "opaque"), "uuid"),  # type: ignore[arg-type]
        better_auth_url=better_auth_url,
        jwt_jwks_url=jwks_url,
        jwt_issuer=env.get("JWT_ISSUER", "").strip() or origin,
        jwt_audience=env.get("JWT_AUDIENCE", "").strip() or origin,
        jwt_algorithms=_jwt_algorithms(env),
        jwt_leeway_seconds=_float(env, "JWT_LEEWAY_SECONDS", 30.0, minimum=0, maximum=3600),
        jwt_jwks_cooldown_seconds=_float(env, "JWT_JWKS_COOLDOWN_SECONDS", 10.0, minimum=0.01, maximum=3600),
        jwt_jwks_max_age_seconds=_float(env, "JWT_JWKS_MAX_AGE_SECONDS", 600.0, minimum=1, maximum=604_800),
        cors_allow_origins=_origins(env),
        log_level=_choice(
            env, "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "INFO", upper=True
        ),
        ingest_batch_size=_int(env, "INGEST_BATCH_SIZE", 256, minimum=1, maximum=5_000),
        ingest_queue_size=_int(env, "INGEST_QUEUE_SIZE", 4_096, minimum=1, maximum=1_000_000),
        ingest_writers=_int(env, "INGEST_WRITERS", 1, minimum=1, maximum=16),
        ingest_timeout_seconds=_float(env, "INGEST_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=60),
        retry_after_seconds=_int(env, "RETRY_AFTER_SECONDS", 5, minimum=1, maximum=3600),
        embedded_pg_dir=Path(env.get("EMBEDDED_PG_DIR", "").strip() or _default_data_dir()).expanduser(),
        migrations_database=(
            parse_database_url(migrations_url, tuning, variable="MIGRATIONS_DATABASE_URL")
            if migrations_url
            else None
        ),
        better_auth_database_url=env.get("BETTER_AUTH_DATABASE_URL", "").strip() or None,
        database_tuning=tuning,
    )


def parse_webhook_secrets(raw: str) -> tuple[bytes, ...]:
    """`whsec_<base64>` secrets separated by spaces or commas, decoded to their raw keys.

    svix decodes secrets leniently (junk characters are dropped), so a mistyped secret would only show
    up later as every delivery failing; we decode strictly here instead.
    """
    secrets: list[bytes] = []
    for token in (t for t in re.split(r"[\s,]+", raw.strip()) if t):
        if not token.startswith("whsec_"):
            raise ConfigError("WEBHOOK_SECRET", "each secret must look like whsec_<base64>")
        body = token.removeprefix("whsec_")
        try:
            key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("WEBHOOK_SECRET", "a secret is not valid base64 after whsec_") from None
        if not 24 <= len(key) <= 64:
            raise ConfigError("WEBHOOK_SECRET", f"a secret decodes to {len(key)} bytes; expected 24 to 64")
        secrets.append(key)
    return tuple(secrets)


def parse_database_url(
    url: str, env: Mapping[str, str], *, variable: str = "DATABASE_URL"
) -> DatabaseSettings:
    """Normalise a database URL for asyncpg and for yoyo, honouring sslmode and PgBouncer; errors name
    `variable` (the one to fix)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(variable, "is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _ACCEPTED_SCHEMES:
        raise ConfigError(variable, "must start with postgresql://, postgres:// or postgresql+asyncpg://")
    if not parts.hostname and "host" not in dict(parse_qsl(parts.query)):
        raise ConfigError(variable, "has no host")
    query = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in _SSLMODES:
        raise ConfigError(variable, f"sslmode must be one of {', '.join(sorted(_SSLMODES))}")
    connect_timeout = _float(env, "DB_CONNECT_TIMEOUT", 10.0, minimum=0.1, maximum=300)
    if "connect_timeout" in params:
        try:
            connect_timeout = max(float(params["connect_timeout"]), 0.1)
        except ValueError:
            raise ConfigError(variable, "connect_timeout must be a number of seconds") from None

    asyncpg_query = urlencode([(k, v) for k, v in query if k not in _LIBPQ_ONLY_PARAMS])
    asyncpg_dsn = urlunsplit(("postgresql", parts.netloc, parts.path, asyncpg_query, ""))
    yoyo_url = urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, parts.query, ""))

    host = (parts.hostname or params.get("host", "")).lower()
    behind_pooler = "-pooler" in host or port == 6432 or params.get("pgbouncer") == "true"
    cache = _choice(env, "DB_STATEMENT_CACHE", ("auto", "on", "off"), "auto")
    statement_cache = (not behind_pooler) if cache == "auto" else cache == "on"
    return DatabaseSettings(
        url=url,
        asyncpg_dsn=asyncpg_dsn,
        yoyo_url=yoyo_url,
        connect_timeout=connect_timeout,
        statement_cache=statement_cache,
        pool_size=_int(env, "DB_POOL_SIZE", 10, minimum=1, maximum=1_000),
        max_overflow=_int(env, "DB_MAX_OVERFLOW", 20, minimum=0, maximum=1_000),
        pool_recycle=_float(env, "DB_POOL_RECYCLE", 3600.0, minimum=0),
        acquire_timeout=_float(env, "DB_ACQUIRE_TIMEOUT", 5.0, minimum=0.1, maximum=300),
        command_timeout=_float(env, "DB_COMMAND_TIMEOUT", 10.0, minimum=0.1, maximum=3600),
    )


def redact_url(url: str) -> str:
    """The URL for logs and reports: the password and every query value masked, but for the connection
    parameters that are never secret (`sslmode=require` still tells an operator something)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if parts.password is not None:
        user = quote(unquote(parts.username or ""), safe="")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{port}" if port else "")
    query = urlencode(
        [(key, value if key in _PLAIN_QUERY_KEYS else "***")
         for key, value in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*/",
    )  # fmt: skip
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


# Query parameters shown as they are in redacted URLs (libpq's and asyncpg's non-secret ones).
_PLAIN_QUERY_KEYS = frozenset(
    {"sslmode", "host", "port", "dbname", "connect_timeout", "application_name", "channel_binding",
     "target_session_attrs", "pgbouncer", "sslrootcert"}
)  # fmt: skip


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "sync-service" / "postgres")


def _origin(url: str) -> str:
    # Never the userinfo: Better Auth's issuer has none, and a password must not travel into iss/aud
    # (nor into check-config's report of them).
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _optional_url(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(name, "must be an http:// or https:// URL")
    return value


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    origins = []
    for token in (t for t in re.split(r"[\s,]+", env.get("CORS_ALLOW_ORIGINS", "").strip()) if t):
        parts = urlsplit(token)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(
                "CORS_ALLOW_ORIGINS", f"{token!r} is not an origin like https://app.example.com"
            )
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return tuple(origins)


def _jwt_algorithms(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("JWT_ALGORITHMS", "").strip()
    if not raw:
        return DEFAULT_JWT_ALGORITHMS
    algorithms = tuple(t for t in re.split(r"[\s,]+", raw) if t)
    unknown = [a for a in algorithms if a not in SUPPORTED_JWT_ALGORITHMS]
    if unknown:
        allowed = ", ".join(sorted(SUPPORTED_JWT_ALGORITHMS))
        raise ConfigError("JWT_ALGORITHMS", f"unsupported {', '.join(unknown)}; allowed: {allowed}")
    return algorithms


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(name, f"must be {bound}, got {value}")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float | None = None
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if not value >= minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise ConfigError(name, f"must be {bound}, got {raw}")
    return value


def _choice(
    env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str, *, upper: bool = False
) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
    return value
