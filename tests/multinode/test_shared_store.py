"""The multi-node store on real RGW and PostgreSQL: what a node does without a request's lock.

A node starting while another completes an upload must not finish that completion beside it (at
start a `completing/` record is finished only under the upload's lock), and a node whose lock was
taken over cannot end the upload (termination and expiry check the fence first)."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from dataclasses import asdict

import pytest
from cluster import PART
from dockd.receiver.shared.store import SharedS3Store, open_shared_store
from dockd.receiver.storage.api import (
    CompletedUpload,
    CreationInfo,
    Fenced,
    NotFound,
    StoreError,
    new_upload_id,
    rfc3339,
)
from dockd.receiver.storage.s3 import S3Store
from support.ceph import CephCluster
from support.postgres import PostgresServer
from support.stores import rgw_settings

pytestmark = pytest.mark.multinode


@pytest.fixture
def two_nodes(ceph: CephCluster, postgres: PostgresServer) -> Iterator[list[SharedS3Store]]:
    ceph.ensure_rgw()
    settings = rgw_settings(ceph.endpoint, part_size=PART)
    base = S3Store(settings)
    base.recover()
    dsn = postgres.create_database("mn")
    nodes = [
        open_shared_store(S3Store(settings, client=base.client), dsn, node=name, lease_seconds=3)
        for name in ("n1", "n2")
    ]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.close()


def test_a_completion_in_progress_on_another_node_is_left_to_it_at_start(
    two_nodes: list[SharedS3Store],
) -> None:
    completing, starting = two_nodes
    upload, data = new_upload_id(), os.urandom(PART)
    completed_at = rfc3339(dt.datetime.now(dt.UTC))
    info = CreationInfo(upload, len(data), "", {}, completed_at, None)
    completing.create(info, time.time() + 3600)
    whole = completing.new_hash()
    whole.update(data)
    writer = completing.open_writer(upload, 0)
    writer.write(data, 0)
    writer.commit(len(data), time.time() + 3600, whole)
    writer.close()
    record = CompletedUpload(upload, len(data), whole.hexdigest(), "receipt", completed_at)
    # n1 holds the lock and is between complete()'s step 2 (the completing record) and step 3.
    held = completing.locker.acquire(upload, timeout=2, release_requested=lambda: None)
    completing._put_json(
        completing.settings.work_bucket, f"completing/{upload}.json", asdict(record)
    )
    starting.recover()
    assert starting.load_completed(upload) is None  # left to n1
    held.release()  # n1 dies or lets go: the next start finishes it
    starting.recover()
    assert starting.load_completed(upload) == record
    with starting.open_completed(upload) as stored:
        assert stored.read() == data


def test_a_node_whose_lock_was_taken_over_cannot_terminate_or_expire_the_upload(
    two_nodes: list[SharedS3Store],
) -> None:
    stale, current = two_nodes
    upload = new_upload_id()
    info = CreationInfo(upload, PART, "", {}, rfc3339(dt.datetime.now(dt.UTC)), None)
    stale.create(info, time.time() + 3600)
    old = stale.locker.acquire(upload, timeout=2, release_requested=lambda: None)
    old_fence = old.fence
    old.release()  # as if its lease ran out while it stalled
    new = current.locker.acquire(upload, timeout=2, release_requested=lambda: None)
    with pytest.raises(Fenced):
        stale.terminate(upload, fence=old_fence)
    with pytest.raises(Fenced):
        stale.expire(upload, None, fence=old_fence)
    assert current.partial(upload) is not None
    assert current.load_tombstone(upload) is None
    current.terminate(upload, fence=new.fence)
    assert current.partial(upload) is None


@pytest.mark.parametrize("ending", ["terminate", "expire"])
def test_a_node_that_stalls_after_its_fence_check_cannot_end_what_the_next_holder_acknowledged(
    two_nodes: list[SharedS3Store], monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """The check-then-act window: the stale node passes its fence check, stalls, and meanwhile
    the lease runs out and the other node commits (and acknowledges) a chunk. When the stale
    node goes on, the upload, its committed part and its state must all still be there."""
    stale, current = two_nodes
    upload, data = new_upload_id(), os.urandom(PART)
    created = rfc3339(dt.datetime.now(dt.UTC))
    stale.create(CreationInfo(upload, len(data), "", {}, created, None), time.time() + 3600)
    old = stale.locker.acquire(upload, timeout=2, release_requested=lambda: None)
    old_fence = old.fence
    whole = current.new_hash()
    whole.update(data)
    taken_over: list[int] = []
    real_load = stale.states.load

    def load_then_stall(upload_id: str) -> object:
        loaded = real_load(upload_id)
        if not taken_over:  # while stalled: the lease runs out, the other node commits
            old.release()
            new = current.locker.acquire(upload, timeout=2, release_requested=lambda: None)
            taken_over.append(new.fence)
            writer = current.open_writer(upload, 0, fence=new.fence)
            writer.write(data, 0)
            writer.commit(len(data), time.time() + 3600, whole)  # the 204 the dock relies on
            writer.close()
        return loaded

    monkeypatch.setattr(stale.states, "load", load_then_stall)
    with pytest.raises(Fenced):
        if ending == "terminate":
            stale.terminate(upload, fence=old_fence)
        else:
            stale.expire(upload, None, fence=old_fence)
    assert taken_over, "the stale node never read the state"
    partial = current.partial(upload)
    assert partial is not None and partial.offset == len(data)
    assert current.load_tombstone(upload) is None
    record = CompletedUpload(upload, len(data), whole.hexdigest(), "receipt", created)
    current.complete(record, fence=taken_over[0])
    with current.open_completed(upload) as stored:
        assert stored.read() == data


def test_a_node_that_stalls_mid_completion_does_not_replace_the_next_holders_receipt(
    two_nodes: list[SharedS3Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stale node saw no sidecar yet, stalled, and meanwhile the other node completed the
    upload and handed its receipt out. The stale node's sidecar must not replace it."""
    stale, current = two_nodes
    upload, data = new_upload_id(), os.urandom(PART)
    created = rfc3339(dt.datetime.now(dt.UTC))
    stale.create(CreationInfo(upload, len(data), "", {}, created, None), time.time() + 3600)
    whole = stale.new_hash()
    whole.update(data)
    old = stale.locker.acquire(upload, timeout=2, release_requested=lambda: None)
    writer = stale.open_writer(upload, 0, fence=old.fence)
    writer.write(data, 0)
    writer.commit(len(data), time.time() + 3600, whole)
    writer.close()
    late = CompletedUpload(upload, len(data), whole.hexdigest(), "receipt-late", created)
    handed_out = CompletedUpload(upload, len(data), whole.hexdigest(), "receipt-next", created)
    real_confirm = stale._confirm_length

    def confirm_then_stall(record: CompletedUpload) -> str | None:
        version = real_confirm(record)
        old.release()  # the lease runs out while the stale node is stopped
        new = current.locker.acquire(upload, timeout=2, release_requested=lambda: None)
        current.complete(handed_out, fence=new.fence)
        new.release()
        return version

    monkeypatch.setattr(stale, "_confirm_length", confirm_then_stall)
    with pytest.raises(StoreError):  # Fenced, or NotFound once the state is gone
        stale.complete(late, fence=old.fence)
    assert current.load_completed(upload) == handed_out


@pytest.mark.parametrize("ending", ["terminate", "expire"])
def test_ending_an_upload_another_node_completed_meanwhile_says_not_found(
    two_nodes: list[SharedS3Store], monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """The stale node read the state, stalled, and the other node completed the upload: the
    termination must not report success (a 204 for an upload that is in fact complete), and an
    expiry must leave no tombstone beside the completed upload."""
    stale, current = two_nodes
    upload, data = new_upload_id(), os.urandom(PART)
    created = rfc3339(dt.datetime.now(dt.UTC))
    stale.create(CreationInfo(upload, len(data), "", {}, created, None), time.time() + 3600)
    old = stale.locker.acquire(upload, timeout=2, release_requested=lambda: None)
    whole = current.new_hash()
    whole.update(data)
    record = CompletedUpload(upload, len(data), whole.hexdigest(), "receipt", created)
    real_load = stale.states.load

    def load_then_stall(upload_id: str) -> object:
        loaded = real_load(upload_id)
        if current.load_completed(upload) is None:  # while stalled: completed elsewhere
            old.release()
            new = current.locker.acquire(upload, timeout=2, release_requested=lambda: None)
            writer = current.open_writer(upload, 0, fence=new.fence)
            writer.write(data, 0)
            writer.commit(len(data), time.time() + 3600, whole)
            writer.close()
            current.complete(record, fence=new.fence)
            new.release()
        return loaded

    monkeypatch.setattr(stale.states, "load", load_then_stall)
    with pytest.raises(NotFound):
        if ending == "terminate":
            stale.terminate(upload, fence=old.fence)
        else:
            stale.expire(upload, None, fence=old.fence)
    assert current.load_completed(upload) == record
    assert current.load_tombstone(upload) is None
    with current.open_completed(upload) as stored:
        assert stored.read() == data
