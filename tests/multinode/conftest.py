"""Real PostgreSQL and Ceph for the whole run; three `dockd serve` nodes and HAProxy per test.

Tests here carry the `multinode` marker, which the default addopts exclude; run them with
`scripts/test -m multinode` (or `.venv/bin/pytest tests/multinode -m multinode`) after
`scripts/setup --test` (Ceph, PostgreSQL and HAProxy).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster  # tests/multinode/cluster.py (rootdir-relative import)
from support.ceph import CephCluster, missing_binaries
from support.postgres import PostgresServer, postgres_bindir


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if postgres_bindir() is None:
        pytest.fail("PostgreSQL is not installed: run scripts/setup --test")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def ceph() -> Iterator[CephCluster]:
    if missing_binaries():
        pytest.fail(f"Ceph is not installed ({missing_binaries()}): run scripts/setup --test")
    with CephCluster(store_bytes=2 << 30) as cluster:
        yield cluster


@pytest.fixture
def cluster(tmp_path: Path, ceph: CephCluster, postgres: PostgresServer) -> Iterator[Cluster]:
    running = Cluster(tmp_path, ceph, postgres)
    try:
        yield running.start()
    finally:
        running.stop()
