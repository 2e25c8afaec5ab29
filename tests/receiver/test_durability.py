"""Crash safety: `dockd serve` killed with SIGKILL at any moment resumes every upload from its
last acknowledged offset, and a completion interrupted at any step is finished on restart."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import aiohttp
import pytest
from dockd.crypto import receipt
from support.receiver import (
    RawRequest,
    ReceiverProcess,
    Tus,
    checksum_header,
    partial_size,
    read_sidecar,
    running_receiver,
    stored_bytes,
    upload_id_of,
    wait_for,
)

MiB = 1 << 20


@pytest.fixture
async def session():
    # a fresh connection per request: a killed server leaves dead keep-alive connections behind
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        yield client


@pytest.fixture
def server(tmp_path: Path):
    with ReceiverProcess(tmp_path) as process:
        yield process


async def _finish_and_check(tus: Tus, server: ReceiverProcess, location: str, data: bytes) -> str:
    """Resume from HEAD's offset to the end; check sidecar, receipt and bytes; return receipt."""
    upload_id = upload_id_of(location)
    offset = (await tus.head(location)).offset
    reply = None
    while offset < len(data):
        reply = await tus.patch(location, offset, data[offset : offset + 3 * MiB])
        assert reply.status == 204, reply
        offset = reply.offset
    assert reply is not None
    digest = hashlib.sha256(data).hexdigest()
    verified = receipt.verify(reply.headers["Dockd-Receipt"], server.public_key)
    assert verified.matches(upload=upload_id, length=len(data), sha256=digest)
    assert read_sidecar(server.store, upload_id)["sha256"] == digest
    assert stored_bytes(server.store, upload_id) == data
    return reply.headers["Dockd-Receipt"]


@pytest.mark.parametrize(
    "moment",
    [
        "mid_body_after_bytes_hit_the_file",
        "mid_checksummed_body_after_bytes_hit_the_file",
        "mid_body_before_any_byte_was_written",
        "right_after_a_204",
    ],
)
async def test_kill9_then_resume_from_the_last_acknowledged_offset(server, session, moment):
    data = os.urandom(7 * MiB + 4321)
    tus = Tus(session, server.url)
    location = (await tus.create(len(data))).headers["Location"]
    upload_id = upload_id_of(location)
    acknowledged = (await tus.patch(location, 0, data[: MiB + 123])).offset
    assert acknowledged == MiB + 123

    raw = None
    if moment == "right_after_a_204":
        reply = await tus.patch(location, acknowledged, data[acknowledged : 3 * MiB])
        assert reply.status == 204
        acknowledged = reply.offset
    else:
        chunk = data[acknowledged : acknowledged + 4 * MiB]
        checksum = checksum_header("sha256", chunk) if "checksummed" in moment else None
        raw = await RawRequest.patch(
            location, offset=acknowledged, content_length=len(chunk), checksum=checksum
        )
        if moment == "mid_body_before_any_byte_was_written":
            await raw.send(chunk[:1000])
        else:
            await raw.send(chunk[: 3 * MiB])  # a slow body: three quarters, then the crash
            await wait_for(lambda: partial_size(server.store, upload_id) > acknowledged + MiB)
    server.kill9()
    if raw is not None:
        await raw.close()

    server.restart()
    assert partial_size(server.store, upload_id) == acknowledged  # unacknowledged bytes are gone
    head = await tus.head(server.url + upload_id)
    assert head.status == 200
    assert head.offset == acknowledged
    await _finish_and_check(tus, server, server.url + upload_id, data)


async def test_receipt_survives_kill9_right_after_completion(server, session):
    data = os.urandom(2 * MiB + 5)
    tus = Tus(session, server.url)
    location, last = await tus.upload(data, chunk=MiB)
    server.kill9()
    server.restart()
    head = await tus.head(server.url + upload_id_of(location))
    assert head.status == 200
    assert head.offset == len(data)
    assert head.headers["Dockd-Receipt"] == last.headers["Dockd-Receipt"]
    receipt.verify(head.headers["Dockd-Receipt"], server.public_key)


async def test_sigterm_stops_cleanly_and_restart_resumes(server, session):
    data = os.urandom(MiB + 17)
    tus = Tus(session, server.url)
    location = (await tus.create(len(data))).headers["Location"]
    assert (await tus.patch(location, 0, data[:MiB])).status == 204
    assert server.stop() == 0
    server.start()
    await _finish_and_check(tus, server, server.url + upload_id_of(location), data)


# -- a completion interrupted at each step (files arranged exactly as a crash would leave them) --


def _undo_completion(store: Path, upload_id: str, step: str) -> None:
    """Turn a finished upload back into the state a crash at `step` leaves on disk."""
    partial, complete = store / "partial", store / "complete"
    sidecar = json.loads((complete / f"{upload_id}.json").read_text())
    creation = {
        "upload": upload_id,
        "length": sidecar["length"],
        "metadata": sidecar["metadata"],
        "metadata_header": sidecar["metadata_header"],
        "created": sidecar["created"],
        "dock": sidecar["dock"],
    }
    state = {"offset": sidecar["length"], "expires": 4e9}
    (partial / f"{upload_id}.json").write_text(json.dumps(creation))
    (partial / f"{upload_id}.state").write_text(json.dumps(state))
    if step == "before_the_sidecar_was_written":
        shutil.move(complete / f"{upload_id}.bin", partial / f"{upload_id}.bin")
        (complete / f"{upload_id}.json").unlink()
    elif step == "after_the_sidecar_tmp_was_written":
        shutil.move(complete / f"{upload_id}.bin", partial / f"{upload_id}.bin")
        (complete / f"{upload_id}.json").rename(complete / f"{upload_id}.json.tmp")
    elif step == "after_the_data_moved":
        (complete / f"{upload_id}.json").rename(complete / f"{upload_id}.json.tmp")
    elif step == "after_the_sidecar_rename_before_cleanup":
        pass  # the partial creation info and state are still there
    else:
        raise AssertionError(step)


@pytest.mark.parametrize(
    "step",
    [
        "before_the_sidecar_was_written",
        "after_the_sidecar_tmp_was_written",
        "after_the_data_moved",
        "after_the_sidecar_rename_before_cleanup",
    ],
)
async def test_interrupted_completion_is_finished_on_restart(tmp_path, session, step):
    data = os.urandom(MiB + 99)
    async with running_receiver(tmp_path) as receiver:
        location, last = await Tus(session, receiver.url).upload(data, chunk=MiB)
        upload_id = upload_id_of(location)
    _undo_completion(tmp_path / "receiver-store", upload_id, step)

    async with running_receiver(tmp_path) as receiver:
        head = await Tus(session, receiver.url).head(receiver.url + upload_id)
        assert head.status == 200
        assert head.offset == len(data)
        header = head.headers["Dockd-Receipt"]
        verified = receipt.verify(header, receiver.public_key)
        assert verified.matches(
            upload=upload_id, length=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        if step != "before_the_sidecar_was_written":
            assert header == last.headers["Dockd-Receipt"]  # the receipt already signed
        assert receiver.stored_bytes(upload_id) == data
        assert sorted(p.name for p in (receiver.store_dir / "partial").iterdir()) == []


async def test_bytes_past_the_committed_offset_are_dropped_on_start(tmp_path, session):
    async with running_receiver(tmp_path) as receiver:
        tus = Tus(session, receiver.url)
        location = (await tus.create(100)).headers["Location"]
        upload_id = upload_id_of(location)
        assert (await tus.patch(location, 0, b"a" * 40)).status == 204
    with (tmp_path / "receiver-store" / "partial" / f"{upload_id}.bin").open("ab") as data_file:
        data_file.write(b"never acknowledged")  # what an interrupted PATCH leaves
    async with running_receiver(tmp_path) as receiver:
        tus = Tus(session, receiver.url)
        assert (await tus.head(receiver.url + upload_id)).offset == 40
        assert partial_size(receiver.store_dir, upload_id) == 40
        assert (await tus.patch(receiver.url + upload_id, 40, b"b" * 60)).status == 204
        assert receiver.stored_bytes(upload_id) == b"a" * 40 + b"b" * 60


async def test_unacknowledged_creation_leaves_nothing_behind(tmp_path, session):
    store = tmp_path / "receiver-store"
    (store / "partial").mkdir(parents=True)
    stray = "S" * 32
    (store / "partial" / f"{stray}.bin").write_bytes(b"")
    (store / "partial" / f"{stray}.state").write_text('{"offset": 0, "expires": 4e9}')
    (store / "partial" / f"{stray}.json.tmp").write_text("{")
    async with running_receiver(tmp_path) as receiver:
        assert (await Tus(session, receiver.url).head(receiver.url + stray)).status == 404
        assert list((store / "partial").iterdir()) == []
