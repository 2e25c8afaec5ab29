"""PostgreSQL gone: every operation answers StoreUnavailable within a bound, never hangs, and
everything committed before is there when it returns.

Its own PostgreSQL (not the session's), because the test stops it; crash-like (immediate
shutdown, no checkpoint), so what comes back is what the WAL made durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from dockd.receiver.shared.connection import PgPool, PgSettings
from dockd.receiver.shared.locker import PgLocker
from dockd.receiver.shared.schema import migrate
from dockd.receiver.shared.state import PgStateBackend
from dockd.receiver.storage.api import StoreUnavailable
from dockd.receiver.storage.s3_state import S3UploadState
from pg_records import advanced, new_state
from support.postgres import PostgresServer

pytestmark = pytest.mark.pg

BOUND = 3.0  # seconds: connect_timeout 2 s, plus the pool's own wait


def _nothing() -> None:
    pass


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def _unavailable_within(call: Callable[[], object]) -> float:
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as refused:
        call()
    assert refused.value.retry_after > 0
    return time.monotonic() - began


def _first_success(call: Callable[[], object], limit: float) -> float:
    began = time.monotonic()
    while True:
        try:
            call()
            return time.monotonic() - began
        except StoreUnavailable:
            if time.monotonic() - began > limit:
                raise
            time.sleep(0.1)


def test_postgres_stopped_for_10_s_refuses_quickly_and_loses_nothing(
    own_postgres: PostgresServer,
) -> None:
    with psycopg.connect(own_postgres.dsn) as conn:
        migrate(conn)
    pool = PgPool(PgSettings(own_postgres.dsn))
    backend = PgStateBackend(pool, S3UploadState.from_json)
    locker = PgLocker(pool, node="node-a", lease_seconds=30)
    try:
        state = new_state()
        backend.create(state)
        upload = state.info.upload
        lock = locker.acquire(upload, timeout=5, release_requested=_nothing)
        committed = advanced(state, 5 << 20, b"1")
        backend.save(committed, fence=lock.fence)

        own_postgres.stop(immediate=True)
        stopped_at = time.monotonic()
        refusals = {
            "load": _unavailable_within(lambda: backend.load(upload)),
            "save": _unavailable_within(lambda: backend.save(committed, fence=lock.fence)),
            "check_fence": _unavailable_within(
                lambda: backend.check_fence(upload, fence=lock.fence)
            ),
            "acquire": _unavailable_within(
                lambda: locker.acquire(upload, timeout=1, release_requested=_nothing)
            ),
            "ready": _unavailable_within(pool.ready),
        }
        assert max(refusals.values()) < BOUND, refusals
        time.sleep(max(0.0, 10.0 - (time.monotonic() - stopped_at)))

        own_postgres.start()
        back_after = _first_success(lambda: backend.load(upload), limit=15)
        assert backend.load(upload) == committed
        # The lease survived too: the same holder goes on under its fence.
        backend.save(advanced(committed, 1, b"2"), fence=lock.fence)
    finally:
        locker.close()
        pool.close()
    print(
        "\nrefusal times (s): "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in refusals.items())
        + f"; first success after restart {back_after:.2f} s"
    )
