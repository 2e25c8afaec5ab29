"""The lease lock across nodes: renewal, takeover after a stall, asking the holder to let go.

"Nodes" are PgLockers with their own node ids; the cross-process tests run the holder as a
separate Python process (lease_holder.py) that the test SIGSTOPs like a stalled receiver.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockd.receiver.shared.connection import PgPool
from dockd.receiver.shared.locker import PgLock, PgLocker
from dockd.receiver.shared.state import PgStateBackend
from dockd.receiver.storage.api import Fenced, StoreUnavailable
from dockd.receiver.storage.s3_state import S3UploadState
from pg_records import advanced, new_state

pytestmark = pytest.mark.pg

HOLDER = Path(__file__).with_name("lease_holder.py")


def _nothing() -> None:
    pass


class Holder:
    """lease_holder.py as a child process: one line per command, one line per answer."""

    def __init__(self, dsn: str, node: str, upload: str, lease_seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HOLDER), dsn, node, upload, str(lease_seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"holder exited with {self.process.wait()}"
        return line.strip()

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait()


def _held_fence(holder: Holder) -> int:
    word, fence = holder.read().split()
    assert word == "held"
    return int(fence)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.close()


@pytest.fixture
def backend(pool: PgPool) -> PgStateBackend[S3UploadState]:
    return PgStateBackend(pool, S3UploadState.from_json)


def test_a_renewed_lease_outlives_its_lease_time(pool: PgPool) -> None:
    holder = PgLocker(pool, node="holder", lease_seconds=1.0)
    waiter = PgLocker(pool, node="waiter", lease_seconds=1.0)
    try:
        upload = new_state().info.upload
        holder.acquire(upload, timeout=5, release_requested=_nothing)  # ignores requests
        time.sleep(3.0)  # three lease times: only renewal keeps it
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            waiter.acquire(upload, timeout=0.5, release_requested=_nothing)
        assert time.monotonic() - began < 1.5  # the waiter's timeout, not a hang
    finally:
        holder.close()
        waiter.close()


def test_a_lease_not_renewed_is_taken_over_and_the_old_holders_writes_refused(
    pool: PgPool, backend: PgStateBackend[S3UploadState]
) -> None:
    state = new_state()
    backend.create(state)
    upload = state.info.upload
    stalled = PgLocker(pool, node="stalled", lease_seconds=1.0)
    taker = PgLocker(pool, node="taker", lease_seconds=1.0)
    try:
        asked = threading.Event()
        old = stalled.acquire(upload, timeout=5, release_requested=asked.set)
        stalled.close()  # stops renewing, as a SIGSTOPped node does
        began = time.monotonic()
        new = taker.acquire(upload, timeout=10, release_requested=_nothing)
        took = time.monotonic() - began
        assert new.fence > old.fence
        assert took < 3.0, f"takeover took {took:.1f}s with a 1 s lease"
        mine = advanced(state, 5 << 20, b"new")
        backend.save(mine, fence=new.fence)

        with pytest.raises(Fenced):
            backend.check_fence(upload, fence=old.fence)
        with pytest.raises(Fenced):
            backend.save(advanced(state, 5 << 20, b"late"), fence=old.fence)
        assert backend.load(upload) == mine
        # When the stalled node wakes, its renewal finds the lease gone and cuts its request off.
        stalled.renew()
        assert old.lost and asked.is_set()
    finally:
        taker.close()


def test_release_requested_reaches_the_holder_in_another_process(
    pg_dsn: str, pool: PgPool, holders: list[Holder]
) -> None:
    upload = new_state().info.upload
    holder = Holder(pg_dsn, "node-p", upload, lease_seconds=30)  # renewal would take 10 s
    holders.append(holder)
    held = _held_fence(holder)
    holder.send("wait-asked")
    waiter = PgLocker(pool, node="node-m", lease_seconds=30)
    acquired: list[PgLock] = []
    try:
        began = time.monotonic()
        thread = threading.Thread(
            target=lambda: acquired.append(
                waiter.acquire(upload, timeout=10, release_requested=_nothing)
            )
        )
        thread.start()
        assert holder.read() == "asked"
        asked_after = time.monotonic() - began
        holder.send("release")
        assert holder.read() == "released"
        thread.join(10)
        handed_over = time.monotonic() - began
    finally:
        waiter.close()
    assert len(acquired) == 1 and acquired[0].fence > held
    # Through NOTIFY, not the holder's renewal (every 10 s here).
    assert asked_after < 2.0, f"the holder heard after {asked_after:.2f}s"
    print(
        f"\nask -> holder heard {asked_after * 1000:.0f} ms; handed over {handed_over * 1000:.0f} ms"
    )


def test_a_sigstopped_node_is_taken_over_and_its_late_write_is_refused(
    pg_dsn: str, pool: PgPool, backend: PgStateBackend[S3UploadState], holders: list[Holder]
) -> None:
    state = new_state()
    backend.create(state)
    upload = state.info.upload
    holder = Holder(pg_dsn, "node-s", upload, lease_seconds=1.0)
    holders.append(holder)
    held = _held_fence(holder)
    holder.process.send_signal(signal.SIGSTOP)
    taker = PgLocker(pool, node="node-t", lease_seconds=1.0)
    try:
        began = time.monotonic()
        lock = taker.acquire(upload, timeout=10, release_requested=_nothing)
        took = time.monotonic() - began
        assert lock.fence > held
        mine = advanced(state, 5 << 20, b"t")
        backend.save(mine, fence=lock.fence)
        holder.process.send_signal(signal.SIGCONT)
        holder.send("write")
        assert holder.read() == "fenced fenced"  # check_fence, then its late save
        assert backend.load(upload) == mine
        backend.check_fence(upload, fence=lock.fence)  # the new holder goes on
    finally:
        taker.close()
    print(f"\ntakeover of a SIGSTOPped holder, 1 s lease: {took:.2f} s")


def test_a_release_request_missed_by_the_listener_is_found_by_renewal(pool: PgPool) -> None:
    """The listener was down when the request came (no NOTIFY heard): the next renewal reads the
    flag and asks the holder all the same."""
    holder = PgLocker(pool, node="holder", lease_seconds=30)
    try:
        asked = threading.Event()
        upload = new_state().info.upload
        holder.acquire(upload, timeout=5, release_requested=asked.set)
        with pool.transaction() as conn:  # a waiter's request, without the NOTIFY
            conn.execute(
                "UPDATE dockd_upload_lease SET release_requested = true WHERE upload = %s",
                (upload,),
            )
        assert not asked.is_set()
        holder.renew()
        assert asked.is_set()
    finally:
        holder.close()
