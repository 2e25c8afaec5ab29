"""Facts about the stock @tus/server 2.4.5 that dockd's design relies on, checked on the real thing.

dockd's default confirmation policy needs a server that verifies what it stores; these tests pin
down that a popular third-party tus server does not (so `confirm = "offset"` is weaker, as the
docs say), and that our harness reports its quirks faithfully.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from support.node_peers import TusNodeServer, ensure_node_peers
from support.receiver import ReceiverProcess

TUS = {"Tus-Resumable": "1.0.0"}
PATCH_HEADERS = {**TUS, "Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def tus_node_server() -> Iterator[TusNodeServer]:
    ensure_node_peers()
    with TusNodeServer() as server:
        yield server


async def _create(session: aiohttp.ClientSession, endpoint: str, length: int) -> str:
    async with session.post(endpoint, headers={**TUS, "Upload-Length": str(length)}) as resp:
        assert resp.status == 201, await resp.text()
        return resp.headers["Location"]


async def _patch_with_wrong_checksum(endpoint: str) -> tuple[int, int, str]:
    """Create an upload, PATCH it with a checksum of other bytes; return status, offset, url."""
    sent = b"evidence bytes, corrupted in transit"
    claimed = base64.b64encode(hashlib.sha1(b"what the client meant to send").digest()).decode()
    async with aiohttp.ClientSession() as session:
        url = await _create(session, endpoint, len(sent))
        headers = {**PATCH_HEADERS, "Upload-Offset": "0", "Upload-Checksum": f"sha1 {claimed}"}
        async with session.patch(url, data=sent, headers=headers) as resp:
            status = resp.status
        async with session.head(url, headers=TUS) as resp:
            return status, int(resp.headers["Upload-Offset"]), url


async def test_tus_node_server_accepts_a_chunk_whose_checksum_is_wrong(
    tus_node_server: TusNodeServer,
) -> None:
    status, offset, url = await _patch_with_wrong_checksum(tus_node_server.url)

    # A verifying server answers 460 Checksum Mismatch and keeps the offset at 0.
    assert status == 204
    assert offset > 0
    stored = (tus_node_server.dir / url.rstrip("/").rsplit("/", 1)[-1]).read_bytes()
    assert stored == b"evidence bytes, corrupted in transit"


async def test_dockd_refuses_the_chunk_tus_node_server_accepts(tmp_path: Path) -> None:
    with ReceiverProcess(tmp_path) as receiver:
        status, offset, _ = await _patch_with_wrong_checksum(receiver.url)

    assert status == 460
    assert offset == 0


async def test_tus_node_server_conflict_carries_no_offset(tus_node_server: TusNodeServer) -> None:
    async with aiohttp.ClientSession() as session:
        url = await _create(session, tus_node_server.url, 8)
        headers = {**PATCH_HEADERS, "Upload-Offset": "4"}
        async with session.patch(url, data=b"late", headers=headers) as resp:
            assert resp.status == 409
            # So a client that hits a 409 must HEAD to learn where to continue.
            assert "Upload-Offset" not in resp.headers
        async with session.head(url, headers=TUS) as resp:
            assert resp.headers["Upload-Offset"] == "0"


async def test_tus_node_server_rejects_an_empty_metadata_header(
    tus_node_server: TusNodeServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {**TUS, "Upload-Length": "8", "Upload-Metadata": ""}
        async with session.post(tus_node_server.url, headers=headers) as resp:
            # A client must leave the header out when there is no metadata.
            assert resp.status == 400
