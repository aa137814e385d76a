"""The project's exceptions, grouped by how a caller recovers from them.

- `ConfigError`: fix the environment and start again (the CLI prints one line).
- `ClientError` subclasses: the request is wrong; answer 4xx, change nothing.
- `ServiceUnavailable` subclasses: try again later; answer 503 with Retry-After, acknowledge nothing.
- `InvalidToken`: the bearer middleware answers 401 with its `WWW-Authenticate` challenge itself (the
  generic 4xx handler would drop the challenge), so it is not a `ClientError`.
- `JwksError`: the key set could not be had; the token check treats it as no key (401), keeping the last
  good set, so it is not a `ServiceUnavailable` either.
"""

from __future__ import annotations


class SyncServiceError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SyncServiceError):
    """An environment variable is missing or has a bad value."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class ClientError(SyncServiceError):
    """The request can never succeed as sent."""

    status_code = 400


class InvalidSignature(ClientError):
    """Webhook headers or signature did not verify. The detail never says why (no oracle)."""

    status_code = 401


class MalformedBody(ClientError):
    """A verified webhook body that is not a JSON object."""

    status_code = 400


class ServiceUnavailable(SyncServiceError):
    """Nothing was acknowledged; the sender should retry after a pause."""

    status_code = 503


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL could not be reached, or failed mid-transaction."""


class Overloaded(ServiceUnavailable):
    """The ingest queue is full or a delivery waited too long for its commit."""


class MigrationError(SyncServiceError):
    """Migrations could not be applied or rolled back."""


class InvalidToken(SyncServiceError):
    """The token is not acceptable. `reason` is for debug logs only, never for the client (no oracle)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwksError(SyncServiceError):
    """The key set could not be fetched or holds no usable key."""
