"""Fencing: a write under a fence that is no longer the lock's changes nothing.

Against a real PostgreSQL, with the PostgreSQL locker and state backend as the nodes use them.
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
from dockd.receiver.storage.s3_state import S3UploadState
from pg_records import advanced, new_state

pytestmark = pytest.mark.pg


def _nothing() -> None:
    pass


@pytest.fixture
def backend(pool: PgPool) -> PgStateBackend[S3UploadState]:
    return PgStateBackend(pool, S3UploadState.from_json)


@pytest.fixture
def locker(pool: PgPool) -> Iterator[PgLocker]:
    locker = PgLocker(pool, node="node-a", lease_seconds=30)
    try:
        yield locker
    finally:
        locker.close()


def test_state_round_trips_with_its_hash_state(backend: PgStateBackend[S3UploadState]) -> None:
    state = advanced(new_state(), 1, 5 << 20, bytes(range(256)))  # hash state: any bytes
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
    committed = advanced(state, backend.allocate_part(upload, fence=new.fence), 5 << 20, b"new")
    backend.save(committed, fence=new.fence)

    late = advanced(committed, backend.allocate_part(upload, fence=new.fence), 5 << 20, b"late")
    with pytest.raises(Fenced):
        backend.save(late, fence=old.fence)
    # Everything as the current holder saved it; only the part number it took itself moved on.
    assert backend.load(upload) == replace(committed, next_part=late.next_part)
    with pytest.raises(Fenced):
        backend.save(late, fence=new.fence + 1)  # a token nobody was given


def test_allocate_part_with_an_old_fence_is_refused_and_takes_no_number(
    backend: PgStateBackend[S3UploadState], locker: PgLocker
) -> None:
    state = new_state()
    backend.create(state)
    upload = state.info.upload
    old = locker.acquire(upload, timeout=5, release_requested=_nothing)
    old.release()
    new = locker.acquire(upload, timeout=5, release_requested=_nothing)
    assert backend.allocate_part(upload, fence=new.fence) == 1
    with pytest.raises(Fenced):
        backend.allocate_part(upload, fence=old.fence)
    assert backend.allocate_part(upload, fence=new.fence) == 2
    with pytest.raises(NotFound):
        backend.allocate_part("x" * 32, fence=new.fence)


def test_part_numbers_never_repeat_under_8_concurrent_threads(
    backend: PgStateBackend[S3UploadState],
) -> None:
    state = new_state()
    backend.create(state)
    per_thread = 40
    taken: list[list[int]] = [[] for _ in range(8)]

    def allocate(mine: list[int]) -> None:
        for _ in range(per_thread):
            mine.append(backend.allocate_part(state.info.upload, fence=None))

    threads = [threading.Thread(target=allocate, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = [n for mine in taken for n in mine]
    assert sorted(numbers) == list(range(1, 8 * per_thread + 1))


def test_saving_an_older_next_part_never_lowers_the_counter(
    backend: PgStateBackend[S3UploadState],
) -> None:
    """A part taken after the state was read is not handed out again by a save of that state."""
    state = new_state()
    backend.create(state)
    upload = state.info.upload
    first = backend.allocate_part(upload, fence=None)
    backend.allocate_part(upload, fence=None)  # taken, its UploadPart failed: never reused
    backend.save(advanced(state, first, 5 << 20, b"h"), fence=None)  # next_part = 2 in the record
    loaded = backend.load(upload)
    assert loaded is not None and loaded.next_part == 3
    assert backend.allocate_part(upload, fence=None) == 3


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


def test_a_database_error_that_is_not_an_outage_is_a_store_error_not_a_503(
    backend: PgStateBackend[S3UploadState],
) -> None:
    """A refused statement (here a CHECK constraint) is a 500, not "retry later"."""
    broken = replace(new_state(), next_part=0)
    with pytest.raises(StoreError) as raised:
        backend.create(broken)
    assert not isinstance(raised.value, StoreUnavailable)
