"""Fixtures for the reliability suite: a PostgreSQL of our own to break, the log collector, and the
bounded hypothesis settings every property test here uses."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from sync_service.ops import migrations
from tests.helpers.databases import fresh_database
from tests.helpers.support import SECRET, SECRET_2, make_settings
from tests.reliability.log_capture import collector
from tests.reliability.own_postgres import OwnPostgres, own_postgres

# Examples per property test. CI keeps it small and derandomized (the same inputs every run, so a red
# build is reproducible); RELIABILITY_FUZZ_EXAMPLES=2000 locally explores far more, randomly.
FUZZ_EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "0")) or None


def fuzz_settings(ci_examples: int) -> settings:
    return settings(
        max_examples=FUZZ_EXAMPLES or ci_examples,
        derandomize=FUZZ_EXAMPLES is None,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )


@pytest.fixture(scope="session", autouse=True)
def logs_hold_no_secrets() -> Iterator[None]:
    """Collect every log record of the reliability run; at the end none may hold a secret, a token,
    an email or a name. (A failure here shows as an error at the teardown of the last test.)"""
    collector.mark_sensitive(SECRET, SECRET_2, SECRET.removeprefix("whsec_"), SECRET_2.removeprefix("whsec_"))
    collector.install()
    try:
        yield
    finally:
        collector.uninstall()
    leaks = collector.leaks()
    assert not leaks, f"{len(leaks)} log lines hold secrets or PII, e.g.:\n" + "\n".join(leaks[:5])


@pytest.fixture(scope="session")
def faulty_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL only these tests use; they stop, crash and restart it."""
    with own_postgres() as server:
        yield server


@pytest.fixture
def faulty_database_url(faulty_postgres: OwnPostgres) -> Iterator[str]:
    """A fresh, migrated database on the test's own server."""
    with fresh_database(faulty_postgres.url, "faults") as url:
        migrations.apply(make_settings(url).database.yoyo_url)  # type: ignore[union-attr]
        try:
            yield url
        finally:
            faulty_postgres.start_if_stopped()  # the test may have left it stopped: it drops the database
