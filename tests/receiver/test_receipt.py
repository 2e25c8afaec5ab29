"""The signed receipt: over exactly the stored bytes, verifiable, tamper-evident, never lost."""

from __future__ import annotations

import hashlib
import os

import pytest
from dockd.crypto import receipt
from support.receiver import Tus, running_receiver, upload_id_of


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
async def test_multi_patch_upload_yields_a_receipt_over_the_stored_bytes(tus: Tus, rx, algorithm):
    data = os.urandom(3 * 1024 * 1024 + 12345)
    location, last = await tus.upload(data, chunk=700_001, checksum=algorithm)
    upload_id = upload_id_of(location)
    digest = hashlib.sha256(data).hexdigest()

    assert rx.stored_bytes(upload_id) == data
    sidecar = rx.sidecar(upload_id)
    assert sidecar["sha256"] == digest
    assert sidecar["length"] == len(data)
    assert sidecar["upload"] == upload_id

    header = last.headers["Dockd-Receipt"]
    assert sidecar["receipt"] == header
    verified = receipt.verify(header, rx.public_key)
    assert verified.matches(upload=upload_id, length=len(data), sha256=digest)
    assert verified.kid == receipt.key_id(rx.public_key)

    head = await tus.head(location)
    assert head.headers["Dockd-Receipt"] == header
    assert (head.offset, int(head.headers["Upload-Length"])) == (len(data), len(data))


async def test_no_receipt_before_completion(tus: Tus):
    location = (await tus.create(8)).headers["Location"]
    reply = await tus.patch(location, 0, b"half")
    assert "Dockd-Receipt" not in reply.headers
    assert "Dockd-Receipt" not in (await tus.head(location)).headers


async def test_tampered_receipt_fails_verification(tus: Tus, rx):
    _, last = await tus.upload(b"exhibit A", chunk=4)
    header = last.headers["Dockd-Receipt"]
    receipt.verify(header, rx.public_key)
    _, payload, signature = header.split(".")
    payload_start = len("v1.")
    signature_start = payload_start + len(payload) + 1
    for index in (
        payload_start + 5,
        payload_start + len(payload) // 2,
        signature_start + 3,
        signature_start + len(signature) - 10,
    ):
        with pytest.raises(receipt.ReceiptError):
            receipt.verify(_flip(header, index), rx.public_key)


async def test_receipt_under_another_key_is_refused(tus: Tus):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _, last = await tus.upload(b"exhibit B", chunk=9)
    with pytest.raises(receipt.ReceiptError):
        receipt.verify(last.headers["Dockd-Receipt"], Ed25519PrivateKey.generate().public_key())


async def test_running_hash_survives_a_restart(tmp_path, session):
    data = os.urandom(2_500_000)
    async with running_receiver(tmp_path) as receiver:
        tus = Tus(session, receiver.url)
        location = (await tus.create(len(data))).headers["Location"]
        upload_id = upload_id_of(location)
        assert (await tus.patch(location, 0, data[:1_300_000])).status == 204
    async with running_receiver(tmp_path) as receiver:  # new process state: hash rebuilt from disk
        tus = Tus(session, receiver.url)
        location = receiver.url + upload_id
        head = await tus.head(location)
        assert head.offset == 1_300_000
        reply = await tus.patch(location, head.offset, data[head.offset :])
        assert reply.status == 204
        verified = receipt.verify(reply.headers["Dockd-Receipt"], receiver.public_key)
        assert verified.sha256 == hashlib.sha256(data).hexdigest()
        assert receiver.sidecar(upload_id)["sha256"] == verified.sha256
    async with running_receiver(tmp_path) as receiver:  # and the receipt outlives the process
        head = await Tus(session, receiver.url).head(receiver.url + upload_id)
        assert head.headers["Dockd-Receipt"] == reply.headers["Dockd-Receipt"]
