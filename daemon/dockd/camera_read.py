"""Reading clips off the camera: the preparation pass and the resumable ciphertext stream.

Both run in worker threads (hashlib and ChaCha20-Poly1305 release the GIL on large buffers), so
the event loop keeps serving HTTP, udev and the control socket.

Why two passes over the camera: the plaintext SHA-256 travels in the tus creation metadata, so it
must be known before the upload exists. The first pass also computes the exact ciphertext and its
SHA-256 (encryption is deterministic once a clip's header and file key are fixed), so that

* the server's receipt can be compared with the SHA-256 of the ciphertext *of the bytes we hashed*:
  a match proves the server holds the encryption of exactly the plaintext in the custody hash,
  even if the camera changed the file between the passes (then the receipt simply does not match);
* a resume after a crash seeks straight to the server's offset: nothing before it is re-read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dockd.crypto import age
from dockd.crypto.keys import AgeRecipient
from dockd.devices.camera import FileIdentity, open_clip

READ_SIZE = 1 << 20


class ClipChangedError(Exception):
    """The file on the camera is not the one that was discovered or hashed."""


class Stopped(Exception):
    """The pass was asked to stop (camera undocked, daemon stopping)."""


@dataclass(frozen=True)
class Prepared:
    plaintext_sha256: str
    ciphertext_sha256: str
    ciphertext_length: int
    age_header: bytes
    secrets: bytes  # age.EncryptionSecrets.to_bytes(): sealed by the journal


class _HashingReader:
    """A read-only file wrapper that hashes every byte read, for the single preparation pass."""

    def __init__(
        self, raw: BinaryIO, stop: threading.Event, progress: Callable[[int], None]
    ) -> None:
        self._raw = raw
        self._stop = stop
        self._progress = progress
        self.digest = hashlib.sha256()
        self.position = 0

    def _account(self, data: bytes | memoryview) -> None:
        if self._stop.is_set():
            raise Stopped("stopped while reading")
        self.digest.update(data)
        self.position += len(data)
        self._progress(self.position)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._account(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._raw.readinto(buffer) or 0
        self._account(memoryview(buffer)[:count])
        return count

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if (offset, whence) != (0, os.SEEK_SET) and not (
            whence == os.SEEK_SET and offset == self.position
        ):
            raise ValueError("the preparation pass reads the clip once, from the start")
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def _check_identity(handle: BinaryIO, expected: FileIdentity, when: str) -> None:
    # dev and ino are left out: they are not stable across a re-dock (FAT numbers inodes per
    # mount); the wipe proves sameness across docks by content instead.
    found = FileIdentity.from_stat(os.fstat(handle.fileno()))
    changed = [c for c in expected.differs_from(found) if c not in ("dev", "ino")]
    if changed:
        raise ClipChangedError(
            f"clip changed on the camera {when} ({', '.join(changed)}: size {expected.size} -> "
            f"{found.size}, mtime_ns {expected.mtime_ns} -> {found.mtime_ns}, ctime_ns "
            f"{expected.ctime_ns} -> {found.ctime_ns})"
        )


def prepare(
    root: Path,
    rel_path: bytes,
    expected: FileIdentity,
    recipients: Sequence[AgeRecipient],
    stop: threading.Event,
    progress: Callable[[int], None] = lambda _done: None,
) -> Prepared:
    """Hash the plaintext, fix the clip's age header and key, and hash the exact ciphertext."""
    header, secrets = age.new_encryption(recipients)
    length = age.ciphertext_length(len(header), expected.size)
    with open_clip(root, rel_path) as raw:
        _check_identity(raw, expected, "since discovery")
        reader = _HashingReader(raw, stop, progress)
        ciphertext_digest = hashlib.sha256()
        produced = 0
        try:
            for piece in age.iter_ciphertext(header, secrets, reader, expected.size):  # type: ignore[arg-type]
                ciphertext_digest.update(piece)
                produced += len(piece)
        except age.ClipChanged as exc:
            raise ClipChangedError(
                f"clip changed on the camera while being hashed: {exc}"
            ) from None
        _check_identity(raw, expected, "while being hashed")
    if produced != length:  # a bug, not a camera problem: never upload what we cannot predict
        raise RuntimeError(f"ciphertext length {produced} != predicted {length}")
    return Prepared(
        plaintext_sha256=reader.digest.hexdigest(),
        ciphertext_sha256=ciphertext_digest.hexdigest(),
        ciphertext_length=length,
        age_header=header,
        secrets=secrets.to_bytes(),
    )


def _blocks(
    root: Path,
    rel_path: bytes,
    expected: FileIdentity,
    header: bytes,
    secrets: age.EncryptionSecrets,
    start: int,
    block_size: int,
) -> Iterator[bytes]:
    """Ciphertext from `start` in blocks of exactly `block_size` (the last one shorter)."""
    with open_clip(root, rel_path) as raw:
        _check_identity(raw, expected, "since it was hashed")
        # Pieces (~1 MiB) are collected and joined once per block: one block-sized allocation,
        # where a growing bytearray plus slice copies held three (8 parallel uploads x 8 MiB).
        parts: list[bytes] = []
        have = 0
        try:
            for piece in age.iter_ciphertext(header, secrets, raw, expected.size, start=start):
                while piece:
                    take = min(len(piece), block_size - have)
                    parts.append(piece if take == len(piece) else piece[:take])
                    piece = piece[take:]
                    have += take
                    if have == block_size:
                        yield b"".join(parts)
                        parts, have = [], 0
        except age.ClipChanged as exc:
            raise ClipChangedError(f"clip changed on the camera during upload: {exc}") from None
        if parts:
            yield b"".join(parts)


async def ciphertext_stream(
    root: Path,
    rel_path: bytes,
    expected: FileIdentity,
    header: bytes,
    secrets: age.EncryptionSecrets,
    start: int,
    block_size: int,
) -> AsyncIterator[bytes]:
    """Async PATCH blocks from ciphertext offset `start`, encrypting one block ahead in a thread.

    One thread per stream, so a block is encrypted while the previous one is on the wire; memory is
    about two blocks. Closing the stream (normally, on error or on cancellation) closes the file in
    that same thread, after the block it may be working on.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dockd-encrypt")
    blocks = _blocks(root, rel_path, expected, header, secrets, start, block_size)
    loop = asyncio.get_running_loop()
    sentinel = object()
    try:
        upcoming = loop.run_in_executor(executor, next, blocks, sentinel)
        while True:
            block = await upcoming
            if block is sentinel:
                return
            upcoming = loop.run_in_executor(executor, next, blocks, sentinel)
            yield block  # type: ignore[misc]
    finally:
        # Runs after any block still being encrypted: the generator is never closed mid-step.
        executor.submit(blocks.close)
        executor.shutdown(wait=False)


def rehash(root: Path, rel_path: bytes, stop: threading.Event) -> tuple[FileIdentity, str]:
    """SHA-256 of the file as it is now, with the identity of what was read (for a re-docked camera)."""
    with open_clip(root, rel_path) as raw:
        st = os.fstat(raw.fileno())
        digest = hashlib.sha256()
        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        while count := raw.readinto(buffer):
            if stop.is_set():
                raise Stopped("stopped while re-hashing")
            digest.update(view[:count])
        after = os.fstat(raw.fileno())
    identity = FileIdentity.from_stat(st)
    if identity.differs_from(FileIdentity.from_stat(after)):
        raise ClipChangedError("clip changed on the camera while being re-hashed")
    return identity, digest.hexdigest()
