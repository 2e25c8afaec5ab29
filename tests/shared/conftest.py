"""A real PostgreSQL per test run, a fresh migrated database per test, and shared-state helpers.

Tests here carry the `pg` marker, which the default addopts exclude; run them with
`.venv/bin/pytest tests/shared -m pg` after `scripts/setup --multinode` (or --test).
PostgreSQL's start time goes to the end-of-run summary.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from dockd.receiver.shared.connection import PgPool, PgSettings
from dockd.receiver.shared.schema import migrate
from support.postgres import PostgresServer, postgres_bindir

_measured: dict[str, str] = {}


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if postgres_bindir() is None:
        pytest.fail("PostgreSQL is not installed: run scripts/setup --multinode")
    server = PostgresServer()
    server.start()
    _measured["postgres start to first query, initdb included (s)"] = (
        f"{server.timings['start_s']:.2f} (initdb {server.timings['initdb_s']:.2f})"
    )
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> str:
    """A new database with the shared-state schema."""
    dsn = postgres.create_database()
    with psycopg.connect(dsn) as conn:
        migrate(conn)
    return dsn


@pytest.fixture
def pool(pg_dsn: str) -> Iterator[PgPool]:
    pool = PgPool(PgSettings(pg_dsn))
    try:
        yield pool
    finally:
        pool.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _measured:
        terminalreporter.section("PostgreSQL measurements")
        for name, value in _measured.items():
            terminalreporter.write_line(f"{name}: {value}")
