"""The tus client against the real reference receiver: what goes on the wire, what comes back."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path

import aiohttp
import crc32c
import pytest
from dockd.crypto import receipt
from dockd.transport.tus import (
    OffsetConflict,
    ServerRejected,
    TusClient,
    TusError,
    UploadGone,
    send,
)
from support.receiver import InProcessReceiver, running_receiver, upload_id_of
from yarl import URL

from transport.fault_proxy import Answer, FaultProxy
from transport.harness import FAST, MIB, Source


async def test_upload_completes_with_a_receipt_that_matches_the_bytes(
    client: TusClient, receiver: InProcessReceiver, proxy: FaultProxy
) -> None:
    data = os.urandom(3 * MIB)
    url = await client.create(len(data), {"clip": "A0001.MP4"})
    progress: list[int] = []
    source = Source(data)

    final = await send(client, url, len(data), source.open, progress.append)

    assert (final.offset, final.length) == (len(data), len(data))
    assert final.receipt is not None
    signed = receipt.verify(final.receipt, receiver.public_key)
    assert signed.matches(
        upload=upload_id_of(url), length=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    assert receiver.stored_bytes(upload_id_of(url)) == data
    assert progress == [MIB, 2 * MIB, 3 * MIB]
    assert source.starts == [0] and source.closed == 1
    patches = proxy.requests("PATCH")
    assert [p.offset for p in patches] == [0, MIB, 2 * MIB]  # nothing sent twice


# Blocks over 1 MiB: aiohttp warns when handed such a body as raw bytes; the client streams it.
@pytest.mark.filterwarnings("error::ResourceWarning")
async def test_every_patch_carries_the_crc32c_of_its_own_body(
    client: TusClient, proxy: FaultProxy, receiver: InProcessReceiver
) -> None:
    data = os.urandom(3 * MIB)
    url = await client.create(len(data), {})
    await send(client, url, len(data), Source(data, block=MIB + 4096).open)

    patches = proxy.requests("PATCH")
    assert [p.declared_length for p in patches] == [MIB + 4096, MIB + 4096, MIB - 8192]
    for patch in patches:
        assert patch.offset is not None
        body = data[patch.offset : patch.offset + patch.declared_length]
        # The 4-byte big-endian CRC32C (Castagnoli), base64: checked against an independent
        # implementation, not the one the client uses.
        expected = base64.b64encode(crc32c.CRC32CHash(body).digest()).decode()
        assert patch.headers["Upload-Checksum"] == f"crc32c {expected}"
        assert patch.headers["Content-Type"] == "application/offset+octet-stream"
        assert patch.headers["Tus-Resumable"] == "1.0.0"
        assert "Transfer-Encoding" not in patch.headers  # a plain Content-Length body
    assert receiver.stored_bytes(upload_id_of(url)) == data


async def test_a_server_without_crc32c_gets_the_sha256_of_each_body(
    client: TusClient, proxy: FaultProxy, receiver: InProcessReceiver
) -> None:
    # A tus server that offers only the spec's sha1 and sha256 (the receiver before crc32c).
    proxy.queue(
        "OPTIONS",
        Answer(
            204,
            {
                "Tus-Resumable": "1.0.0",
                "Tus-Version": "1.0.0",
                "Tus-Extension": "creation,checksum,termination",
                "Tus-Checksum-Algorithm": "sha1,sha256",
            },
        ),
    )
    data = os.urandom(2 * MIB)
    url = await client.create(len(data), {})
    await send(client, url, len(data), Source(data).open)

    for patch in proxy.requests("PATCH"):
        assert patch.offset is not None
        body = data[patch.offset : patch.offset + patch.declared_length]
        expected = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert patch.headers["Upload-Checksum"] == f"sha256 {expected}"
    assert receiver.stored_bytes(upload_id_of(url)) == data


async def test_protocol_headers_on_options_post_and_head(
    client: TusClient, proxy: FaultProxy
) -> None:
    url = await client.create(10, {})
    await client.head(url)

    (options,) = proxy.requests("OPTIONS")
    assert "Tus-Resumable" not in options.headers  # the spec: SHOULD NOT on OPTIONS
    (post,) = proxy.requests("POST")
    assert post.headers["Upload-Length"] == "10"
    assert post.headers["Tus-Resumable"] == "1.0.0"
    assert "Upload-Metadata" not in post.headers  # empty metadata: no header at all
    assert "Content-Type" not in post.headers  # an empty creation body has no type
    assert post.declared_length == 0
    (head,) = proxy.requests("HEAD")
    assert head.headers["Cache-Control"] == "no-store"


async def test_metadata_round_trips_into_the_receivers_sidecar(
    client: TusClient, receiver: InProcessReceiver, proxy: FaultProxy
) -> None:
    raw = bytes(range(256))
    metadata = {"officer": "Zoë Ødegård-Łukasz 警察", "plain_sha256": raw, "note": ""}
    data = os.urandom(1000)
    url = await client.create(len(data), metadata)
    await send(client, url, len(data), Source(data).open)

    sidecar = receiver.sidecar(upload_id_of(url))
    assert sidecar["metadata"]["officer"] == metadata["officer"]
    assert sidecar["metadata"]["note"] == ""
    # Not UTF-8, so the sidecar keeps it only in the raw header; decode that to compare bytes.
    pairs = dict(p.partition(" ")[::2] for p in sidecar["metadata_header"].split(","))
    assert base64.b64decode(pairs["plain_sha256"]) == raw
    assert proxy.requests("POST")[0].headers["Upload-Metadata"] == sidecar["metadata_header"]


async def test_capabilities_are_read_once_and_cached(client: TusClient, proxy: FaultProxy) -> None:
    caps = await client.capabilities()
    await client.create(1, {})
    await client.capabilities()

    assert caps.version == "1.0.0"
    assert {"creation", "checksum", "termination"} <= caps.extensions
    assert "sha256" in caps.checksum_algorithms
    assert caps.max_size is not None and caps.max_size > 0
    assert len(proxy.requests("OPTIONS")) == 1


async def test_relative_location_is_resolved_against_the_endpoint(
    client: TusClient, endpoint: str, proxy: FaultProxy
) -> None:
    proxy.queue("POST", Answer(201, {"Location": "abc/../" + "x" * 32}))
    url = await client.create(5, {})
    assert url == str(URL(endpoint).join(URL("x" * 32)))


async def test_length_over_tus_max_size_is_refused_before_anything_is_sent(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with (
        running_receiver(tmp_path, max_size=1000) as rx,
        FaultProxy(str(URL(rx.url).origin())) as proxy,
    ):
        client = TusClient(session, proxy.url + URL(rx.url).path, retry=FAST)
        with pytest.raises(ServerRejected) as refused:
            await client.create(1001, {})
        assert refused.value.status == 413
        assert "1000" in str(refused.value)
        assert proxy.requests("POST") == []
        assert await client.create(1000, {})  # the limit itself is fine


async def test_patch_at_a_wrong_offset_is_an_offset_conflict_and_stores_nothing(
    client: TusClient,
) -> None:
    url = await client.create(100, {})
    with pytest.raises(OffsetConflict):
        await client.patch(url, 10, b"x" * 10)
    assert (await client.head(url)).offset == 0
    assert await client.patch(url, 0, b"y" * 10) == 10


async def test_unknown_and_terminated_uploads_are_gone(client: TusClient, endpoint: str) -> None:
    unknown = endpoint + "A" * 32
    with pytest.raises(UploadGone) as gone:
        await client.head(unknown)
    assert gone.value.status == 404
    with pytest.raises(UploadGone):
        await client.patch(unknown, 0, b"data")

    url = await client.create(100, {})
    await client.patch(url, 0, b"z" * 40)
    await client.terminate(url)
    with pytest.raises(UploadGone):
        await client.head(url)
    with pytest.raises(UploadGone):
        await client.patch(url, 40, b"z" * 10)
    await client.terminate(url)  # terminating twice is fine: it is gone either way


async def test_an_expired_upload_answers_410_and_is_gone(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with running_receiver(tmp_path, expire_after=0.2, sweep_interval=0.05) as rx:
        client = TusClient(session, rx.url, retry=FAST)
        url = await client.create(100, {})
        # Wait for the receiver's sweeper to leave its tombstone (which is what makes a 410).
        for _ in range(250):
            if rx.store.load_tombstone(upload_id_of(url)) is not None:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(UploadGone) as gone:
            await client.head(url)
        assert gone.value.status == 410
        with pytest.raises(UploadGone):
            await client.patch(url, 0, b"late")


async def test_a_completed_upload_cannot_be_terminated(
    client: TusClient, receiver: InProcessReceiver
) -> None:
    data = b"evidence"
    url = await client.create(len(data), {})
    await send(client, url, len(data), Source(data).open)
    with pytest.raises(ServerRejected) as refused:
        await client.terminate(url)
    assert refused.value.status == 403
    assert "evidence" in str(refused.value)  # the server's reason reaches the operator
    assert receiver.stored_bytes(upload_id_of(url)) == data


async def test_bearer_token_is_sent_and_a_wrong_one_is_rejected_without_leaking_it(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    token = "s3cr3t-token-value-0123456789"
    async with running_receiver(tmp_path, tokens={token: "dock-7"}) as rx:
        good = TusClient(session, rx.url, headers={"Authorization": f"Bearer {token}"}, retry=FAST)
        data = os.urandom(5000)
        url = await good.create(len(data), {})
        final = await send(good, url, len(data), Source(data, block=2048).open)
        assert final.offset == len(data)
        assert rx.sidecar(upload_id_of(url))["dock"] == "dock-7"

        wrong = "wrong-token-value-9876543210"
        bad = TusClient(session, rx.url, headers={"Authorization": f"Bearer {wrong}"}, retry=FAST)
        with pytest.raises(ServerRejected) as refused:
            await bad.create(10, {})
        assert refused.value.status == 401
        assert wrong not in str(refused.value)
        assert "401" in str(refused.value)


async def test_a_server_that_is_not_tus_is_named_as_such(
    session: aiohttp.ClientSession, endpoint: str, proxy: FaultProxy
) -> None:
    proxy.queue("OPTIONS", Answer(204, {}))
    client = TusClient(session, endpoint, retry=FAST)
    with pytest.raises(TusError, match="no Tus-Version"):
        await client.capabilities()
