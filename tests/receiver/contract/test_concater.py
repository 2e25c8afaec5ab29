"""The `Concater` contract (tus concatenation), run against every store that implements it, and
the protocol around it through the whole receiver: partial uploads get no receipt, the final
upload is signed over the SHA-256 of exactly its bytes, and every refusal is a clear 4xx.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import time

import aiohttp
import pytest
from dockd.crypto import receipt
from dockd.receiver.storage.api import (
    PARTIAL,
    CompletedUpload,
    Concater,
    CreationInfo,
    StoreError,
    UploadStore,
    concatenated_into,
    new_upload_id,
    rfc3339,
)
from dockd.receiver.storage.memory import MemoryStore
from support.receiver import Tus, running_receiver
from support.stores import SimulatedCrash, StoreUnderTest

DOCK = "dock-7"


def _partial(store: UploadStore, data: bytes, *, finish: bool = True) -> CreationInfo:
    info = CreationInfo(
        upload=new_upload_id(),
        length=len(data),
        metadata_header="",
        metadata={},
        created=rfc3339(dt.datetime.now(dt.UTC)),
        dock=DOCK,
        concat=PARTIAL,
    )
    store.create(info, time.time() + 60)
    stored = data if finish else data[: len(data) // 2]
    writer = store.open_writer(info.upload, 0)
    try:
        writer.write(stored, 0)
        writer.commit(len(stored), time.time() + 60, hashlib.sha256(stored))
    finally:
        writer.close()
    return info


def _final(partials: list[CreationInfo], data: bytes) -> CompletedUpload:
    return CompletedUpload(
        upload=new_upload_id(),
        length=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        receipt="test-receipt",
        completed=rfc3339(dt.datetime.now(dt.UTC)),
        metadata={"sha256": "plaintext"},
        metadata_header="sha256 cGxhaW50ZXh0",
        dock=DOCK,
        concat="final;" + " ".join(f"/files/{p.upload}" for p in partials),
    )


def _read(store: UploadStore, upload: str) -> bytes:
    with store.open_completed(upload) as stream:
        return stream.read()


@pytest.fixture(autouse=True)
def _only_concaters(request: pytest.FixtureRequest) -> None:
    """Concatenation is optional: a store without `Concater` is not offered it (skipped here)."""
    under_test = (
        request.getfixturevalue("under_test") if "under_test" in request.fixturenames else None
    )
    if under_test is not None and not isinstance(under_test.reopen(), Concater):
        pytest.skip(f"{under_test.name} store does not implement Concater")


def _concater(under_test: StoreUnderTest) -> tuple[UploadStore, Concater]:
    store = under_test.reopen()
    store.recover()
    assert isinstance(store, Concater)
    return store, store


@pytest.mark.parametrize("pieces", [[b"one partial " * 300], [b"a" * 1000, b"", b"bc" * 700]])
def test_concatenate_makes_a_completed_upload_of_the_partials(
    under_test: StoreUnderTest, pieces: list[bytes]
) -> None:
    store, concater = _concater(under_test)
    partials = [_partial(store, piece) for piece in pieces]
    data = b"".join(pieces)
    record = _final(partials, data)
    concater.concatenate(record, [p.upload for p in partials])
    restarted = under_test.reopen()
    assert not restarted.recover(), "used partials are gone"
    for partial in partials:  # each names the final it went into
        tombstone = restarted.load_tombstone(partial.upload)
        assert tombstone is not None and concatenated_into(tombstone) == record.upload
    assert restarted.load_completed(record.upload) == record
    assert _read(restarted, record.upload) == data
    concater.concatenate(record, [p.upload for p in partials])  # idempotent


def test_partials_are_streamed_and_unfinished_ones_refused(under_test: StoreUnderTest) -> None:
    store, concater = _concater(under_test)
    done = _partial(store, b"x" * 5000)
    with concater.open_partial(done.upload, done.length) as stream:
        assert stream.read() == b"x" * 5000
    half = _partial(store, b"y" * 5000, finish=False)
    with pytest.raises(StoreError):
        concater.concatenate(
            _final([done, half], b"x" * 5000 + b"y" * 5000), [done.upload, half.upload]
        )
    assert under_test.reopen().load_completed(done.upload) is None
    ordinary = dataclasses.replace(done, upload=new_upload_id(), concat="")
    store.create(ordinary, time.time() + 60)
    with pytest.raises(StoreError):
        concater.concatenate(_final([ordinary], b""), [ordinary.upload])


@pytest.mark.parametrize("count", [1, 2])
def test_concatenation_is_atomic_at_every_crash_point(
    under_test: StoreUnderTest, count: int
) -> None:
    if under_test.crash_at_step is None or under_test.count_steps is None:
        pytest.skip(f"{under_test.name} store concatenates in one step: nothing to interrupt")
    pieces = [bytes([65 + i]) * (3000 + i) for i in range(count)]
    data = b"".join(pieces)

    def ready() -> tuple[Concater, list[CreationInfo], CompletedUpload]:
        store, concater = _concater(under_test)
        partials = [_partial(store, piece) for piece in pieces]
        return concater, partials, _final(partials, data)

    concater, partials, record = ready()
    with under_test.count_steps() as steps:
        concater.concatenate(record, [p.upload for p in partials])
    assert steps[0] >= 2

    for crash_at in range(steps[0]):
        concater, partials, record = ready()
        with pytest.raises(SimulatedCrash), under_test.crash_at_step(crash_at):
            concater.concatenate(record, [p.upload for p in partials])
        restarted = under_test.reopen()
        unfinished = {p.info.upload: p.offset for p in restarted.recover()}
        completed = restarted.load_completed(record.upload)
        if completed is None:
            # Absent: then every partial is intact, and concatenating again works.
            for partial in partials:
                assert unfinished[partial.upload] == partial.length, f"crash at {crash_at}"
            assert isinstance(restarted, Concater)
            restarted.concatenate(record, [p.upload for p in partials])
        assert _read(restarted, record.upload) == data, f"crash at {crash_at}"


# -- the protocol, through the whole receiver --


async def test_final_upload_is_signed_over_exactly_its_bytes(
    under_test: StoreUnderTest, tmp_path
) -> None:
    data = bytes(range(256)) * 40
    async with (
        aiohttp.ClientSession() as session,
        running_receiver(tmp_path, store=under_test.reopen()) as rx,
    ):
        tus = Tus(session, rx.url)
        options = await tus.request("OPTIONS", rx.url)
        assert "concatenation" in options.headers["Tus-Extension"].split(",")
        partial = (await tus.create(len(data), headers={"Upload-Concat": "partial"})).headers[
            "Location"
        ]
        done = await tus.patch(partial, 0, data)
        assert done.status == 204 and receipt.HEADER not in done.headers
        head = await tus.head(partial)
        assert head.headers["Upload-Concat"] == "partial" and head.offset == len(data)
        concat = f"final;{partial}"
        final = await tus.request(
            "POST", rx.url, {"Upload-Concat": concat, "Upload-Metadata": "sha256 cGxhaW4="}
        )
        assert final.status == 201, final
        location = final.headers["Location"]
        head = await tus.head(location)
        assert head.headers["Upload-Concat"] == concat
        assert head.offset == int(head.headers["Upload-Length"]) == len(data)
        assert head.headers["Upload-Metadata"] == "sha256 cGxhaW4="
        upload = location.rsplit("/", 1)[-1]
        signed = receipt.verify(head.headers[receipt.HEADER], rx.public_key)
        assert signed.matches(
            upload=upload, length=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        assert (await tus.patch(location, len(data), b"")).status == 403
        assert (await tus.head(partial)).status == 410  # used up
        # The same request again (its answer lost): the same final, not a second copy.
        again = await tus.request(
            "POST", rx.url, {"Upload-Concat": concat, "Upload-Metadata": "sha256 cGxhaW4="}
        )
        assert again.status == 201 and again.headers["Location"] == location
        assert again.headers[receipt.HEADER] == head.headers[receipt.HEADER]
        other = await tus.request(
            "POST", rx.url, {"Upload-Concat": concat, "Upload-Metadata": "sha256 b3RoZXI="}
        )
        assert other.status == 404  # not the same request: the partial is used up
        with rx.store.open_completed(upload) as stream:
            assert stream.read() == data


async def test_two_partials_are_rehashed_as_one_stream(
    under_test: StoreUnderTest, tmp_path
) -> None:
    first, second = b"first " * 700, b"second " * 900
    async with (
        aiohttp.ClientSession() as session,
        running_receiver(tmp_path, store=under_test.reopen()) as rx,
    ):
        tus = Tus(session, rx.url)
        urls = []
        for piece in (first, second):
            url = (await tus.create(len(piece), headers={"Upload-Concat": "partial"})).headers[
                "Location"
            ]
            await tus.patch(url, 0, piece)
            urls.append(url.removeprefix(rx.url.split("/files/")[0]))  # relative URLs
        final = await tus.request("POST", rx.url, {"Upload-Concat": "final;" + " ".join(urls)})
        assert final.status == 201, final
        signed = receipt.verify(final.headers[receipt.HEADER], rx.public_key)
        assert signed.sha256 == hashlib.sha256(first + second).hexdigest()
        assert signed.length == len(first + second)


async def test_concatenation_refusals_are_clear(under_test: StoreUnderTest, tmp_path) -> None:
    async with (
        aiohttp.ClientSession() as session,
        running_receiver(tmp_path, store=under_test.reopen()) as rx,
    ):
        tus = Tus(session, rx.url)
        partial = (await tus.create(10, headers={"Upload-Concat": "partial"})).headers["Location"]
        ordinary = (await tus.create(3)).headers["Location"]
        await tus.patch(ordinary, 0, b"abc")

        async def final(value: str, **extra: str) -> int:
            reply = await tus.request("POST", rx.url, {"Upload-Concat": value, **extra})
            return reply.status

        assert await final(f"final;{partial}") == 400  # unfinished
        assert await final(f"final;{ordinary}") in (400, 404)  # not a partial
        assert await final("final;" + rx.url + "A" * 32) == 404
        assert await final("final;") == 400
        assert await final("joined;" + partial) == 400
        await tus.patch(partial, 0, b"0123456789")
        assert await final(f"final;{partial}", **{"Upload-Length": "10"}) == 400
        assert await final(f"final;{partial} {partial}") == 400
        assert await final(f"final;{partial}") == 201


async def test_a_finished_partial_survives_a_restart_and_its_hash_is_rebuilt(
    under_test: StoreUnderTest, tmp_path
) -> None:
    """After a restart the partial's running hash is rebuilt from the committed bytes, so the
    final's receipt still names exactly them."""
    data = b"rebuilt " * 3000
    async with aiohttp.ClientSession() as session:
        async with running_receiver(tmp_path, store=under_test.reopen()) as rx:
            partial = (
                await Tus(session, rx.url).create(len(data), headers={"Upload-Concat": "partial"})
            ).headers["Location"]
            await Tus(session, rx.url).patch(partial, 0, data)
        upload = partial.rsplit("/", 1)[-1]
        async with running_receiver(tmp_path, store=under_test.reopen()) as rx:
            tus = Tus(session, rx.url)
            final = await tus.request("POST", rx.url, {"Upload-Concat": f"final;/files/{upload}"})
            assert final.status == 201, final
            signed = receipt.verify(final.headers[receipt.HEADER], rx.public_key)
            assert signed.sha256 == hashlib.sha256(data).hexdigest()


async def test_a_finished_partial_no_final_takes_expires(tmp_path) -> None:
    """Never completed on its own, a partial with all its bytes still expires (410)."""
    async with (
        aiohttp.ClientSession() as session,
        running_receiver(tmp_path, expire_after=0.5, sweep_interval=3600) as rx,
    ):
        tus = Tus(session, rx.url)
        partial = (await tus.create(4, headers={"Upload-Concat": "partial"})).headers["Location"]
        assert (await tus.patch(partial, 0, b"done")).status == 204
        deadline = time.monotonic() + 10
        while (await tus.head(partial)).status != 410:
            assert time.monotonic() < deadline, "a finished partial never expired"
            await asyncio.sleep(0.1)
        assert not list(rx.store.completed())


class _NoConcatStore:
    """A memory store that does not offer the optional `Concater` (as the S3 store today)."""

    def __init__(self) -> None:
        self._inner = MemoryStore()

    def __getattr__(self, name: str) -> object:
        if name in ("open_partial", "concatenate"):
            raise AttributeError(name)
        return getattr(self._inner, name)


async def test_a_store_without_concater_is_not_offered_concatenation(tmp_path) -> None:
    store = _NoConcatStore()
    assert isinstance(store, UploadStore) and not isinstance(store, Concater)
    async with (
        aiohttp.ClientSession() as session,
        running_receiver(tmp_path, store=store) as rx,
    ):
        tus = Tus(session, rx.url)
        options = await tus.request("OPTIONS", rx.url)
        assert "concatenation" not in options.headers["Tus-Extension"].split(",")
        refused = await tus.create(4, headers={"Upload-Concat": "partial"})
        assert refused.status == 400
