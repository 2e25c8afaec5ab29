"""Storing one PATCH body into an upload: stream it through the store's `ChunkWriter` while
hashing, refuse what fails its length or checksum, and commit what counts.

The caller (`UploadCoordinator.apply_chunk`) holds the upload's lock and has checked the offset;
this module decides which bytes count, and makes them durable before anyone may acknowledge them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import StreamReader

from dockd.receiver.body import BodyWriter, Cutoff, Received, receive_body
from dockd.receiver.protocol import Checksum, ProtocolError
from dockd.receiver.storage.api import (
    ChunkWriter,
    CreationInfo,
    RunningHash,
    StoreError,
    UploadStore,
)
from dockd.receiver.threads import run_blocking
from dockd.receiver.upload_state import SUPERSEDE_GRACE, Upload, refusal_at

log = structlog.get_logger("dockd.receiver")

# Status for a body that ended early, by reason. The client is usually gone; the connection is
# closed either way, as the spec asks for a timeout.
INTERRUPTED_STATUS = {"idle": 408, "superseded": 409, "shutdown": 503, "disconnected": 400}


class ChunkStorer:
    """Writes, verifies and commits chunks through one store."""

    def __init__(
        self,
        store: UploadStore,
        *,
        idle_timeout: float,
        expiry_of: Callable[[CreationInfo], float],
        stopping: Callable[[], bool],
    ) -> None:
        self._store = store
        self._idle_timeout = idle_timeout
        self._expiry_of = expiry_of  # the coordinator's: expire_after, within the store's limit
        self._stopping = stopping

    async def store(
        self,
        upload: Upload,
        generation: int,
        content: StreamReader,
        *,
        checksum: Checksum | None,
        limit: int,
        whole: RunningHash,
        fence: int | None = None,
    ) -> Received:
        """Receive the body at the upload's committed offset; commit what counts (the upload's
        offset, hash and expiry move only then). Raises ProtocolError for a refused chunk.

        `fence`: the shared lock's token in multi-node mode; every part and the commit check it,
        so a node whose lease was taken over stores nothing that counts (`Fenced`: 409)."""
        chunk_hasher = checksum.new_hasher() if checksum is not None else None
        hashers = [whole] if chunk_hasher is None else [whole, chunk_hasher]
        try:
            writer = await run_blocking(
                functools.partial(self._store.open_writer, upload.id, upload.offset, fence=fence)
            )
        except StoreError as exc:
            raise refusal_at(exc, upload, upload.offset) from None
        try:
            received = await self._receive(upload, generation, writer, content, hashers, limit)
            await self._refuse_bad_chunk(upload, writer, received, checksum, chunk_hasher)
            if received.count or not received.interrupted:
                await self._commit(upload, writer, upload.offset + received.count, whole)
        finally:
            writer.close()
        return received

    async def _receive(
        self,
        upload: Upload,
        generation: int,
        writer: ChunkWriter,
        content: StreamReader,
        hashers: list[Any],
        limit: int,
    ) -> Received:
        cutoff = Cutoff(self._idle_timeout)
        upload.cutoff = cutoff
        # A newer request or a shutdown may have come while this one waited for the hash
        # rebuild, before it had a cutoff to trigger: honour it now.
        if generation != upload.generation:
            cutoff.supersede(SUPERSEDE_GRACE)
        elif self._stopping():
            cutoff.cut("shutdown")
        try:
            return await receive_body(
                content, cutoff, BodyWriter(writer, upload.offset, hashers), limit=limit
            )
        except StoreError as exc:
            await self._discard(upload, writer)
            raise refusal_at(exc, upload, upload.offset) from None
        finally:
            upload.cutoff = None

    async def _refuse_bad_chunk(
        self,
        upload: Upload,
        writer: ChunkWriter,
        received: Received,
        checksum: Checksum | None,
        chunk_hasher: Any,
    ) -> None:
        """Discard the chunk and raise if it went past the length or fails its checksum.

        A checksummed body that ended early cannot be verified, so none of it counts; a body
        without a checksum keeps what arrived (the spec asks to store as much as possible).
        """
        headers = {"Upload-Offset": str(upload.offset)}
        if received.too_long:
            await self._discard(upload, writer)
            raise ProtocolError(413, "chunk goes past Upload-Length", headers)
        if checksum is None:
            return
        if received.interrupted:
            await self._discard(upload, writer)
            log.info(
                "upload.unverifiable_chunk_discarded", upload=upload.id, reason=received.interrupted
            )
            raise ProtocolError(
                INTERRUPTED_STATUS[received.interrupted],
                f"body ended early ({received.interrupted}); a checksummed chunk must arrive whole",
                headers,
                close_connection=True,
            )
        if chunk_hasher.digest() != checksum.digest:
            await self._discard(upload, writer)
            log.warning(
                "upload.checksum_mismatch",
                upload=upload.id,
                offset=upload.offset,
                algorithm=checksum.algorithm,
                received=received.count,
            )
            raise ProtocolError(
                460, f"{checksum.algorithm} checksum mismatch: chunk discarded", headers
            )

    async def _discard(self, upload: Upload, writer: ChunkWriter) -> None:
        try:
            await run_blocking(writer.discard)
        except StoreError as exc:  # recovery truncates on the next start; completion trims too
            log.error("upload.truncate_failed", upload=upload.id, error=str(exc))

    async def _commit(
        self, upload: Upload, writer: ChunkWriter, new_offset: int, whole: RunningHash
    ) -> None:
        expires = self._expiry_of(upload.info)
        try:
            await run_blocking(writer.commit, new_offset, expires, whole)
        except StoreError as exc:
            await self._discard(upload, writer)
            raise refusal_at(exc, upload, upload.offset) from None
        upload.offset, upload.hasher, upload.expires = new_offset, whole, expires
