"""The PostgreSQL the tests start is what the tests assume: unprivileged, durable, loopback
only, and gone (process and directory) when stopped."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest
from support.postgres import PostgresServer

pytestmark = pytest.mark.pg


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_runs_unprivileged_with_fsync_on_loopback_and_leaves_nothing() -> None:
    server = PostgresServer()
    server.start()
    pid = server.pid
    assert pid is not None
    try:
        if os.geteuid() == 0:
            assert _uid_of(pid) != 0
        with psycopg.connect(server.dsn) as conn:
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("fsync", "synchronous_commit", "listen_addresses", "server_version")
            }
        assert settings["fsync"] == "on"
        assert settings["synchronous_commit"] == "on"
        assert settings["listen_addresses"] == "127.0.0.1"
        assert settings["server_version"].startswith("15.")
    finally:
        server.close()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    assert not server.root.exists()
