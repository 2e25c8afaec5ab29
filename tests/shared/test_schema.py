"""The shared-state schema: migrations apply once, whoever runs them and how often."""

from __future__ import annotations

import threading

import psycopg
import pytest
from dockd.receiver.shared.schema import MIGRATIONS, migrate
from support.postgres import PostgresServer

pytestmark = pytest.mark.pg


def test_migrate_is_idempotent_and_records_each_version(postgres: PostgresServer) -> None:
    dsn = postgres.create_database()
    with psycopg.connect(dsn) as conn:
        assert migrate(conn) == len(MIGRATIONS)
        assert migrate(conn) == len(MIGRATIONS)
        versions = [row[0] for row in conn.execute("SELECT version FROM dockd_schema")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def test_nodes_starting_together_migrate_once(postgres: PostgresServer) -> None:
    """Three nodes start at once: the advisory lock lets one create the tables, none fails."""
    dsn = postgres.create_database()
    errors: list[BaseException] = []

    def node() -> None:
        try:
            with psycopg.connect(dsn) as conn:
                migrate(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=node) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM dockd_schema").fetchone()
    assert count == (len(MIGRATIONS),)
