"""tus 1.0.0 as the receiver speaks it: every status code, with the headers that matter."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import time

import crc32c
import pytest
from support.receiver import (
    OFFSET_STREAM,
    TUS,
    RawRequest,
    Tus,
    checksum_header,
    metadata_header,
    partial_size,
    running_receiver,
    upload_id_of,
    wait_for,
)


async def test_options_advertises_capabilities_without_tus_resumable(tus: Tus, session):
    async with session.options(tus.url) as response:  # no Tus-Resumable: OPTIONS is exempt
        assert response.status == 204
        assert response.headers["Tus-Version"] == "1.0.0"
        assert response.headers["Tus-Resumable"] == "1.0.0"
        extensions = set(response.headers["Tus-Extension"].split(","))
        assert extensions == {
            "creation",
            "creation-with-upload",
            "checksum",
            "termination",
            "expiration",
            "concatenation",  # the file store implements Concater
        }
        # crc32c first (the cheap one docks use), then the spec's sha1 and sha256 for others.
        assert response.headers["Tus-Checksum-Algorithm"] == "crc32c,sha1,sha256"
        assert int(response.headers["Tus-Max-Size"]) == 1 << 40


async def test_creation_returns_location_expiry_and_head_echoes_metadata(tus: Tus, rx):
    metadata = metadata_header({"filename": "clip 0001.mp4", "evidence": None})
    created = await tus.create(100, headers={"Upload-Metadata": metadata})
    assert created.status == 201
    assert created.headers["Tus-Resumable"] == "1.0.0"
    location = created.headers["Location"]
    assert location.startswith(rx.url)
    assert len(upload_id_of(location)) >= 32  # token_urlsafe(24): 192 random bits
    expires = email.utils.parsedate_to_datetime(created.headers["Upload-Expires"])
    assert expires.timestamp() > time.time()

    head = await tus.head(location)
    assert head.status == 200
    assert head.offset == 0
    assert head.headers["Upload-Length"] == "100"
    assert head.headers["Upload-Metadata"] == metadata
    assert head.headers["Cache-Control"] == "no-store"


async def test_every_response_requires_and_carries_tus_resumable(tus: Tus, session):
    created = await tus.create(10)
    location = created.headers["Location"]
    for headers in ({}, {"Tus-Resumable": "0.2.2"}):
        async with session.head(location, headers=headers) as response:
            assert response.status == 412
            assert response.headers["Tus-Version"] == "1.0.0"
            assert response.headers["Tus-Resumable"] == "1.0.0"
        async with session.post(tus.url, headers={**headers, "Upload-Length": "5"}) as response:
            assert response.status == 412
    # the refused POSTs created nothing, the refused PATCH wrote nothing
    async with session.patch(
        location,
        data=b"hello",
        headers={
            "Upload-Offset": "0",
            "Content-Type": OFFSET_STREAM,
        },
    ) as response:
        assert response.status == 412
    assert (await tus.head(location)).offset == 0


async def test_patch_without_offset_content_type_is_415(tus: Tus):
    location = (await tus.create(10)).headers["Location"]
    reply = await tus.patch(
        location, 0, b"0123456789", headers={"Content-Type": "application/octet-stream"}
    )
    assert reply.status == 415
    assert (await tus.head(location)).offset == 0


async def test_offset_mismatch_is_409_with_the_current_offset(tus: Tus):
    location = (await tus.create(10)).headers["Location"]
    first = await tus.patch(location, 0, b"01234")
    assert first.status == 204
    assert first.offset == 5
    expires = email.utils.parsedate_to_datetime(first.headers["Upload-Expires"])
    assert expires.timestamp() > time.time()
    for wrong in (0, 3, 7):
        reply = await tus.patch(location, wrong, b"56789")
        assert reply.status == 409
        assert reply.offset == 5  # the client can resume from the response alone
    assert (await tus.head(location)).offset == 5


async def test_upload_length_over_max_size_is_413(tmp_path, session):
    async with running_receiver(tmp_path, max_size=1000) as receiver:
        tus = Tus(session, receiver.url)
        reply = await tus.create(1001)
        assert reply.status == 413
        assert (await tus.create(1000)).status == 201


async def test_patch_past_upload_length_is_413_up_front_and_when_streamed(tus: Tus, session, rx):
    location = (await tus.create(10)).headers["Location"]
    assert (await tus.patch(location, 0, b"0123")).status == 204
    # Content-Length says too much: refused before any byte is stored
    reply = await tus.patch(location, 4, b"456789AB", checksum=None)
    assert reply.status == 413
    assert reply.offset == 4

    # No Content-Length (chunked): refused once the body goes past the length
    async def chunks():
        yield b"456789"
        yield b"AB"

    async with session.patch(
        location,
        data=chunks(),
        headers={
            **TUS,
            "Upload-Offset": "4",
            "Content-Type": OFFSET_STREAM,
        },
    ) as response:
        assert response.status == 413
    head = await tus.head(location)
    assert head.offset == 4
    assert partial_size(rx.store_dir, upload_id_of(location)) == 4


async def test_unknown_upload_is_404(tus: Tus, rx):
    for upload_id in ("A" * 32, "..%2F..%2Fetc%2Fpasswd", "short"):
        assert (await tus.head(rx.url + upload_id)).status == 404
        reply = await tus.patch(rx.url + upload_id, 0, b"x")
        assert reply.status == 404
        assert "Upload-Offset" not in reply.headers


async def test_checksum_mismatch_is_460_and_leaves_offset_and_bytes(tus: Tus, rx):
    location = (await tus.create(12)).headers["Location"]
    assert (await tus.patch(location, 0, b"good")).status == 204
    reply = await tus.patch(
        location,
        4,
        b"evil",
        headers={
            "Upload-Checksum": checksum_header("sha256", b"nice"),
        },
    )
    assert reply.status == 460
    head = await tus.head(location)
    assert head.offset == 4
    upload_id = upload_id_of(location)
    assert (rx.store_dir / "partial" / f"{upload_id}.bin").read_bytes() == b"good"
    # and the upload continues normally from there
    assert (await tus.patch(location, 4, b"nice", checksum="sha1")).status == 204
    assert (await tus.patch(location, 8, b"data")).status == 204
    assert rx.stored_bytes(upload_id) == b"goodnicedata"


def crc32c_header(data: bytes) -> str:
    """`Upload-Checksum` as a crc32c client sends it, from an independent CRC32C implementation."""
    return "crc32c " + base64.b64encode(crc32c.CRC32CHash(data).digest()).decode()


async def test_a_crc32c_checked_chunk_is_stored_and_a_corrupted_one_counts_for_nothing(
    tus: Tus, rx
):
    sent = os.urandom(2 << 20)
    location = (await tus.create(len(sent) + 4)).headers["Location"]
    assert (await tus.patch(location, 0, b"good", checksum=None)).status == 204
    damaged = bytearray(sent)
    damaged[len(damaged) // 2] ^= 0x01  # one bit flipped in transit
    reply = await tus.patch(
        location, 4, bytes(damaged), headers={"Upload-Checksum": crc32c_header(sent)}
    )
    assert reply.status == 460
    assert reply.headers["Upload-Offset"] == "4"
    assert (await tus.head(location)).offset == 4
    upload_id = upload_id_of(location)
    assert (rx.store_dir / "partial" / f"{upload_id}.bin").read_bytes() == b"good"

    reply = await tus.patch(location, 4, sent, headers={"Upload-Checksum": crc32c_header(sent)})
    assert reply.status == 204
    assert rx.stored_bytes(upload_id) == b"good" + sent


@pytest.mark.parametrize(
    "header",
    [
        "md5 " + base64.b64encode(hashlib.md5(b"x").digest()).decode(),  # unsupported algorithm
        "sha256 not-base64!",
        "sha256 " + base64.b64encode(b"short").decode(),  # wrong digest length
        "crc32c " + base64.b64encode(b"\x00\x00\x00\x00\x00").decode(),  # CRC is 4 bytes
        "sha256",
    ],
)
async def test_malformed_or_unsupported_checksum_is_400(tus: Tus, header):
    location = (await tus.create(1)).headers["Location"]
    reply = await tus.patch(location, 0, b"x", headers={"Upload-Checksum": header})
    assert reply.status == 400
    assert (await tus.head(location)).offset == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no Upload-Length
        {"Upload-Length": "-1"},
        {"Upload-Length": "ten"},
        {"Upload-Length": "+5"},
        {"Upload-Length": "10", "Upload-Metadata": "key not*base64"},
        {"Upload-Length": "10", "Upload-Metadata": "a YQ==,a Yg=="},  # duplicate key
        {"Upload-Length": "10", "Upload-Metadata": "k\u00e9y YQ=="},
        {"Upload-Length": "10", "Upload-Metadata": "a YQ== extra"},
        {"Upload-Length": "10", "Upload-Metadata": ",".join(f"k{i}" for i in range(65))},
        {"Upload-Length": "10", "Upload-Metadata": "big " + "A" * 5000},
        {"Upload-Defer-Length": "1"},
    ],
)
async def test_bad_creation_headers_are_400(tus: Tus, rx, headers):
    reply = await tus.request("POST", tus.url, headers)
    assert reply.status == 400, reply
    assert list((rx.store_dir / "partial").iterdir()) == []


async def test_what_real_clients_send_on_creation_is_accepted(tus: Tus, session, rx):
    # an empty Upload-Metadata header, a key without value, octet-stream on an empty POST
    async with session.post(
        tus.url,
        headers={
            **TUS,
            "Upload-Length": "3",
            "Upload-Metadata": "",
            "Content-Type": "application/octet-stream",
        },
    ) as response:
        assert response.status == 201
        location = response.headers["Location"]
    head = await tus.head(location)
    assert "Upload-Metadata" not in head.headers
    reply = await tus.create(3, headers={"Upload-Metadata": "flag,name Y2xpcA=="})
    assert reply.status == 201
    assert (await tus.patch(reply.headers["Location"], 0, b"abc")).status == 204
    sidecar = rx.sidecar(upload_id_of(reply.headers["Location"]))
    assert sidecar["metadata"] == {"flag": "", "name": "clip"}


async def test_creation_with_a_non_tus_body_is_415(tus: Tus, rx):
    reply = await tus.request(
        "POST",
        tus.url,
        {
            "Upload-Length": "5",
            "Content-Type": "application/octet-stream",
        },
        b"hello",
    )
    assert reply.status == 415
    assert list((rx.store_dir / "partial").iterdir()) == []


async def test_creation_with_upload_partial_and_whole(tus: Tus, rx):
    partial = await tus.create(10, body=b"hello", checksum="sha256")
    assert partial.status == 201
    assert partial.offset == 5
    assert "Dockd-Receipt" not in partial.headers
    location = partial.headers["Location"]
    assert (await tus.patch(location, 5, b"world")).status == 204

    whole = await tus.create(5, body=b"hello", checksum="sha1")
    assert whole.status == 201
    assert whole.offset == 5
    assert "Upload-Expires" not in whole.headers
    assert whole.headers["Dockd-Receipt"]
    assert rx.stored_bytes(upload_id_of(whole.headers["Location"])) == b"hello"

    # a creation body that fails its checksum: the upload exists, at offset 0
    bad = await tus.create(
        5,
        body=b"hello",
        headers={
            "Upload-Checksum": checksum_header("sha256", b"jello"),
        },
    )
    assert bad.status == 201
    assert bad.offset == 0
    assert (await tus.head(bad.headers["Location"])).offset == 0


async def test_creation_body_longer_than_the_upload_is_413(tus: Tus, rx):
    reply = await tus.create(3, body=b"hello")
    assert reply.status == 413
    assert list((rx.store_dir / "partial").iterdir()) == []


async def test_zero_length_upload_completes_at_creation(tus: Tus, rx):
    created = await tus.create(0)
    assert created.status == 201
    assert created.offset == 0
    receipt_header = created.headers["Dockd-Receipt"]
    upload_id = upload_id_of(created.headers["Location"])
    assert rx.sidecar(upload_id)["sha256"] == hashlib.sha256(b"").hexdigest()
    head = await tus.head(created.headers["Location"])
    assert (head.offset, head.headers["Upload-Length"]) == (0, "0")
    assert head.headers["Dockd-Receipt"] == receipt_header


async def test_empty_patch_at_the_end_of_a_completed_upload_is_idempotent(tus: Tus):
    location, last = await tus.upload(b"abcdef", chunk=3)
    again = await tus.patch(location, 6, b"")
    assert again.status == 204
    assert again.headers["Dockd-Receipt"] == last.headers["Dockd-Receipt"]
    late = await tus.patch(location, 3, b"def")
    assert late.status == 409
    assert late.offset == 6


async def test_termination_then_404(tus: Tus, rx):
    location = (await tus.create(10)).headers["Location"]
    assert (await tus.patch(location, 0, b"01234")).status == 204
    deleted = await tus.delete(location)
    assert deleted.status == 204
    assert deleted.headers["Tus-Resumable"] == "1.0.0"
    assert (await tus.head(location)).status == 404
    assert (await tus.patch(location, 5, b"56789")).status == 404
    assert (await tus.delete(location)).status == 404
    assert list((rx.store_dir / "partial").iterdir()) == []


async def test_completed_upload_cannot_be_terminated(tus: Tus, rx):
    location, last = await tus.upload(b"evidence", chunk=8)
    reply = await tus.delete(location)
    assert reply.status == 403
    head = await tus.head(location)
    assert head.headers["Dockd-Receipt"] == last.headers["Dockd-Receipt"]
    assert rx.stored_bytes(upload_id_of(location)) == b"evidence"


async def test_method_override(tus: Tus, rx):
    location = (await tus.create(4)).headers["Location"]
    reply = await tus.request(
        "POST",
        location,
        {
            "X-HTTP-Method-Override": "PATCH",
            "Upload-Offset": "0",
            "Content-Type": OFFSET_STREAM,
            "Upload-Checksum": checksum_header("sha256", b"data"),
        },
        b"data",
    )
    assert reply.status == 204
    assert reply.offset == 4
    other = (await tus.create(4)).headers["Location"]
    assert (await tus.request("POST", other, {"X-HTTP-Method-Override": "DELETE"})).status == 204
    assert (await tus.head(other)).status == 404


async def test_expired_upload_is_410_and_swept(tmp_path, session):
    async with running_receiver(tmp_path, expire_after=1.0) as receiver:
        tus = Tus(session, receiver.url)
        location = (await tus.create(10)).headers["Location"]
        upload_id = upload_id_of(location)
        assert (await tus.patch(location, 0, b"01234")).status == 204
        data_file = receiver.store_dir / "partial" / f"{upload_id}.bin"
        await wait_for(lambda: not data_file.exists())  # the sweeper frees the space
        reply = await tus.patch(location, 5, b"56789")
        assert reply.status == 410
        assert "Upload-Offset" not in reply.headers
        assert (await tus.head(location)).status == 410
    async with running_receiver(tmp_path, expire_after=1.0) as receiver:  # tombstone survives
        assert (await Tus(session, receiver.url).head(receiver.url + upload_id)).status == 410


async def test_expiry_is_checked_on_access_too(tmp_path, session):
    async with running_receiver(tmp_path, expire_after=0.3, sweep_interval=3600) as receiver:
        tus = Tus(session, receiver.url)
        location = (await tus.create(10)).headers["Location"]
        await wait_for(lambda: _expired(location, tus))  # HEAD itself notices the expiry
        assert (await tus.patch(location, 0, b"x")).status == 410


async def _expired(location: str, tus: Tus) -> bool:
    return (await tus.head(location)).status == 410


async def test_stalled_body_is_cut_off_and_what_arrived_is_kept(tmp_path, session):
    async with running_receiver(tmp_path, idle_timeout=0.3) as receiver:
        tus = Tus(session, receiver.url)
        location = (await tus.create(100)).headers["Location"]
        raw = await RawRequest.patch(location, offset=0, content_length=100)
        await raw.send(b"x" * 40)  # then nothing: the client hangs
        status, headers = await raw.response()
        assert status == 408
        assert headers["Upload-Offset"] == "40"
        await raw.close()
        assert (await tus.head(location)).offset == 40


async def test_stalled_checksummed_body_is_discarded(tmp_path, session):
    async with running_receiver(tmp_path, idle_timeout=0.3) as receiver:
        tus = Tus(session, receiver.url)
        location = (await tus.create(100)).headers["Location"]
        raw = await RawRequest.patch(
            location, offset=0, content_length=100, checksum=checksum_header("sha256", b"x" * 100)
        )
        await raw.send(b"x" * 40)
        status, headers = await raw.response()
        assert status == 408
        assert headers["Upload-Offset"] == "0"
        await raw.close()
        assert (await tus.head(location)).offset == 0
        assert partial_size(receiver.store_dir, upload_id_of(location)) == 0


async def test_client_disconnect_keeps_what_was_stored(tus: Tus, rx):
    location = (await tus.create(4 << 20)).headers["Location"]
    upload_id = upload_id_of(location)
    body = hashlib.sha256(b"seed").digest() * (3 << 15)  # 3 MiB of a 4 MiB chunk
    raw = await RawRequest.patch(location, offset=0, content_length=4 << 20)
    await raw.send(body)
    await wait_for(lambda: partial_size(rx.store_dir, upload_id) >= 1 << 20)  # bytes hit the file
    raw.abort()  # the network drops mid-body
    await wait_for(lambda: not rx.running.coordinator.busy(upload_id))
    offset = (await tus.head(location)).offset
    assert 1 << 20 <= offset <= len(body)  # what reached the file is kept (no checksum)...
    assert (rx.store_dir / "partial" / f"{upload_id}.bin").read_bytes() == body[
        :offset
    ]  # ...exactly
