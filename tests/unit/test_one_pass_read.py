"""The one pass over a clip (camera_read): from any resume offset it yields exactly the rest of
the ciphertext the preparation pass would have produced, and its hashes are those of the whole
clip, with every byte read counted (the prefix of a resume included)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from dockd import camera_read
from dockd.crypto import age
from dockd.crypto.keys import AgeRecipient, keygen
from dockd.devices.camera import FileIdentity

SIZE = 3 * age.CHUNK_SIZE + 1234  # several STREAM chunks, the last one short
BLOCK = 50_000  # not a multiple of anything age uses


@pytest.fixture
def clip(tmp_path: Path) -> tuple[Path, bytes, FileIdentity]:
    data = os.urandom(SIZE)
    (tmp_path / "cam/DCIM").mkdir(parents=True)
    path = tmp_path / "cam/DCIM/A.MP4"
    path.write_bytes(data)
    return tmp_path / "cam", data, FileIdentity.from_stat(os.stat(path))


def _recipient(tmp_path: Path) -> AgeRecipient:
    keys = keygen(tmp_path / "keys")
    return AgeRecipient.parse(keys.age_recipient.read_text().strip())


@pytest.mark.parametrize("resume_at", [0, 1, 200, 70_000, 150_000])
def test_from_any_offset_the_rest_of_the_same_ciphertext_and_the_whole_hashes(
    tmp_path, clip, resume_at
):
    root, data, identity = clip
    stop = threading.Event()
    prepared = camera_read.prepare(root, b"DCIM/A.MP4", identity, [_recipient(tmp_path)], stop)
    header = prepared.age_header
    secrets = age.EncryptionSecrets.from_bytes(prepared.secrets)
    whole = b"".join(camera_read._blocks(root, b"DCIM/A.MP4", identity, header, secrets, 0, BLOCK))
    assert hashlib.sha256(whole).hexdigest() == prepared.ciphertext_sha256

    digests, read = camera_read.Digests(), []
    blocks = list(
        camera_read._one_pass_blocks(
            root,
            b"DCIM/A.MP4",
            identity,
            header,
            secrets,
            resume_at,
            BLOCK,
            digests,
            read.append,
            stop,
        )
    )
    assert b"".join(blocks) == whole[resume_at:]  # never a byte before the server's offset
    assert all(len(b) == BLOCK for b in blocks[:-1])
    assert digests.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert digests.ciphertext_sha256 == prepared.ciphertext_sha256
    assert sum(read) == SIZE  # the prefix is read (to hash it) once, like every other byte


def test_the_prefix_a_resume_reads_again_is_the_plaintext_behind_the_servers_offset() -> None:
    header = 200  # bytes of age header; the 16-byte payload nonce follows
    start = header + age.PAYLOAD_NONCE_SIZE
    assert camera_read.plaintext_before(header, 0, SIZE) == 0
    assert camera_read.plaintext_before(header, start, SIZE) == 0
    two_chunks = start + 2 * age.ENCRYPTED_CHUNK_SIZE
    assert camera_read.plaintext_before(header, two_chunks, SIZE) == 2 * age.CHUNK_SIZE
    assert camera_read.plaintext_before(header, two_chunks + 10, SIZE) == 2 * age.CHUNK_SIZE + 10
    assert camera_read.plaintext_before(header, 10**12, SIZE) == SIZE


def test_a_pass_from_the_end_only_rebuilds_the_hashes(tmp_path, clip):
    root, data, identity = clip
    header, secrets = age.new_encryption([_recipient(tmp_path)])
    digests, read = camera_read.Digests(), []
    camera_read.rebuild_digests(
        root, b"DCIM/A.MP4", identity, header, secrets, digests, read.append, threading.Event()
    )
    assert digests.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert sum(read) == SIZE
