"""One request's bytes into an S3 multipart upload: spool, cut parts, stage the tail at commit.

S3 wants every part but the last to be >= 5 MiB, and a tus PATCH may be any size. So the writer
spools bytes to a local temporary file (not RAM: a thousand connections times a part size would
not be bounded) and uploads a part each time the spool reaches the part size. At `commit` the
bytes that do not fill a part go to a **tail object** in the work bucket; the next writer reads
the tail back into its spool. Every part and every tail carries Content-MD5, which RGW verifies.

What a commit makes durable, in order: the parts uploaded since the last commit (already in RGW
when UploadPart returned), the new tail (PutObject returned), then the state naming both
(`UploadStateBackend.save`). Only parts and tails named in the saved state count: a part uploaded
for a chunk that was then refused, or a tail replaced by a newer one, is an orphan that nothing
reads. Part n always holds bytes [(n-1)P, nP): a part of a refused chunk is overwritten by the
right bytes later (RGW 16.2 needs every uploaded part listed at completion; `s3_state` explains,
and why a late part cannot slip into a receipt).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import IO, Any, Protocol

import structlog

from dockd.receiver.storage.api import RunningHash, StoreError, StoreFull
from dockd.receiver.storage.s3_config import S3Settings
from dockd.receiver.storage.s3_errors import s3_call, s3_required
from dockd.receiver.storage.s3_hash import export_state
from dockd.receiver.storage.s3_state import PartRecord, S3UploadState, UploadStateBackend


class WriterHost(Protocol):
    """What a writer needs from the S3 store that made it (a Protocol, so this module does not
    import s3.py, which imports this one)."""

    client: Any
    settings: S3Settings
    states: UploadStateBackend
    spool_dir: str | None

    def part_size_of(self, state: S3UploadState) -> int: ...
    def delete_quietly(self, bucket: str, key: str) -> None: ...
    def read_tail_into(self, state: S3UploadState, spool: Spool) -> None: ...


log = structlog.get_logger("dockd.receiver.store")

_COPY_PIECE = 1 << 20
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def content_md5(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def tail_prefix(upload: str) -> str:
    return f"tail/{upload}/"


@contextlib.contextmanager
def _spool_errors() -> Iterator[None]:
    """The local spool's OS errors as the store's (as the file store does): a full spool
    directory is StoreFull (507, try later), anything else a StoreError naming the spool."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise StoreFull(f"the S3 store's spool directory is full: {exc.strerror}") from exc
        raise StoreError(f"the S3 store's spool: {exc}") from exc


class Spool:
    """Bytes not yet in a part, in a local temporary file, with their running MD5."""

    def __init__(self, directory: str | None) -> None:
        # Owned by the spool for the life of a writer: closed by `close`, not a with-block.
        with _spool_errors():
            self.file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)  # Content-MD5: transport check

    def append(self, data: bytes | memoryview) -> None:
        with _spool_errors():
            self.file.write(data)
        self._md5.update(data)
        self.size += len(data)

    def md5(self) -> str:
        return content_md5(self._md5.digest())

    def rewound(self) -> IO[bytes]:
        """The file at its start, for an upload body (botocore rewinds it itself to retry)."""
        with _spool_errors():  # buffered: a full disk may show only at the flush
            self.file.flush()
            self.file.seek(0)
        return self.file

    def clear(self) -> None:
        with _spool_errors():
            self.file.seek(0)
            self.file.truncate()
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)  # Content-MD5: transport check

    def close(self) -> None:
        self.file.close()


class S3ChunkWriter:
    """Appends one request's bytes at the committed offset of an unfinished upload."""

    def __init__(self, store: WriterHost, state: S3UploadState, fence: int | None) -> None:
        self._store = store
        self._state = state
        self._fence = fence
        self._upload = state.info.upload
        self._part_size = store.part_size_of(state)
        self._position = state.offset  # where the next write must start
        self._spool: Spool | None = None  # None until first needed (the tail is read then)
        self._pending: list[PartRecord] = []  # uploaded since the last commit; not yet counted
        self._dirty = False  # bytes written since the last commit

    # -- ChunkWriter --

    def write(self, data: bytes, position: int) -> None:
        if position != self._position:
            raise StoreError(
                f"{self._upload}: S3 writes append: got position {position}, "
                f"expected {self._position}"
            )
        spool = self._ensure_spool()
        view = memoryview(data)
        while view:
            room = self._part_size - spool.size
            piece, view = view[:room], view[room:]
            spool.append(piece)
            if spool.size >= self._part_size:
                self._upload_part(spool)
        self._position += len(data)
        self._dirty = True

    def commit(self, offset: int, expires: float, running_hash: RunningHash) -> None:
        if offset != self._position:
            raise StoreError(
                f"{self._upload}: commit at {offset}, but bytes were written up to {self._position}"
            )
        tail_key, tail_size = self._state.tail_key, self._state.tail_size
        if self._dirty:
            spool = self._ensure_spool()
            tail_key, tail_size = self._put_tail(spool), spool.size
        committed = replace(
            self._state,
            offset=offset,
            parts=self._state.parts + tuple(self._pending),
            tail_key=tail_key,
            tail_size=tail_size,
            hash_state=export_state(running_hash),
            expires=expires,
        )
        self._store.states.save(committed, fence=self._fence)  # the moment bytes count
        replaced = self._state.tail_key
        self._state, self._pending, self._dirty = committed, [], False
        if replaced is not None and replaced != tail_key:
            self._store.delete_quietly(self._store.settings.work_bucket, replaced)

    def discard(self) -> None:
        """Forget what was written since the last commit. Parts already uploaded for it stay in
        the multipart upload as orphans: completion lists only committed parts."""
        if self._pending:
            log.info(
                "s3.orphan_parts_left",
                upload=self._upload,
                parts=[part.number for part in self._pending],
            )
        self._pending, self._dirty = [], False
        self._position = self._state.offset
        self._close_spool()

    def close(self) -> None:
        self._close_spool()

    # -- parts and tails --

    def _ensure_spool(self) -> Spool:
        if self._spool is None:
            spool = Spool(self._store.spool_dir)
            try:
                if self._state.tail_key is not None:
                    self._store.read_tail_into(self._state, spool)
                if spool.size >= self._part_size:  # the part size shrank since the tail was put
                    self._upload_part(spool)
            except BaseException:
                spool.close()
                raise
            self._spool = spool
        return self._spool

    def _upload_part(self, spool: Spool) -> None:
        # Part n is bytes [(n-1)P, nP): an uncommitted part of an earlier, refused chunk under
        # this number held the same range and is overwritten (see s3_state).
        number = len(self._state.parts) + len(self._pending) + 1
        self._store.states.check_fence(self._upload, fence=self._fence)
        reply = s3_required(
            self._store.client.upload_part,
            Bucket=self._store.settings.bucket,
            Key=self._state.key,
            UploadId=self._state.multipart_id,
            PartNumber=number,
            Body=spool.rewound(),
            ContentLength=spool.size,
            ContentMD5=spool.md5(),
        )
        self._pending.append(PartRecord(number, str(reply["ETag"]), spool.size))
        spool.clear()

    def _put_tail(self, spool: Spool) -> str | None:
        if spool.size == 0:
            return None
        key = f"{tail_prefix(self._upload)}{uuid.uuid4().hex}"
        s3_required(
            self._store.client.put_object,
            Bucket=self._store.settings.work_bucket,
            Key=key,
            Body=spool.rewound(),
            ContentLength=spool.size,
            ContentMD5=spool.md5(),
        )
        spool.file.seek(0, 2)  # keep appending after the tail if this writer goes on
        return key

    def _close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def copy_stream(body: Any, sink: Spool, expected: int, what: str) -> None:
    """Stream an S3 object body into a spool, checking its length."""
    copied = 0
    while piece := s3_call(body.read, _COPY_PIECE):
        sink.append(piece)
        copied += len(piece)
    if copied != expected:
        raise StoreError(f"{what}: read {copied} bytes, expected {expected}")
