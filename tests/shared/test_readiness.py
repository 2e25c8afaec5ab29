"""GET /ready: what a load balancer's health check sees of a node and its store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest
from dockd.receiver.shared.connection import PgPool, PgSettings
from dockd.receiver.shared.schema import migrate
from dockd.receiver.storage.api import StoreUnavailable
from dockd.receiver.storage.file import FileStore
from support.postgres import PostgresServer
from support.receiver import running_receiver

SECRET_DETAIL = "db.internal.example:5432 password authentication failed for user dockd"


class _UnavailableStore(FileStore):
    def ready(self) -> None:
        raise StoreUnavailable(SECRET_DETAIL)


class _HangingStore(FileStore):
    release = threading.Event()

    def ready(self) -> None:
        self.release.wait(30)


class _StoreOnPostgres(FileStore):
    """A store whose state is in PostgreSQL, as the S3 store's is in multi-node mode."""

    pool: PgPool

    def ready(self) -> None:
        self.pool.ready()


async def _get_ready(url: str) -> tuple[int, str, float]:
    ready_url = url.split("/files/")[0] + "/ready"
    began = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(ready_url) as response:
        return response.status, await response.text(), time.monotonic() - began


async def test_ready_answers_200_without_credentials(tmp_path: Path) -> None:
    async with running_receiver(tmp_path, tokens={"secret-token": "dock-1"}) as rx:
        status, body, _ = await _get_ready(rx.url)  # no token, no Tus-Resumable
    assert (status, body) == (200, "ready\n")


async def test_ready_is_not_taken_for_an_upload_when_uploads_live_at_the_root(
    tmp_path: Path,
) -> None:
    async with running_receiver(tmp_path, base_path="/") as rx:
        ready_url = rx.url.rstrip("/") + "/ready"
        async with aiohttp.ClientSession() as session, session.get(ready_url) as response:
            assert (response.status, await response.text()) == (200, "ready\n")


async def test_ready_is_503_with_a_short_reason_when_the_store_is_unavailable(
    tmp_path: Path,
) -> None:
    store = _UnavailableStore(tmp_path / "store")
    async with running_receiver(tmp_path, store=store) as rx:
        status, body, _ = await _get_ready(rx.url)
    assert status == 503
    assert body == "not ready: store unavailable\n"  # nothing of the backend's own message


async def test_ready_is_503_within_its_bound_when_the_store_hangs(tmp_path: Path) -> None:
    store = _HangingStore(tmp_path / "store")
    try:
        async with running_receiver(tmp_path, store=store) as rx:
            status, body, took = await _get_ready(rx.url)
            again, _, took_again = await _get_ready(rx.url)  # shares the probe still running
    finally:
        _HangingStore.release.set()
    assert (status, body) == (503, "not ready: store did not answer in time\n")
    assert again == 503
    assert took < 4.5 and took_again < 4.5


async def test_ready_is_503_while_shutting_down(tmp_path: Path) -> None:
    async with running_receiver(tmp_path) as rx:
        rx.running.coordinator.stopping = True
        status, body, _ = await _get_ready(rx.url)
    assert (status, body) == (503, "not ready: shutting down\n")


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.mark.pg
async def test_ready_follows_postgresql(tmp_path: Path, own_postgres: PostgresServer) -> None:
    with psycopg.connect(own_postgres.dsn) as conn:
        migrate(conn)
    store = _StoreOnPostgres(tmp_path / "store")
    store.pool = PgPool(PgSettings(own_postgres.dsn))
    try:
        async with running_receiver(tmp_path, store=store) as rx:
            assert (await _get_ready(rx.url))[0] == 200
            own_postgres.stop()
            status, body, took = await _get_ready(rx.url)
            assert (status, body) == (503, "not ready: store unavailable\n")
            assert took < 3.5
            own_postgres.start()
            assert (await _get_ready(rx.url))[0] == 200
    finally:
        store.pool.close()
    print(f"\n/ready with PostgreSQL stopped: 503 after {took:.2f} s")
