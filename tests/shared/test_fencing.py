"""Fencing: a write under a fence that is no longer the lock's changes nothing.

Against a real PostgreSQL, with the PostgreSQL locker and state backend as the nodes use them,
and the S3 store's real state record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from dockd.receiver.protocol import parse_metadata
from dockd.receiver.shared.connection import PgPool
from dockd.receiver.shared.locker import PgLocker
from dockd.receiver.shared.state import PgStateBackend
from dockd.receiver.storage.api import Fenced, NotFound, StoreError, StoreUnavailable
from dockd.receiver.storage.s3_state import S3UploadState, UploadStateBackend
from pg_records import advanced, new_state

pytestmark = pytest.mark.pg


def _nothing() -> None:
    pass


@pytest.fixture
def backend(pool: PgPool) -> PgStateBackend[S3UploadState]:
    implements: UploadStateBackend = PgStateBackend(pool, S3UploadState.from_json)
    assert isinstance(implements, PgStateBackend)
    return implements


@pytest.fixture
def locker(pool: PgPool) -> Iterator[PgLocker]:
    locker = PgLocker(pool, node="node-a", lease_seconds=30)
    try:
        yield locker
    finally:
        locker.close()


def test_state_round_trips_with_its_hash_state(backend: PgStateBackend[S3UploadState]) -> None:
    state = advanced(new_state(), 5 << 20, bytes(range(256)))  # hash state: any bytes
    backend.create(state)
    assert backend.load(state.info.upload) == state
    assert backend.load("x" * 32) is None
    with pytest.raises(StoreError):
        backend.create(state)  # an id is created once


def test_fence_grows_on_every_acquisition(pool: PgPool, locker: PgLocker) -> None:
    upload = new_state().info.upload
    other = PgLocker(pool, node="node-b", lease_seconds=30)
    try:
        fences = []
        for holder in (locker, other, locker, locker, other):
            lock = holder.acquire(upload, timeout=5, release_requested=_nothing)
            fences.append(lock.fence)
            lock.release()
    finally:
        other.close()
    assert fences == sorted(set(fences)) and len(fences) == 5  # strictly growing


def test_save_with_an_old_fence_is_refused_and_changes_nothing(
    backend: PgStateBackend[S3UploadState], locker: PgLocker
) -> None:
    state = new_state()
    backend.create(state)
    upload = state.info.upload
    old = locker.acquire(upload, timeout=5, release_requested=_nothing)
    old.release()
    new = locker.acquire(upload, timeout=5, release_requested=_nothing)
    committed = advanced(state, 5 << 20, b"new")
    backend.save(committed, fence=new.fence)

    late = advanced(committed, 5 << 20, b"late")
    with pytest.raises(Fenced):
        backend.save(late, fence=old.fence)
    assert backend.load(upload) == committed
    with pytest.raises(Fenced):
        backend.save(late, fence=new.fence + 1)  # a token nobody was given
    assert backend.load(upload) == committed


def test_check_fence_refuses_an_old_fence_before_an_upload_part(
    backend: PgStateBackend[S3UploadState], locker: PgLocker
) -> None:
    state = new_state()
    backend.create(state)
    upload = state.info.upload
    old = locker.acquire(upload, timeout=5, release_requested=_nothing)
    old.release()
    new = locker.acquire(upload, timeout=5, release_requested=_nothing)
    backend.check_fence(upload, fence=new.fence)
    backend.check_fence(upload, fence=None)  # single node: no lock, nothing to check
    with pytest.raises(Fenced):
        backend.check_fence(upload, fence=old.fence)
    with pytest.raises(NotFound):
        backend.check_fence("x" * 32, fence=new.fence)


def test_8_nodes_racing_for_one_upload_take_turns_and_lose_no_update(
    pool: PgPool, backend: PgStateBackend[S3UploadState]
) -> None:
    """8 nodes (threads with their own lockers) each take the lock 15 times, load the state,
    add one part and save under their fence. Every fence is new and greater than the previous
    holder's, no save is refused, and no update is lost: the final state has all 120 parts."""
    state = new_state()
    backend.create(state)
    upload = state.info.upload
    rounds = 15
    fences: list[int] = []
    errors: list[BaseException] = []
    guard = threading.Lock()

    def node(name: str) -> None:
        locker = PgLocker(pool, node=name, lease_seconds=30)
        try:
            for _ in range(rounds):
                lock = locker.acquire(upload, timeout=30, release_requested=_nothing)
                current = backend.load(upload)
                assert current is not None
                backend.save(advanced(current, 1, b"h"), fence=lock.fence)
                with guard:  # still holding: the list is in the order the lock was held
                    fences.append(lock.fence)
                lock.release()
        except BaseException as exc:
            errors.append(exc)
        finally:
            locker.close()

    threads = [threading.Thread(target=node, args=(f"node-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(fences)) == 8 * rounds and fences == sorted(fences)
    final = backend.load(upload)
    assert final is not None and len(final.parts) == 8 * rounds and final.offset == 8 * rounds


def test_delete_forgets_state_and_lease(
    backend: PgStateBackend[S3UploadState], locker: PgLocker
) -> None:
    states = [new_state() for _ in range(3)]
    for state in states:
        backend.create(state)
    first = locker.acquire(states[0].info.upload, timeout=5, release_requested=_nothing)
    first.release()
    backend.delete(states[0].info.upload)
    assert backend.load(states[0].info.upload) is None
    assert sorted(s.info.upload for s in backend.all()) == sorted(s.info.upload for s in states[1:])
    # A lock on an upload whose lease row was deleted still gets a fence never handed out.
    again = locker.acquire(states[0].info.upload, timeout=5, release_requested=_nothing)
    assert again.fence > first.fence


def test_a_database_error_that_is_not_an_outage_is_a_store_error_not_a_503(
    backend: PgStateBackend[S3UploadState],
) -> None:
    """A refused statement (text with a NUL, which PostgreSQL cannot store) is a 500, not
    "retry later"."""
    state = new_state()
    broken = replace(state, info=replace(state.info, dock="dock\x00one"))
    with pytest.raises(StoreError) as raised:
        backend.create(broken)
    assert not isinstance(raised.value, StoreUnavailable)


def test_a_fence_drawn_while_waiting_for_the_lease_row_is_still_above_the_last_holders(
    pg_dsn: str, pool: PgPool, locker: PgLocker
) -> None:
    """An acquisition waits on the lease row while another transaction holds it; that one takes
    a newer fence and releases. The waiting acquisition must end with a fence above it."""
    upload = new_state().info.upload
    locker.acquire(upload, timeout=5, release_requested=_nothing).release()
    taken: list[int] = []
    with psycopg.connect(pg_dsn) as other:
        other.execute(  # holds the row lock until commit
            "SELECT 1 FROM dockd_upload_lease WHERE upload = %s FOR UPDATE", (upload,)
        )
        waiter = threading.Thread(
            target=lambda: taken.append(
                locker.acquire(upload, timeout=10, release_requested=_nothing).fence
            )
        )
        waiter.start()
        _wait_for_a_lock_wait(pg_dsn)
        row = other.execute(  # a later holder: draws a fence, uses it, lets go
            "UPDATE dockd_upload_lease SET fence = nextval('dockd_fence'), holder = NULL"
            " WHERE upload = %s RETURNING fence",
            (upload,),
        ).fetchone()
        assert row is not None
        other.commit()
        waiter.join(10)
    assert taken and taken[0] > row[0]


def _wait_for_a_lock_wait(dsn: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            if waiting and waiting[0] > 0:
                return
            time.sleep(0.02)
    raise AssertionError("the acquisition never waited for the lease row")


def test_delete_with_an_old_fence_is_refused_and_keeps_the_state(
    backend: PgStateBackend[S3UploadState], locker: PgLocker
) -> None:
    """Termination and expiry delete under their fence, in the same statement as the test: a
    holder whose lock was taken over deletes nothing the new holder committed."""
    state = new_state()
    backend.create(state)
    upload = state.info.upload
    old = locker.acquire(upload, timeout=5, release_requested=_nothing)
    old.release()
    new = locker.acquire(upload, timeout=5, release_requested=_nothing)
    committed = advanced(state, 5 << 20, b"new")
    backend.save(committed, fence=new.fence)
    with pytest.raises(Fenced):
        backend.delete(upload, fence=old.fence)
    assert backend.load(upload) == committed
    backend.delete(upload, fence=new.fence)
    assert backend.load(upload) is None
    with pytest.raises(NotFound):
        backend.delete(upload, fence=new.fence)  # already gone: said, not silently done


def test_hostile_metadata_a_client_may_send_is_stored_not_a_500(
    backend: PgStateBackend[S3UploadState],
) -> None:
    """`Upload-Metadata: name AA==` is valid tus (base64 of one NUL byte) and valid UTF-8, but
    PostgreSQL's jsonb cannot hold U+0000: the creation failed with a 500 in multi-node mode
    only. The exact bytes stay in the header, as for a value that is not UTF-8."""
    header = "name AA==,note YQBi,evidence dHJ1ZQ=="  # "\x00", "a\x00b", "true"
    metadata = parse_metadata(header, max_bytes=4096)
    state = new_state()
    state = replace(
        state, info=replace(state.info, metadata_header=header, metadata=metadata.as_text())
    )
    backend.create(state)
    stored = backend.load(state.info.upload)
    assert stored is not None and stored.info.metadata_header == header
    assert stored.info.metadata["evidence"] == "true"
    assert parse_metadata(stored.info.metadata_header, max_bytes=4096).values == metadata.values
