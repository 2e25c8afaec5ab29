"""Reading clips off the camera: the one pass, or the preparation pass and the ciphertext stream.

All run in worker threads (hashlib and ChaCha20-Poly1305 release the GIL on large buffers), so
the event loop keeps serving HTTP, udev and the control socket. Every byte read from a camera is
reported to the caller's `on_read` (the `dockd_camera_read_bytes` metric counts them all).

The one pass (`one_pass_stream`, for a server with tus concatenation): read each byte once,
hash it (plaintext SHA-256, the custody hash), encrypt it, hash the ciphertext and hand it to the
partial upload; the custody hash reaches the server afterwards, in the final upload's metadata.
A resume re-reads the prefix [0, offset) to rebuild both hashes (hashlib state cannot be saved)
but never re-sends it.

Two passes (servers without concatenation): the plaintext SHA-256 travels in the tus creation
metadata, so it must be known before the upload exists. The first pass also computes the exact
ciphertext and its SHA-256 (encryption is deterministic once a clip's header and file key are
fixed), so that

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
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dockd.crypto import age
from dockd.crypto.keys import AgeRecipient
from dockd.devices.camera import FileIdentity, open_clip

READ_SIZE = 1 << 20


def _ignore(_count: int) -> None:
    pass


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


class _CountingReader:
    """A camera file that reports how many bytes each read took from it (to `on_read`)."""

    def __init__(self, raw: BinaryIO, on_read: Callable[[int], None]) -> None:
        self._raw = raw
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._on_read(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._raw.readinto(buffer) or 0
        self._on_read(count)
        return count

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def fileno(self) -> int:
        return self._raw.fileno()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


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
    on_read: Callable[[int], None] = _ignore,
) -> Prepared:
    """Hash the plaintext, fix the clip's age header and key, and hash the exact ciphertext."""
    header, secrets = age.new_encryption(recipients)
    length = age.ciphertext_length(len(header), expected.size)
    with open_clip(root, rel_path) as raw:
        _check_identity(raw, expected, "since discovery")
        reader = _HashingReader(_CountingReader(raw, on_read), stop, progress)  # type: ignore[arg-type]
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
    on_read: Callable[[int], None] = _ignore,
) -> Generator[bytes, None, None]:
    """Ciphertext from `start` in blocks of exactly `block_size` (the last one shorter)."""
    with open_clip(root, rel_path) as raw:
        _check_identity(raw, expected, "since it was hashed")
        source = _CountingReader(raw, on_read)
        try:
            pieces = age.iter_ciphertext(header, secrets, source, expected.size, start=start)  # type: ignore[arg-type]
            yield from _in_blocks(pieces, block_size)
        except age.ClipChanged as exc:
            raise ClipChangedError(f"clip changed on the camera during upload: {exc}") from None


def _in_blocks(pieces: Iterator[bytes], block_size: int) -> Iterator[bytes]:
    """`pieces` regrouped in blocks of exactly `block_size` (the last one shorter)."""
    # Pieces (~1 MiB) are collected and joined once per block: one block-sized allocation,
    # where a growing bytearray plus slice copies held three (8 parallel uploads x 8 MiB).
    parts: list[bytes] = []
    have = 0
    for piece in pieces:
        while piece:
            take = min(len(piece), block_size - have)
            parts.append(piece if take == len(piece) else piece[:take])
            piece = piece[take:]
            have += take
            if have == block_size:
                yield b"".join(parts)
                parts, have = [], 0
    if parts:
        yield b"".join(parts)


@dataclass
class Digests:
    """What a one pass learned by its end: both SHA-256s of exactly the bytes read (None until a
    pass read the last byte)."""

    plaintext_sha256: str | None = None
    ciphertext_sha256: str | None = None


def _one_pass_blocks(
    root: Path,
    rel_path: bytes,
    expected: FileIdentity,
    header: bytes,
    secrets: age.EncryptionSecrets,
    start: int,
    block_size: int,
    digests: Digests,
    on_read: Callable[[int], None],
    stop: threading.Event,
) -> Generator[bytes, None, None]:
    """The clip's ciphertext from `start` in blocks, hashing both sides of every byte from 0.

    Bytes before `start` (the server holds them: a resume) are read, encrypted and hashed but not
    yielded. `digests` is filled, and the file's identity checked again, before the block that
    reaches the end is yielded: nothing completes on the server before the hashes exist.
    """
    total = age.ciphertext_length(len(header), expected.size)
    with open_clip(root, rel_path) as raw:
        _check_identity(raw, expected, "since discovery")
        reader = _HashingReader(_CountingReader(raw, on_read), stop, _ignore)  # type: ignore[arg-type]
        ciphertext = hashlib.sha256()

        def sent_part() -> Iterator[bytes]:
            position = 0
            for piece in age.iter_ciphertext(header, secrets, reader, expected.size):  # type: ignore[arg-type]
                ciphertext.update(piece)
                end = position + len(piece)
                if end > start:
                    yield piece[start - position :] if position < start else piece
                position = end

        sent = start
        try:
            for block in _in_blocks(sent_part(), block_size):
                sent += len(block)
                if sent == total:
                    _check_read_whole(raw, expected, reader.digest.hexdigest(), on_read, stop)
                    digests.plaintext_sha256 = reader.digest.hexdigest()
                    digests.ciphertext_sha256 = ciphertext.hexdigest()
                yield block
            if start == total:  # nothing left to send: the pass only rebuilt the hashes
                _check_read_whole(raw, expected, reader.digest.hexdigest(), on_read, stop)
                digests.plaintext_sha256 = reader.digest.hexdigest()
                digests.ciphertext_sha256 = ciphertext.hexdigest()
        except age.ClipChanged as exc:
            raise ClipChangedError(f"clip changed on the camera while being read: {exc}") from None


def _check_read_whole(
    raw: BinaryIO,
    expected: FileIdentity,
    digest: str,
    on_read: Callable[[int], None],
    stop: threading.Event,
) -> None:
    """At the end of the one pass: the file is still the version that was read, or
    ClipChangedError. A change of ctime alone (a chmod, another hard link made or removed, or a
    rewrite with mtime restored) is settled by content, as the wipe settles it: the file is read
    again and must hash the same (one more read, only then)."""
    found = FileIdentity.from_stat(os.fstat(raw.fileno()))
    changed = [c for c in expected.differs_from(found) if c not in ("dev", "ino")]
    if changed == ["ctime_ns"]:
        again = hashlib.sha256()
        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        position = 0
        while count := os.preadv(raw.fileno(), [buffer], position):
            if stop.is_set():
                raise Stopped("stopped while re-hashing")
            on_read(count)
            again.update(view[:count])
            position += count
        same_file = FileIdentity.from_stat(os.fstat(raw.fileno())) == found
        if again.hexdigest() == digest and position == expected.size and same_file:
            return
    _check_identity(raw, expected, "while being read")


def plaintext_before(header_length: int, offset: int, size: int) -> int:
    """Plaintext bytes behind ciphertext [0, offset): what a resume at `offset` re-reads."""
    payload = offset - header_length - age.PAYLOAD_NONCE_SIZE
    if payload <= 0:
        return 0
    chunks, within = divmod(payload, age.ENCRYPTED_CHUNK_SIZE)
    return min(chunks * age.CHUNK_SIZE + min(within, age.CHUNK_SIZE), size)


def one_pass_stream(
    root: Path,
    rel_path: bytes,
    expected: FileIdentity,
    header: bytes,
    secrets: age.EncryptionSecrets,
    start: int,
    block_size: int,
    digests: Digests,
    on_read: Callable[[int], None],
    stop: threading.Event,
) -> AsyncIterator[bytes]:
    """Async blocks of the one pass from ciphertext offset `start` (see `_one_pass_blocks`),
    encrypting one block ahead in a thread."""
    return _threaded(
        _one_pass_blocks(
            root, rel_path, expected, header, secrets, start, block_size, digests, on_read, stop
        )
    )


def rebuild_digests(
    root: Path,
    rel_path: bytes,
    expected: FileIdentity,
    header: bytes,
    secrets: age.EncryptionSecrets,
    digests: Digests,
    on_read: Callable[[int], None],
    stop: threading.Event,
) -> None:
    """The one pass when the server already holds every byte (the process died after the last
    PATCH was acknowledged, before the hashes were journaled): read and hash, send nothing."""
    total = age.ciphertext_length(len(header), expected.size)
    for _ in _one_pass_blocks(
        root, rel_path, expected, header, secrets, total, 1 << 20, digests, on_read, stop
    ):
        raise RuntimeError("a pass from the end yielded bytes")


def ciphertext_stream(
    root: Path,
    rel_path: bytes,
    expected: FileIdentity,
    header: bytes,
    secrets: age.EncryptionSecrets,
    start: int,
    block_size: int,
    on_read: Callable[[int], None] = _ignore,
) -> AsyncIterator[bytes]:
    """Async PATCH blocks from ciphertext offset `start`, encrypting one block ahead in a thread."""
    return _threaded(_blocks(root, rel_path, expected, header, secrets, start, block_size, on_read))


async def _threaded(blocks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """`blocks`, produced one block ahead in a thread of their own.

    One thread per stream, so a block is encrypted while the previous one is on the wire; memory is
    about two blocks. Closing the stream (normally, on error or on cancellation) closes the file in
    that same thread, after the block it may be working on.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dockd-encrypt")
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


def rehash(
    root: Path, rel_path: bytes, stop: threading.Event, on_read: Callable[[int], None] = _ignore
) -> tuple[FileIdentity, str]:
    """SHA-256 of the file as it is now, with the identity of what was read (for a re-docked camera)."""
    with open_clip(root, rel_path) as raw:
        st = os.fstat(raw.fileno())
        digest = hashlib.sha256()
        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        while count := raw.readinto(buffer):
            on_read(count)
            if stop.is_set():
                raise Stopped("stopped while re-hashing")
            digest.update(view[:count])
        after = os.fstat(raw.fileno())
    identity = FileIdentity.from_stat(st)
    if identity.differs_from(FileIdentity.from_stat(after)):
        raise ClipChangedError("clip changed on the camera while being re-hashed")
    return identity, digest.hexdigest()
