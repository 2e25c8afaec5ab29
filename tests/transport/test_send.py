"""`send`: drive an upload to completion from whatever the server holds, closing every stream."""

from __future__ import annotations

import asyncio
import os

import pytest
from dockd.crypto import receipt
from dockd.transport.tus import (
    MAX_STALLED_ROUNDS,
    ServerRejected,
    TusClient,
    TusError,
    send,
)
from support.receiver import InProcessReceiver, upload_id_of

from transport.fault_proxy import Answer, FaultProxy, Pass, Stall, Truncate
from transport.harness import MIB, Source


async def test_send_resumes_from_the_servers_offset_and_never_resends_the_prefix(
    client: TusClient, proxy: FaultProxy, receiver: InProcessReceiver
) -> None:
    data = os.urandom(3 * MIB)
    prefix = MIB + 12345  # deliberately not on a block boundary
    url = await client.create(len(data), {})
    assert await client.patch(url, 0, data[:prefix]) == prefix
    source = Source(data)

    final = await send(client, url, len(data), source.open)

    assert final.offset == len(data)
    assert source.starts == [prefix]
    patches = proxy.requests("PATCH")[1:]  # after the one that stored the prefix
    assert min(p.offset or 0 for p in patches) == prefix
    assert receiver.stored_bytes(upload_id_of(url)) == data


async def test_offset_conflict_mid_send_closes_the_stream_and_continues_from_the_server(
    client: TusClient, receiver: InProcessReceiver
) -> None:
    data = os.urandom(3 * MIB)
    url = await client.create(len(data), {})

    async def someone_else_stores_block_2(start: int) -> None:
        # As if an earlier attempt's PATCH had landed but its response was lost.
        if start == MIB:
            await client.patch(url, MIB, data[MIB : 2 * MIB])

    source = Source(data, before_block=someone_else_stores_block_2)
    progress: list[int] = []

    final = await send(client, url, len(data), source.open, progress.append)

    assert final.offset == len(data)
    assert source.starts == [0, 2 * MIB]
    assert source.closed == 2
    assert progress == [MIB, 3 * MIB]
    assert receiver.stored_bytes(upload_id_of(url)) == data


async def test_a_short_acknowledgement_restarts_the_stream_where_the_server_stopped(
    client: TusClient, proxy: FaultProxy, receiver: InProcessReceiver
) -> None:
    data = os.urandom(3 * MIB)
    url = await client.create(len(data), {})
    proxy.queue("PATCH", Pass(), Truncate(keep=1000))  # the server keeps 1000 of block 2
    source = Source(data)
    progress: list[int] = []

    final = await send(client, url, len(data), source.open, progress.append)

    assert final.offset == len(data)
    assert source.starts == [0, MIB + 1000]
    assert progress[:2] == [MIB, MIB + 1000]
    assert receiver.stored_bytes(upload_id_of(url)) == data


async def test_a_finished_upload_is_not_sent_again(
    client: TusClient, receiver: InProcessReceiver
) -> None:
    data = os.urandom(4096)
    url = await client.create(len(data), {})
    await client.patch(url, 0, data)  # completes; imagine its response was lost
    source = Source(data)

    final = await send(client, url, len(data), source.open)

    assert source.starts == []
    assert final.receipt is not None
    assert receipt.verify(final.receipt, receiver.public_key).length == len(data)


async def test_the_stream_is_closed_when_send_fails_mid_way(
    client: TusClient, proxy: FaultProxy
) -> None:
    data = os.urandom(3 * MIB)
    url = await client.create(len(data), {})
    proxy.queue("PATCH", Pass(), Answer(403))
    source = Source(data)

    with pytest.raises(ServerRejected):
        await send(client, url, len(data), source.open)

    assert source.starts == [0]
    assert source.closed == 1
    assert (await client.head(url)).offset == MIB


async def test_the_stream_is_closed_when_send_is_cancelled(
    client: TusClient, proxy: FaultProxy
) -> None:
    data = os.urandom(2 * MIB)
    url = await client.create(len(data), {})
    proxy.queue("PATCH", Pass(), Stall())
    source = Source(data)
    task = asyncio.create_task(send(client, url, len(data), source.open))
    for _ in range(500):  # until the second PATCH hangs in the proxy
        if len(proxy.requests("PATCH")) == 2:
            break
        await asyncio.sleep(0.01)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert source.closed == 1


async def test_an_offset_that_goes_backwards_is_an_error_not_a_loop(
    client: TusClient, proxy: FaultProxy
) -> None:
    data = os.urandom(2 * MIB)
    url = await client.create(len(data), {})
    proxy.queue("PATCH", Pass(), Answer(409))
    lying_head = Answer(200, {"Upload-Offset": "0", "Upload-Length": str(len(data))})
    proxy.queue("HEAD", Pass(), lying_head)
    source = Source(data)

    with pytest.raises(TusError, match="went back from 1048576 to 0"):
        await send(client, url, len(data), source.open)
    assert source.closed == len(source.starts) == 1


async def test_no_progress_round_after_round_is_an_error_not_a_loop(
    client: TusClient, proxy: FaultProxy
) -> None:
    data = os.urandom(1000)
    url = await client.create(len(data), {})
    proxy.queue("PATCH", *[Answer(409)] * (MAX_STALLED_ROUNDS + 5))
    source = Source(data)

    with pytest.raises(TusError, match="no progress"):
        await send(client, url, len(data), source.open)

    assert len(proxy.requests("PATCH")) == MAX_STALLED_ROUNDS  # one per round, then it stops
    assert source.closed == len(source.starts)


async def test_a_source_that_ends_early_is_an_error(client: TusClient) -> None:
    data = os.urandom(3000)
    url = await client.create(len(data) + 1, {})
    source = Source(data, block=1000)
    with pytest.raises(TusError, match="ended at byte 3000"):
        await send(client, url, len(data) + 1, source.open)
    assert source.closed == 1
    assert (await client.head(url)).offset == 3000


async def test_a_source_that_yields_too_much_sends_none_of_the_excess(
    client: TusClient, proxy: FaultProxy
) -> None:
    data = os.urandom(3000)
    url = await client.create(2500, {})
    source = Source(data, block=1000)
    with pytest.raises(TusError, match="more than the declared 2500"):
        await send(client, url, 2500, source.open)
    assert [p.offset for p in proxy.requests("PATCH")] == [0, 1000]
    assert source.closed == 1


async def test_a_length_that_differs_from_the_servers_is_refused(client: TusClient) -> None:
    url = await client.create(100, {})
    source = Source(b"x" * 200)
    with pytest.raises(TusError, match="server expects 100 bytes but we are sending 200"):
        await send(client, url, 200, source.open)
    assert source.starts == []
