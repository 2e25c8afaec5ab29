"""Fencing: a write under a fence that is no longer the lock's changes nothing.

Against a real PostgreSQL, with the PostgreSQL locker and state backend as the nodes use them,
and the S3 store's real state record.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
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
    assert fences == [1, 2, 3, 4, 5]


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
    add one part and save under their fence. Every fence is new, no save is refused, and no
    update is lost: the final state has all 120 parts."""
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
                lock.release()
                with guard:
                    fences.append(lock.fence)
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
    assert sorted(fences) == list(range(1, 8 * rounds + 1))
    final = backend.load(upload)
    assert final is not None and len(final.parts) == 8 * rounds and final.offset == 8 * rounds


def test_delete_forgets_state_and_lease(
    backend: PgStateBackend[S3UploadState], locker: PgLocker
) -> None:
    states = [new_state() for _ in range(3)]
    for state in states:
        backend.create(state)
    locker.acquire(states[0].info.upload, timeout=5, release_requested=_nothing).release()
    backend.delete(states[0].info.upload)
    assert backend.load(states[0].info.upload) is None
    assert sorted(s.info.upload for s in backend.all()) == sorted(s.info.upload for s in states[1:])
    # A new lock on a deleted upload starts a new lease row.
    assert locker.acquire(states[0].info.upload, timeout=5, release_requested=_nothing).fence == 1


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
