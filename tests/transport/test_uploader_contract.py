"""The contract every dock `Uploader` keeps, run against each implementation.

`TusClient` against the real receiver, and the `FakeUploader` the fast pipeline tests use: if the
fake drifted from what the real transport does at the seam, pipeline tests on it would prove
nothing. A new transport passes this suite before the dock uses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from dockd.confirm import upload_id
from dockd.crypto import receipt
from dockd.transport.tus import TusClient
from dockd.transport.uploader import Uploader, UploadGone
from support.fake_uploader import FakeUploader
from support.receiver import running_receiver

from transport.harness import FAST, Source

DATA = hashlib.sha512(b"contract").digest() * 4096  # 256 KiB
BLOCK = 64 * 1024
METADATA = {"filename": "A.MP4", "sha256": hashlib.sha256(DATA).hexdigest()}


@dataclass
class Seam:
    uploader: Uploader
    public_key: Ed25519PublicKey
    missing_url: str  # an upload URL the server never had


@pytest.fixture(params=["tus", "fake"])
async def seam(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Seam]:
    if request.param == "fake":
        key = Ed25519PrivateKey.generate()
        yield Seam(FakeUploader(key), key.public_key(), FakeUploader.url + "never-made")
        return
    async with running_receiver(tmp_path) as rx, aiohttp.ClientSession() as session:
        yield Seam(TusClient(session, rx.url, retry=FAST), rx.public_key, rx.url + "0" * 32)


async def test_a_new_upload_is_empty_and_has_no_receipt(seam: Seam) -> None:
    url = await seam.uploader.create(len(DATA), METADATA)
    state = await seam.uploader.status(url)
    assert (state.url, state.offset, state.length, state.receipt) == (url, 0, len(DATA), None)


async def test_a_sent_upload_is_complete_with_a_receipt_for_exactly_its_bytes(seam: Seam) -> None:
    url = await seam.uploader.create(len(DATA), METADATA)
    progress: list[int] = []
    final = await seam.uploader.send(url, len(DATA), Source(DATA, BLOCK).open, progress.append)
    assert final.offset == len(DATA) and final.receipt is not None
    assert progress == sorted(progress) and progress[-1] == len(DATA)
    signed = receipt.verify(final.receipt, seam.public_key)
    assert signed.matches(
        upload=upload_id(url), length=len(DATA), sha256=hashlib.sha256(DATA).hexdigest()
    )
    assert (await seam.uploader.status(url)).receipt == final.receipt


async def test_send_resumes_from_the_servers_offset_after_an_interruption(seam: Seam) -> None:
    url = await seam.uploader.create(len(DATA), METADATA)

    async def cut_after_two_blocks(offset: int) -> None:
        if offset >= 2 * BLOCK:
            raise OSError(5, "camera unplugged")

    with pytest.raises(OSError):
        await seam.uploader.send(url, len(DATA), Source(DATA, BLOCK, cut_after_two_blocks).open)
    assert (await seam.uploader.status(url)).offset == 2 * BLOCK
    source = Source(DATA, BLOCK)
    final = await seam.uploader.send(url, len(DATA), source.open)
    assert source.starts == [2 * BLOCK] and source.closed == 1
    assert receipt.verify(final.receipt or "", seam.public_key).matches(
        upload=upload_id(url), length=len(DATA), sha256=hashlib.sha256(DATA).hexdigest()
    )


async def test_a_complete_upload_sent_again_sends_nothing(seam: Seam) -> None:
    url = await seam.uploader.create(len(DATA), METADATA)
    await seam.uploader.send(url, len(DATA), Source(DATA, BLOCK).open)
    source = Source(DATA, BLOCK)
    again = await seam.uploader.send(url, len(DATA), source.open)
    assert again.offset == len(DATA) and source.starts == []


async def test_an_upload_the_server_does_not_have_is_gone(seam: Seam) -> None:
    with pytest.raises(UploadGone):
        await seam.uploader.status(seam.missing_url)
    with pytest.raises(UploadGone):
        await seam.uploader.send(seam.missing_url, len(DATA), Source(DATA, BLOCK).open)


# -- one camera read per clip: tus concatenation --


async def test_a_final_upload_of_a_sent_partial_gets_the_receipt_for_its_bytes(seam: Seam) -> None:
    if isinstance(seam.uploader, FakeUploader):
        seam.uploader.concatenation = True
    assert await seam.uploader.supports_concatenation()
    partial = await seam.uploader.create_partial(len(DATA))
    sent = await seam.uploader.send(partial, len(DATA), Source(DATA, BLOCK).open)
    assert sent.offset == len(DATA) and sent.receipt is None  # a partial is never evidence
    final = await seam.uploader.create_final([partial], METADATA)
    state = await seam.uploader.status(final)
    assert state.offset == state.length == len(DATA)
    assert state.receipt is not None
    signed = receipt.verify(state.receipt, seam.public_key)
    assert signed.matches(
        upload=upload_id(final), length=len(DATA), sha256=hashlib.sha256(DATA).hexdigest()
    )
    # The same creation again (its answer was lost): the same final, never a second copy.
    assert await seam.uploader.create_final([partial], METADATA) == final
    with pytest.raises(UploadGone):  # used up: no final with other metadata
        await seam.uploader.create_final([partial], {**METADATA, "evidence": "true"})
    with pytest.raises(UploadGone):
        await seam.uploader.create_final([seam.missing_url], METADATA)


async def test_a_terminated_partial_is_gone_and_ending_it_again_is_not_an_error(
    seam: Seam,
) -> None:
    """The dock ends the partial of a clip quarantined mid-stream (pipeline._quarantine)."""
    if isinstance(seam.uploader, FakeUploader):
        seam.uploader.concatenation = True
    partial = await seam.uploader.create_partial(len(DATA))

    async def cut_after_one_block(offset: int) -> None:
        if offset >= BLOCK:
            raise OSError(5, "camera unplugged")

    with pytest.raises(OSError):
        await seam.uploader.send(partial, len(DATA), Source(DATA, BLOCK, cut_after_one_block).open)
    await seam.uploader.terminate(partial)
    with pytest.raises(UploadGone):
        await seam.uploader.status(partial)
    await seam.uploader.terminate(partial)
    await seam.uploader.terminate(seam.missing_url)
