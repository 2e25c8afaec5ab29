"""Transient failures between the client and the real receiver: retried, bounded, reported."""

from __future__ import annotations

import hashlib
import os
import socket

import aiohttp
import pytest
import structlog
from dockd.crypto import receipt
from dockd.transport.tus import (
    RetryPolicy,
    ServerRejected,
    ServerUnavailable,
    TusClient,
    send,
)
from support.receiver import InProcessReceiver, upload_id_of

from transport.fault_proxy import Answer, Corrupt, DropMidBody, FaultProxy, Pass, Stall
from transport.harness import FAST, MIB, Source


def _resent_bytes(proxy: FaultProxy, length: int) -> int:
    """Bytes the client put into PATCH requests beyond the upload's length."""
    return sum(p.declared_length for p in proxy.requests("PATCH")) - length


async def test_503_with_retry_after_is_waited_out_then_the_upload_completes(
    session: aiohttp.ClientSession, endpoint: str, proxy: FaultProxy, receiver: InProcessReceiver
) -> None:
    # The policy's own backoff is tiny, so only Retry-After can explain a second-long pause.
    client = TusClient(session, endpoint, retry=RetryPolicy(attempts=3, initial=0.01, maximum=5))
    data = os.urandom(2 * MIB)
    url = await client.create(len(data), {})
    proxy.queue("PATCH", Pass(), Answer(503, {"Retry-After": "1"}))

    final = await send(client, url, len(data), Source(data).open)

    assert final.offset == len(data)
    assert receiver.stored_bytes(upload_id_of(url)) == data
    refused, retried = proxy.requests("PATCH")[1:3]
    assert refused.offset == retried.offset == MIB
    assert retried.arrived - refused.arrived >= 0.95


async def test_503_until_attempts_run_out_is_server_unavailable_with_the_hint(
    session: aiohttp.ClientSession, endpoint: str, proxy: FaultProxy
) -> None:
    # maximum caps the wait well below Retry-After: the hint is reported, not slept through.
    client = TusClient(session, endpoint, retry=RetryPolicy(attempts=3, initial=0.01, maximum=0.02))
    url = await client.create(100, {})
    proxy.queue("PATCH", *[Answer(503, {"Retry-After": "120"})] * 3)

    with pytest.raises(ServerUnavailable) as unavailable:
        await client.patch(url, 0, b"x" * 100)

    assert unavailable.value.retry_after == 120.0
    assert "3 attempts" in str(unavailable.value)
    assert "503" in str(unavailable.value)
    assert len(proxy.requests("PATCH")) == 3
    assert (await client.head(url)).offset == 0


async def test_retries_are_logged_without_header_values(
    session: aiohttp.ClientSession, endpoint: str, proxy: FaultProxy
) -> None:
    token = "Bearer do-not-log-this-0123456789"
    client = TusClient(session, endpoint, headers={"Authorization": token}, retry=FAST)
    proxy.queue("HEAD", Answer(429, {"Retry-After": "0"}))
    url = await client.create(10, {})

    with structlog.testing.capture_logs() as logs:
        await client.head(url)

    (retry,) = [entry for entry in logs if entry["event"] == "tus.retry"]
    assert retry["attempt"] == 1
    assert "429" in retry["cause"]
    assert "do-not-log-this" not in repr(logs)


async def test_connection_cut_mid_patch_resends_at_most_that_block(
    client: TusClient, proxy: FaultProxy, receiver: InProcessReceiver
) -> None:
    data = os.urandom(3 * MIB)
    url = await client.create(len(data), {})
    # The receiver gets the first 300 KiB of block 2 and then a dead connection.
    proxy.queue("PATCH", Pass(), DropMidBody(after=300 * 1024))

    final = await send(client, url, len(data), Source(data).open)

    assert final.offset == len(data)
    assert receiver.stored_bytes(upload_id_of(url)) == data
    assert 0 < _resent_bytes(proxy, len(data)) <= MIB


async def test_a_chunk_damaged_in_flight_is_refused_and_sent_again(
    client: TusClient, proxy: FaultProxy, receiver: InProcessReceiver
) -> None:
    data = os.urandom(3 * MIB)
    url = await client.create(len(data), {})
    proxy.queue("PATCH", Pass(), Corrupt())

    final = await send(client, url, len(data), Source(data).open)

    assert receiver.stored_bytes(upload_id_of(url)) == data
    assert final.receipt is not None
    signed = receipt.verify(final.receipt, receiver.public_key)
    assert signed.sha256 == hashlib.sha256(data).hexdigest()
    patches = proxy.requests("PATCH")
    assert [p.offset for p in patches] == [0, MIB, MIB, 2 * MIB]
    # The damage was caught by the per-PATCH CRC32C, not by a costlier hash.
    assert all(p.headers["Upload-Checksum"].startswith("crc32c ") for p in patches)


async def test_checksum_mismatch_every_time_gives_up(client: TusClient, proxy: FaultProxy) -> None:
    url = await client.create(1000, {})
    proxy.queue("PATCH", *[Corrupt()] * FAST.attempts)
    with pytest.raises(ServerUnavailable, match="460"):
        await client.patch(url, 0, os.urandom(1000))
    assert (await client.head(url)).offset == 0  # nothing damaged was stored


async def test_a_server_that_does_not_answer_in_time_is_retried(
    session: aiohttp.ClientSession, endpoint: str, proxy: FaultProxy, receiver: InProcessReceiver
) -> None:
    policy = RetryPolicy(attempts=3, initial=0.01, maximum=0.05, request_timeout=0.3)
    client = TusClient(session, endpoint, retry=policy)
    data = os.urandom(MIB // 2)
    url = await client.create(len(data), {})
    proxy.queue("PATCH", Stall())

    final = await send(client, url, len(data), Source(data, block=MIB // 4).open)

    assert final.offset == len(data)
    assert receiver.stored_bytes(upload_id_of(url)) == data
    assert [p.offset for p in proxy.requests("PATCH")] == [0, 0, MIB // 4]


async def test_an_unreachable_server_is_unavailable_after_the_configured_attempts(
    session: aiohttp.ClientSession,
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = TusClient(
        session, f"http://127.0.0.1:{port}/files/", retry=RetryPolicy(attempts=2, initial=0.01)
    )
    with structlog.testing.capture_logs() as logs, pytest.raises(ServerUnavailable) as unavailable:
        await client.create(10, {})
    assert "2 attempts" in str(unavailable.value)
    assert "Connect" in str(unavailable.value)  # the cause names the connection failure
    assert unavailable.value.retry_after is None
    assert len([e for e in logs if e["event"] == "tus.retry"]) == 1


@pytest.mark.parametrize("status", [400, 403, 413, 415])
async def test_refusals_are_not_retried(client: TusClient, proxy: FaultProxy, status: int) -> None:
    url = await client.create(10, {})
    proxy.queue("PATCH", Answer(status))
    with pytest.raises(ServerRejected) as refused:
        await client.patch(url, 0, b"0123456789")
    assert refused.value.status == status
    assert str(status) in str(refused.value)
    assert len(proxy.requests("PATCH")) == 1


async def test_a_redirect_is_not_followed(client: TusClient, proxy: FaultProxy) -> None:
    url = await client.create(10, {})
    proxy.queue("PATCH", Answer(307, {"Location": "http://elsewhere.invalid/files/x"}))
    with pytest.raises(ServerRejected, match=r"elsewhere\.invalid") as refused:
        await client.patch(url, 0, b"0123456789")
    assert refused.value.status == 307
    assert (await client.head(url)).offset == 0
