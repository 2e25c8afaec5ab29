"""Power cuts under `dockd serve --store` on lazyfs: every acknowledged byte survives.

kill -9 keeps the page cache, so it cannot tell a synced chunk from an unsynced one. Here the
store lives on lazyfs, which loses everything not fsync'd at each cut. A client uploads several
files in random chunk sizes and records every acknowledged (201/204) offset; at random moments the
receiver is killed and the power is cut; after the file system and the receiver come back, HEAD
must report at least the last acknowledged offset of every upload, and the stored bytes up to the
server's offset must be exactly the bytes sent. In the end every upload completes with a receipt
over the right SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from dockd.crypto import receipt
from support.receiver import ReceiverProcess, Tus, upload_id_of

from powerloss.conftest import cuts_from_env, seed_from_env
from powerloss.mount import LazyMount

pytestmark = [pytest.mark.powerloss, pytest.mark.timeout(600)]

KiB = 1024
NEW_PER_CUT = 2  # uploads started before each cut, so every cut lands amid traffic


@dataclass
class Upload:
    data: bytes
    location: str | None = None  # known once the creation was acknowledged
    acked: int = 0  # the highest offset a 204 acknowledged
    finished: bool = False  # the server reported the whole length (204 or, after a cut, HEAD)


async def _upload_until_error(tus: Tus, uploads: list[Upload], rng: random.Random) -> None:
    """PATCH in random chunks (64 KiB to 512 KiB), recording each acknowledgement, until done or
    until the server goes away (the cut)."""
    try:
        for upload in uploads:
            if upload.location is None:
                created = await tus.create(len(upload.data))
                assert created.status == 201, created
                upload.location = created.headers["Location"]
            offset = (await tus.head(upload.location)).offset
            upload.finished = offset == len(upload.data)
            while offset < len(upload.data):
                size = rng.randint(64 * KiB, 512 * KiB)
                reply = await tus.patch(
                    upload.location, offset, upload.data[offset : offset + size]
                )
                assert reply.status == 204, reply
                offset = reply.offset
                upload.acked = max(upload.acked, offset)
                upload.finished = offset == len(upload.data)
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        return


def _stored_prefix(store: Path, upload_id: str, length: int) -> bytes:
    for folder in ("complete", "partial"):
        path = store / folder / f"{upload_id}.bin"
        if path.exists():
            with path.open("rb") as handle:
                return handle.read(length)
    return b""


async def _check_after_cut(tus: Tus, server: ReceiverProcess, uploads: list[Upload]) -> int:
    """Every acknowledged byte is there, exactly. Returns the bytes acknowledged so far."""
    for upload in uploads:
        if upload.location is None:
            continue
        head = await tus.head(upload.location)
        assert head.status == 200, f"an acknowledged creation is gone after the cut: {head}"
        assert head.offset >= upload.acked, (
            f"lost acknowledged bytes: server offset {head.offset} < acknowledged {upload.acked}"
        )
        stored = _stored_prefix(server.store, upload_id_of(upload.location), head.offset)
        assert stored == upload.data[: head.offset], "stored bytes differ from the bytes sent"
    return sum(u.acked for u in uploads)


async def test_acknowledged_bytes_survive_power_cuts(tmp_path: Path, lazy_mount: LazyMount):
    seed = seed_from_env()
    cuts = cuts_from_env(20)
    rng = random.Random(seed)
    note = f"(DOCKD_TEST_SEED={seed})"
    uploads: list[Upload] = []
    server = ReceiverProcess(tmp_path / "receiver")
    server.store = lazy_mount.mountpoint / "store"
    started = time.monotonic()
    connector = aiohttp.TCPConnector(force_close=True)  # a killed server leaves dead connections
    async with aiohttp.ClientSession(connector=connector) as session:
        server.start()
        acked_at_cut: list[int] = []
        mid_upload = 0  # cuts that landed while the client was still sending
        try:
            for _ in range(cuts):
                uploads += [
                    Upload(rng.randbytes(rng.randint(1, 4096 * KiB))) for _ in range(NEW_PER_CUT)
                ]
                tus = Tus(session, server.url)
                client = asyncio.create_task(_upload_until_error(tus, uploads, rng))
                await asyncio.wait({client}, timeout=rng.uniform(0.01, 0.4))
                mid_upload += not client.done()
                server.kill9()
                lazy_mount.power_cut()
                await client
                lazy_mount.mount()
                server.start()
                try:
                    acked_at_cut.append(await _check_after_cut(tus, server, uploads))
                except AssertionError as exc:
                    raise AssertionError(f"{exc} {note}") from None
            tus = Tus(session, server.url)
            await _upload_until_error(tus, uploads, rng)
            assert all(u.finished for u in uploads), f"uploads did not finish {note}"
            for upload in uploads:
                assert upload.location is not None
                head = await tus.head(upload.location)
                signed = receipt.verify(head.headers["Dockd-Receipt"], server.public_key)
                assert signed.matches(
                    upload=upload_id_of(upload.location),
                    length=len(upload.data),
                    sha256=hashlib.sha256(upload.data).hexdigest(),
                )
                stored = _stored_prefix(server.store, upload_id_of(upload.location), 1 << 30)
                assert stored == upload.data
        finally:
            if server.process is not None:
                server.kill9()
    assert mid_upload > 0, f"no cut landed during an upload: the test proved nothing {note}"
    report = {
        "test": "receiver_store_power_loss",
        "seed": seed,
        "cuts": lazy_mount.cuts,
        "cuts_mid_upload": mid_upload,
        "bytes_acked_at_cuts": acked_at_cut,
        "bytes_uploaded": sum(len(u.data) for u in uploads),
        "bytes_lost": 0,
        "seconds": round(time.monotonic() - started, 1),
    }
    print("powerloss:", json.dumps(report))
