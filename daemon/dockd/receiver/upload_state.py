"""One unfinished upload as the running server knows it: its committed state, and what
coordinates the requests on it (lock, generation, the body being read)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from dockd.receiver.body import Cutoff
from dockd.receiver.protocol import ProtocolError
from dockd.receiver.refusals import storage_refusal
from dockd.receiver.storage.api import (
    CompletedUpload,
    CreationInfo,
    RunningHash,
    StoreError,
    UploadStore,
)

log = structlog.get_logger("dockd.receiver")

# How long a body still being read may stay silent once a newer request for its upload waits.
SUPERSEDE_GRACE = 1.0


@dataclass(eq=False)
class Upload:
    """An unfinished upload: committed state plus what coordinates requests on it."""

    info: CreationInfo
    offset: int  # committed: durable and acknowledged (or acknowledgeable)
    expires: float  # unix time after which the upload is gone (410)
    hasher: RunningHash | None = None  # sha256 of [0, offset); None until rebuilt after a restart
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cutoff: Cutoff | None = None  # the body being read, if any
    generation: int = 0  # bumped by each PATCH/DELETE; the newest one wins
    completed: CompletedUpload | None = None  # set once finished (for requests that waited)
    gone: str | None = None  # "expired" or "terminated" (for requests that waited)
    rebuild: asyncio.Task[Any] | None = None

    @property
    def id(self) -> str:
        return self.info.upload

    @property
    def length(self) -> int:
        return self.info.length

    def supersede(self, *, at_once: bool = False) -> int:
        """Register a newer request that will change this upload.

        The body being read, if any, gets SUPERSEDE_GRACE seconds of silence at most (or is cut
        off `at_once`, for a DELETE): see `Cutoff.supersede`.
        """
        self.generation += 1
        if self.cutoff is not None:
            if at_once:
                self.cutoff.cut("superseded")
            else:
                self.cutoff.supersede(SUPERSEDE_GRACE)
        return self.generation

    # -- the running SHA-256 of [0, offset) --

    def start_hash_rebuild(self, store: UploadStore) -> None:
        """After a restart, start getting the running hash back from the store (restored, or
        rebuilt from the committed prefix); a no-op when the hash is already there."""
        if self.hasher is not None or self.rebuild is not None:
            return
        if self.offset == 0:
            self.hasher = store.new_hash()
            return
        task = asyncio.ensure_future(asyncio.to_thread(store.running_hash, self.id, self.offset))
        self.rebuild = task

        def done(finished: asyncio.Task[Any]) -> None:
            self.rebuild = None
            if finished.cancelled():
                return
            if finished.exception() is not None:
                log.error(
                    "upload.hash_rebuild_failed", upload=self.id, error=str(finished.exception())
                )
            elif self.hasher is None:
                self.hasher = finished.result()

        task.add_done_callback(done)
        log.info("upload.hash_rebuild", upload=self.id, offset=self.offset)

    async def running_hash(self, store: UploadStore) -> RunningHash:
        self.start_hash_rebuild(store)
        if self.hasher is None:
            assert self.rebuild is not None
            self.hasher = await asyncio.shield(self.rebuild)
        return self.hasher


@dataclass(frozen=True)
class ChunkResult:
    """The upload after a chunk was applied."""

    offset: int
    expires: float
    completed: CompletedUpload | None


def refusal_at(exc: StoreError, upload: Upload, offset: int) -> ProtocolError:
    """The refusal for a store error on `upload`, telling the client its committed offset."""
    return storage_refusal(exc, upload=upload.id, headers={"Upload-Offset": str(offset)})
