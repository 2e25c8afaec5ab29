"""The storage contract: what every `UploadStore` promises the receiver, run against each store.

Stores plug in through tests/receiver/contract/conftest.py. The promises that make a receipt
mean something are the ones tested hardest: a committed byte survives a restart and an
uncommitted one does not, the whole-upload SHA-256 is right after any resume, and completion is
atomic at every step a crash can hit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time

import aiohttp
import pytest
from dockd.crypto import receipt
from dockd.receiver.storage.api import (
    CompletedUpload,
    CreationInfo,
    NotFound,
    StoreError,
    StoreFull,
    StoreUnavailable,
    UploadStore,
    new_upload_id,
    rfc3339,
)
from support.receiver import Tus, running_receiver
from support.stores import SimulatedCrash, StoreUnderTest

DOCK = "dock-7"


def _info(length: int, upload: str | None = None) -> CreationInfo:
    return CreationInfo(
        upload=upload or new_upload_id(),
        length=length,
        metadata_header="camera Q0FNLTE=",
        metadata={"camera": "CAM-1"},
        created=rfc3339(dt.datetime.now(dt.UTC)),
        dock=DOCK,
    )


def _record(info: CreationInfo, data: bytes) -> CompletedUpload:
    return CompletedUpload(
        upload=info.upload,
        length=info.length,
        sha256=hashlib.sha256(data).hexdigest(),
        receipt="test-receipt",
        completed=rfc3339(dt.datetime.now(dt.UTC)),
        metadata=info.metadata,
        metadata_header=info.metadata_header,
        created=info.created,
        dock=info.dock,
    )


def _append(store: UploadStore, upload: str, offset: int, pieces: list[bytes]) -> int:
    """Write `pieces` from `offset` through one writer and commit them; return the new offset."""
    whole = store.running_hash(upload, offset)
    writer = store.open_writer(upload, offset)
    try:
        position = offset
        for piece in pieces:
            writer.write(piece, position)
            whole.update(piece)
            position += len(piece)
        writer.commit(position, time.time() + 60, whole)
    finally:
        writer.close()
    return position


def _read_all(store: UploadStore, upload: str, piece: int = 7) -> bytes:
    """The completed upload's bytes, read in small pieces as a streaming reader would."""
    out = bytearray()
    with store.open_completed(upload) as stream:
        while block := stream.read(piece):
            assert len(block) <= piece
            out += block
    return bytes(out)


def _offsets(store: UploadStore) -> dict[str, int]:
    return {p.info.upload: p.offset for p in store.recover()}


def test_is_an_upload_store(under_test: StoreUnderTest) -> None:
    assert isinstance(under_test.reopen(), UploadStore)


def test_create_write_commit_resume_complete(under_test: StoreUnderTest) -> None:
    store = under_test.reopen()
    store.recover()
    data = bytes(range(256)) * 40
    info = _info(len(data))
    store.create(info, time.time() + 60)
    assert _offsets(store) == {info.upload: 0}

    offset = _append(store, info.upload, 0, [data[:1000], data[1000:4000]])
    [partial] = store.recover()
    assert (partial.info, partial.offset) == (info, 4000)

    offset = _append(store, info.upload, offset, [data[4000:]])
    assert offset == len(data)
    store.complete(_record(info, data))

    completed = store.load_completed(info.upload)
    assert completed is not None and completed.sha256 == hashlib.sha256(data).hexdigest()
    assert _read_all(store, info.upload) == data
    assert store.recover() == []


def test_restart_keeps_committed_bytes_and_drops_uncommitted(under_test: StoreUnderTest) -> None:
    store = under_test.reopen()
    store.recover()
    info = _info(300)
    store.create(info, time.time() + 60)
    _append(store, info.upload, 0, [b"a" * 100])
    writer = store.open_writer(info.upload, 100)
    writer.write(b"X" * 50, 100)  # never committed: the server "crashes" before the sync
    del writer

    restarted = under_test.reopen()
    assert _offsets(restarted) == {info.upload: 100}
    # The running hash rebuilt after the restart covers exactly the committed prefix.
    assert restarted.running_hash(info.upload, 100).hexdigest() == (
        hashlib.sha256(b"a" * 100).hexdigest()
    )
    _append(restarted, info.upload, 100, [b"b" * 200])
    data = b"a" * 100 + b"b" * 200
    restarted.complete(_record(info, data))
    assert _read_all(restarted, info.upload) == data


def test_discard_drops_a_refused_chunk(under_test: StoreUnderTest) -> None:
    store = under_test.reopen()
    store.recover()
    info = _info(100)
    store.create(info, time.time() + 60)
    _append(store, info.upload, 0, [b"a" * 40])
    writer = store.open_writer(info.upload, 40)
    writer.write(b"bad" * 10, 40)
    writer.discard()
    writer.close()
    _append(store, info.upload, 40, [b"b" * 60])
    assert _offsets(under_test.reopen()) == {info.upload: 100}
    store.complete(_record(info, b"a" * 40 + b"b" * 60))
    assert _read_all(store, info.upload) == b"a" * 40 + b"b" * 60


def test_completion_is_atomic_at_every_crash_point(under_test: StoreUnderTest) -> None:
    if under_test.crash_at_step is None or under_test.count_steps is None:
        pytest.skip(f"{under_test.name} store completes in one step: nothing to interrupt")
    data = b"evidence " * 1000

    def ready_upload() -> tuple[UploadStore, CreationInfo]:
        store = under_test.reopen()
        store.recover()
        info = _info(len(data))
        store.create(info, time.time() + 60)
        _append(store, info.upload, 0, [data])
        return store, info

    store, info = ready_upload()
    with under_test.count_steps() as steps:
        store.complete(_record(info, data))
    assert steps[0] >= 2, "completion should take several durable steps"

    for crash_at in range(steps[0]):
        store, info = ready_upload()
        with pytest.raises(SimulatedCrash), under_test.crash_at_step(crash_at):
            store.complete(_record(info, data))
        restarted = under_test.reopen()
        unfinished = _offsets(restarted)
        completed = restarted.load_completed(info.upload)
        if completed is None:
            # Not complete: then resumable with every byte, and completing again works.
            assert unfinished[info.upload] == len(data), f"crash at step {crash_at}"
            restarted.complete(_record(info, data))
        else:
            assert info.upload not in unfinished, f"crash at step {crash_at}: both states"
            assert completed.sha256 == hashlib.sha256(data).hexdigest()
        assert _read_all(restarted, info.upload, piece=4096) == data, f"crash at {crash_at}"


def test_terminate_forgets_the_upload(under_test: StoreUnderTest) -> None:
    store = under_test.reopen()
    store.recover()
    info = _info(10)
    store.create(info, time.time() + 60)
    _append(store, info.upload, 0, [b"12345"])
    store.terminate(info.upload)
    restarted = under_test.reopen()
    assert restarted.recover() == []
    assert restarted.load_completed(info.upload) is None
    assert restarted.load_tombstone(info.upload) is None


def test_expiry_leaves_a_tombstone_until_swept(under_test: StoreUnderTest) -> None:
    store = under_test.reopen()
    store.recover()
    info = _info(10)
    store.create(info, time.time() + 60)
    store.expire(info.upload, DOCK)
    restarted = under_test.reopen()
    assert restarted.recover() == []
    tombstone = restarted.load_tombstone(info.upload)
    assert tombstone is not None and (tombstone.reason, tombstone.dock) == ("expired", DOCK)
    assert restarted.sweep_tombstones(older_than=time.time() - 3600) == 0
    assert restarted.sweep_tombstones(older_than=time.time() + 3600) == 1
    assert restarted.load_tombstone(info.upload) is None


def test_iterates_and_streams_only_completed_uploads(under_test: StoreUnderTest) -> None:
    store = under_test.reopen()
    store.recover()
    contents = {}
    for data in (b"first clip", b"second clip" * 1000, b""):
        info = _info(len(data))
        store.create(info, time.time() + 60)
        if data:
            _append(store, info.upload, 0, [data])
        store.complete(_record(info, data))
        contents[info.upload] = data
    unfinished = _info(5)
    store.create(unfinished, time.time() + 60)

    listed = list(under_test.reopen().completed())
    assert [c.upload for c in listed] == sorted(contents)
    for record in listed:
        assert record.sha256 == hashlib.sha256(contents[record.upload]).hexdigest()
        assert _read_all(store, record.upload, piece=1000) == contents[record.upload]
    with pytest.raises(NotFound):
        store.open_completed(unfinished.upload)


def test_full_store_refuses_with_store_full(under_test: StoreUnderTest) -> None:
    if under_test.make_full is None:
        pytest.skip(f"{under_test.name} store cannot be made full here")
    store = under_test.reopen()
    store.recover()
    info = _info(100)
    store.create(info, time.time() + 60)
    _append(store, info.upload, 0, [b"a" * 10])
    under_test.make_full()
    with pytest.raises(StoreFull):
        _append(store, info.upload, 10, [b"b" * 90])
    assert isinstance(StoreFull("x"), StoreError)


async def test_full_store_is_507_and_keeps_the_committed_offset(
    under_test: StoreUnderTest, tmp_path
) -> None:
    if under_test.make_full is None:
        pytest.skip(f"{under_test.name} store cannot be made full here")
    async with (
        running_receiver(tmp_path, store=under_test.reopen()) as rx,
        aiohttp.ClientSession() as session,
    ):
        tus = Tus(session, rx.url)
        created = await tus.create(100)
        location = created.headers["Location"]
        assert (await tus.patch(location, 0, b"a" * 10)).status == 204
        under_test.make_full()
        refused = await tus.patch(location, 10, b"b" * 90)
        assert refused.status == 507, refused
        assert refused.offset == 10
        assert (await tus.head(location)).offset == 10


async def test_unavailable_backend_is_503_with_retry_after(
    under_test: StoreUnderTest, tmp_path
) -> None:
    if under_test.make_unavailable is None:
        pytest.skip(f"{under_test.name} store has no backend to lose")
    async with (
        running_receiver(tmp_path, store=under_test.reopen()) as rx,
        aiohttp.ClientSession() as session,
    ):
        tus = Tus(session, rx.url)
        location = (await tus.create(100)).headers["Location"]
        assert (await tus.patch(location, 0, b"a" * 10)).status == 204
        under_test.make_unavailable()
        for reply in (
            await tus.patch(location, 10, b"b" * 90),
            await tus.create(5),
        ):
            assert reply.status == 503, reply
            assert int(reply.headers["Retry-After"]) >= 1
        with pytest.raises(StoreUnavailable):
            rx.running.store.load_completed(location.rsplit("/", 1)[-1])


async def test_receiver_restart_resumes_and_signs_exactly_the_stored_bytes(
    under_test: StoreUnderTest, tmp_path
) -> None:
    """The whole receiver on this store: a restart between PATCHes loses nothing acknowledged,
    the rebuilt running hash is right, and the receipt covers the bytes the store returns."""
    data = bytes(range(251)) * 13
    async with aiohttp.ClientSession() as session:
        async with running_receiver(tmp_path, store=under_test.reopen()) as rx:
            tus = Tus(session, rx.url)
            location = (await tus.create(len(data))).headers["Location"]
            assert (await tus.patch(location, 0, data[:1000])).offset == 1000
        upload = location.rsplit("/", 1)[-1]
        async with running_receiver(tmp_path, store=under_test.reopen()) as rx:
            tus = Tus(session, rx.url)
            location = rx.url + upload  # the restarted receiver listens on another free port
            assert (await tus.head(location)).offset == 1000
            done = await tus.patch(location, 1000, data[1000:])
            assert done.status == 204, done
            signed = receipt.verify(done.headers[receipt.HEADER], rx.public_key)
            assert signed.matches(
                upload=upload, length=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
            assert _read_all(rx.store, upload, piece=1 << 10) == data
