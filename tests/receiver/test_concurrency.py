"""Requests that overlap on one upload: bytes never interleave, HEAD reports only what is
committed, and a client resuming after a network drop is not locked out by its dead request."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from support.receiver import (
    RawRequest,
    Tus,
    checksum_header,
    partial_size,
    running_receiver,
    upload_id_of,
    wait_for,
)

MiB = 1 << 20


async def test_simultaneous_patches_at_one_offset_exactly_one_wins(tus: Tus, rx):
    first, second = os.urandom(6 * MiB), os.urandom(6 * MiB)
    location = (await tus.create(len(first))).headers["Location"]
    replies = await asyncio.gather(tus.patch(location, 0, first), tus.patch(location, 0, second))
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [204, 409], statuses
    stored = rx.stored_bytes(upload_id_of(location))
    assert stored in (first, second)  # one body whole, never a mix of both
    winner = first if replies[0].status == 204 else second
    assert stored == winner
    assert rx.sidecar(upload_id_of(location))["sha256"] == hashlib.sha256(winner).hexdigest()


async def test_newer_patch_supersedes_one_that_is_mid_body(tus: Tus, rx):
    """Deterministic overlap: the first body is half sent when the second request arrives."""
    old, new = os.urandom(2 * MiB), os.urandom(2 * MiB)
    location = (await tus.create(len(old))).headers["Location"]
    upload_id = upload_id_of(location)
    raw = await RawRequest.patch(
        location, offset=0, content_length=len(old), checksum=checksum_header("sha256", old)
    )
    await raw.send(old[: MiB + 4096])
    await wait_for(lambda: partial_size(rx.store_dir, upload_id) >= MiB)
    reply = await tus.patch(location, 0, new)
    assert reply.status == 204
    status, headers = await raw.response()
    assert status == 409  # superseded: its unverifiable half was discarded
    assert headers["Upload-Offset"] == "0"
    await raw.close()
    assert rx.stored_bytes(upload_id) == new


@pytest.mark.timeout(30)  # the idle timeout is 60 s: passing means nobody waited for it
async def test_resume_after_network_drop_cuts_off_the_dead_request(tus: Tus, rx):
    data = os.urandom(3 * MiB)
    location = (await tus.create(len(data))).headers["Location"]
    upload_id = upload_id_of(location)
    dead = await RawRequest.patch(location, offset=0, content_length=len(data))  # no checksum
    await dead.send(data[: 2 * MiB])
    await wait_for(
        lambda: partial_size(rx.store_dir, upload_id) >= MiB
    )  # then the link dies silently

    # the client comes back: HEAD shows only committed bytes, so it resumes from 0 ...
    assert (await tus.head(location)).offset == 0
    retry = await tus.patch(location, 0, data)
    # ... the dead request is cut off at once and keeps what it stored; the retry learns where
    assert retry.status == 409
    kept = retry.offset
    assert MiB <= kept <= 2 * MiB
    reply = await tus.patch(location, kept, data[kept:])
    assert reply.status == 204
    assert rx.stored_bytes(upload_id) == data
    status, _ = await dead.response()
    assert status == 409
    await dead.close()


@pytest.mark.timeout(30)
async def test_delete_cuts_off_a_stalled_patch(tus: Tus, rx):
    location = (await tus.create(10 * MiB)).headers["Location"]
    upload_id = upload_id_of(location)
    stalled = await RawRequest.patch(location, offset=0, content_length=10 * MiB)
    await stalled.send(b"z" * (MiB + 1))
    await wait_for(lambda: partial_size(rx.store_dir, upload_id) >= MiB)
    assert (await tus.delete(location)).status == 204
    assert (await tus.head(location)).status == 404
    assert not (rx.store_dir / "partial" / f"{upload_id}.bin").exists()
    await stalled.close()


async def test_head_during_a_slow_patch_reports_the_committed_offset(tus: Tus, rx):
    data = os.urandom(1000 + 2 * MiB)
    location = (await tus.create(len(data))).headers["Location"]
    upload_id = upload_id_of(location)
    assert (await tus.patch(location, 0, data[:1000])).status == 204
    raw = await RawRequest.patch(
        location,
        offset=1000,
        content_length=2 * MiB,
        checksum=checksum_header("sha256", data[1000:]),
    )
    await raw.send(data[1000 : 1000 + MiB + MiB // 2])
    await wait_for(
        lambda: partial_size(rx.store_dir, upload_id) > 1000 + MiB
    )  # written, unverified
    for _ in range(3):
        assert (await tus.head(location)).offset == 1000
    await raw.send(data[1000 + MiB + MiB // 2 :])
    status, headers = await raw.response()
    assert status == 204
    assert headers["Upload-Offset"] == str(len(data))
    await raw.close()
    assert (await tus.head(location)).offset == len(data)
    assert rx.stored_bytes(upload_id) == data


async def test_shutdown_ends_a_body_in_flight_with_what_it_stored(tmp_path, session):
    data = os.urandom(3 * MiB)
    async with running_receiver(tmp_path) as receiver:
        tus = Tus(session, receiver.url)
        location = (await tus.create(len(data))).headers["Location"]
        upload_id = upload_id_of(location)
        raw = await RawRequest.patch(location, offset=0, content_length=len(data))
        await raw.send(data[: 2 * MiB])
        await wait_for(lambda: partial_size(receiver.store_dir, upload_id) >= MiB)
        stopping = asyncio.create_task(receiver.running.stop())
        status, headers = await raw.response()
        assert status == 503
        kept = int(headers["Upload-Offset"])
        assert MiB <= kept <= 2 * MiB
        await stopping
        await raw.close()
    async with running_receiver(tmp_path) as receiver:
        tus = Tus(session, receiver.url)
        location = receiver.url + upload_id
        assert (await tus.head(location)).offset == kept
        assert (await tus.patch(location, kept, data[kept:])).status == 204
        assert receiver.stored_bytes(upload_id) == data


@pytest.mark.timeout(30)
async def test_a_late_stale_patch_does_not_cut_off_a_body_that_is_still_flowing(tus: Tus, rx):
    """A request delayed in the network (from a connection the client already gave up) arrives
    after the client's live resume: the live transfer must complete, the stale one gets 409."""
    live_data, stale_data = os.urandom(2 * MiB), os.urandom(2 * MiB)
    location = (await tus.create(len(live_data))).headers["Location"]
    upload_id = upload_id_of(location)
    live = await RawRequest.patch(
        location,
        offset=0,
        content_length=len(live_data),
        checksum=checksum_header("sha256", live_data),
    )
    await live.send(live_data[:MiB])
    await wait_for(lambda: partial_size(rx.store_dir, upload_id) >= MiB // 2)

    async def keep_flowing() -> None:  # 1 MiB more over ~1.6 s: longer than the grace
        for start in range(MiB, 2 * MiB, 64 * 1024):
            await live.send(live_data[start : start + 64 * 1024])
            await asyncio.sleep(0.1)

    flowing = asyncio.create_task(keep_flowing())
    stale = await tus.patch(location, 0, stale_data)
    await flowing
    status, _ = await live.response()
    await live.close()
    assert status == 204  # the live transfer completed ...
    assert stale.status == 409  # ... and the late one learned the new offset
    assert rx.stored_bytes(upload_id) == live_data
