"""Uploads as the running server knows them, and every change to one: create, apply a chunk,
complete (sign the receipt), terminate, expire.

Unfinished uploads live in memory with their *committed* offset, which changes only after the
store has made it durable: a HEAD reads it without waiting, so it never reports bytes that a crash
could still take back. Every change to one upload happens under that upload's lock, so bytes of
two requests never interleave. A newer PATCH or DELETE cuts off the body a request is still
reading (a client resuming after a network drop is not locked out by its own dead connection),
and requests that queued behind it give way to the newest one.

Finished uploads are not kept in memory: their sidecar in the store answers for them. Every
storage operation goes through the `UploadStore` interface (storage/api.py), on a worker thread.

Multi-node mode (a store that is a `SharedStore`: several `dockd serve` behind a load balancer,
docs/SCALE.md). Other nodes change the same uploads, so the memory above is only a cache of what
this node last saw: `find` reads the committed state afresh, and every change takes, inside the
local lock, the upload's shared lock (`Locker.acquire`, a lease with a fencing token), reloads the
state under it, and hands the token to the store with every write (`fence=`). A node whose lease
ran out while it stalled is refused by the store (`Fenced`, 409): its late write never counts. A
request waiting for the lock asks the holder (on any node) to let go, which cuts the holder's
body off after a short silence, as a newer local request does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import structlog
from aiohttp import StreamReader
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockd.crypto import receipt
from dockd.receiver.chunks import INTERRUPTED_STATUS, ChunkStorer
from dockd.receiver.protocol import Checksum, ProtocolError
from dockd.receiver.quota import Quotas, Reservation, check_creation
from dockd.receiver.refusals import storage_refusal
from dockd.receiver.shared.capability import PartsReplaced, SharedStore
from dockd.receiver.storage.api import (
    CompletedUpload,
    Concater,
    CreationInfo,
    Fenced,
    NotFound,
    PartialState,
    RunningHash,
    StoreError,
    StoreUnavailable,
    Tombstone,
    UploadLock,
    UploadStore,
    concatenated_into,
    rfc3339,
    same_bytes,
)
from dockd.receiver.threads import run_blocking, wait_through_cancellation
from dockd.receiver.upload_state import SUPERSEDE_GRACE, ChunkResult, Upload, refusal_at

log = structlog.get_logger("dockd.receiver")

# The shared lock that lets one node at a time sweep expired uploads (not an upload id, so it
# can never be an upload's lease).
SWEEPER_LOCK = "dockd-sweeper"
# Requests of one node that may wait for a shared lock at once; more queue for a thread.
LOCK_WAITERS = 64


def _short(value: str | None) -> str | None:
    """A client-supplied identifier (camera serial) cut to a length fit for a log line."""
    return value[:64] if value is not None else None


def _now_rfc3339() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


class UploadCoordinator:
    """All unfinished uploads, and the operations that change an upload."""

    def __init__(
        self,
        store: UploadStore,
        signing_key: Ed25519PrivateKey,
        *,
        expire_after: float,
        idle_timeout: float,
        quotas: Quotas = Quotas(),  # noqa: B008 - frozen dataclass, safe to share
    ) -> None:
        self.store = store
        self._quotas = quotas
        self._signing_key = signing_key
        self._expire_after = expire_after
        self._uploads: dict[str, Upload] = {}
        # Several nodes over one store: None in the single-node default.
        self._shared: SharedStore | None = store if isinstance(store, SharedStore) else None
        self._creating: set[str] = set()  # multi-node: created here, maybe not in the state yet
        # Multi-node: threads that only wait for shared locks (mostly asleep between polls).
        self._lock_waiters = ThreadPoolExecutor(LOCK_WAITERS, thread_name_prefix="lock-wait")
        self.stopping = False
        self._chunks = ChunkStorer(
            store,
            idle_timeout=idle_timeout,
            expiry_of=self.expiry_of,
            stopping=lambda: self.stopping,
        )

    def expiry_of(self, info: CreationInfo) -> float:
        """When the upload expires if nothing more is committed: `expire_after` from now, but
        never past the store's deadline for it (the S3 store's lifecycle rule aborts unfinished
        multipart uploads a fixed time after creation, however active)."""
        expires = time.time() + self._expire_after
        deadline = self.store.unfinished_deadline(info)
        return expires if deadline is None else min(expires, deadline)

    # -- lookup --

    def load(self, partials: Iterable[PartialState]) -> list[Upload]:
        loaded = [Upload(p.info, p.offset, p.expires) for p in partials]
        for upload in loaded:
            self._uploads[upload.id] = upload
        return loaded

    def unfinished(self) -> list[Upload]:
        return list(self._uploads.values())

    def busy(self, upload_id: str) -> bool:
        """True while a request is changing this upload (tests wait on it instead of sleeping)."""
        upload = self._uploads.get(upload_id)
        return upload is not None and upload.lock.locked()

    async def find(self, upload_id: str) -> Upload | CompletedUpload | Tombstone | None:
        """The upload with this (validated) id in whatever state it is, or None if unknown."""
        if self._shared is not None:
            return await self._find_shared(self._shared, upload_id)
        upload = self._uploads.get(upload_id)
        if upload is not None:
            if self._is_expired(upload, time.time()):
                await self.expire(upload)
                return Tombstone(upload.id, "expired", time.time(), upload.info.dock)
            return upload
        completed = await asyncio.to_thread(self.store.load_completed, upload_id)
        if completed is not None:
            return completed
        return await asyncio.to_thread(self.store.load_tombstone, upload_id)

    async def _find_shared(
        self, shared: SharedStore, upload_id: str
    ) -> Upload | CompletedUpload | Tombstone | None:
        """Multi-node `find`: the state as committed now, whichever node committed it. Expiry
        is left to the sweeper and to the next change, both under the shared lock."""
        partial = await run_blocking(shared.partial, upload_id)
        if partial is not None:
            return self._adopt(partial)
        stale = self._uploads.get(upload_id)
        if stale is not None and not stale.lock.locked():
            self._uploads.pop(upload_id, None)  # finished or removed on another node
        completed = await asyncio.to_thread(self.store.load_completed, upload_id)
        if completed is not None:
            return completed
        return await asyncio.to_thread(self.store.load_tombstone, upload_id)

    def _adopt(self, partial: PartialState) -> Upload:
        """This node's `Upload` for a state read from the shared store, brought up to date
        unless a request here is changing it (that request reloads under the lock itself)."""
        upload = self._uploads.get(partial.info.upload)
        if upload is None:
            upload = Upload(partial.info, partial.offset, partial.expires)
            self._uploads[upload.id] = upload
        elif not upload.lock.locked():
            self._move_to(upload, partial)
        return upload

    @staticmethod
    def _move_to(upload: Upload, partial: PartialState) -> None:
        if partial.offset != upload.offset:
            # Committed bytes never change, so the hash stays valid while the offset does.
            upload.offset, upload.hasher = partial.offset, None
        upload.expires = partial.expires

    @staticmethod
    def _is_expired(upload: Upload, now: float) -> bool:
        """Idle past its expiry, and not merely waiting for its receipt: an upload whose bytes
        all arrived never expires (completion is retried instead), except a partial upload,
        which is never completed on its own and expires if no final upload takes it."""
        waiting = upload.offset < upload.length or upload.info.partial
        return upload.expires <= now and not upload.lock.locked() and waiting

    def cut_all(self, reason: str) -> None:
        """Cut off every body being read (server shutdown): what arrived is kept or discarded
        exactly as for a client that went away."""
        for upload in self._uploads.values():
            if upload.cutoff is not None:
                upload.cutoff.cut(reason)

    # -- the running SHA-256 of the whole upload --

    def start_hash_rebuild(self, upload: Upload) -> None:
        # Multi-node: the state is restored under the lock, where the offset is known to hold
        # (a rebuild started here could finish for an offset another node has moved past).
        if self._shared is None:
            upload.start_hash_rebuild(self.store)

    async def running_hash(self, upload: Upload, fence: int | None = None) -> RunningHash:
        """The SHA-256 of the committed bytes; in multi-node mode the caller holds the shared
        lock whose `fence` this is (a stalled holder's stale offset is then `Fenced`)."""
        if self._shared is None:
            return await upload.running_hash(self.store)
        if upload.hasher is None:
            restore = functools.partial(
                self._shared.running_hash, upload.id, upload.offset, fence=fence
            )
            upload.hasher = await run_blocking(restore)
        return upload.hasher

    # -- the shared lock (multi-node mode) --

    @contextlib.asynccontextmanager
    async def _shared_lock(
        self, upload: Upload, *, wait: float | None = None
    ) -> AsyncIterator[int | None]:
        """Hold the upload's lock across nodes and yield its fence (None in single-node mode).

        Caller holds the local lock. Raises StoreError (StoreUnavailable when the lock stays
        busy for `wait` seconds or PostgreSQL is away). The state is reloaded under the lock:
        `upload` then shows what is committed now, or is marked completed / gone.
        """
        shared = self._shared
        if shared is None:
            yield None
            return
        loop = asyncio.get_running_loop()

        def release_requested() -> None:  # from the locker's threads
            loop.call_soon_threadsafe(_let_go, upload)

        lock = await self._acquire(
            functools.partial(
                shared.acquire,
                upload.id,
                timeout=shared.lock_timeout if wait is None else wait,
                release_requested=release_requested,
            )
        )
        try:
            await self._reload(shared, upload)
            yield lock.fence
        finally:
            await run_blocking(lock.release)

    async def _acquire(self, acquire: Callable[[], UploadLock]) -> UploadLock:
        """Wait for a shared lock on the lock waiters' own threads: a lock held by a dead node
        is waited for up to a lease, and waiters on the store's threads (the default executor,
        a handful on a small machine) would stall every other request of this node meanwhile.
        A cancellation meanwhile still waits for the outcome, and lets go of a lock it got."""
        future = asyncio.get_running_loop().run_in_executor(self._lock_waiters, acquire)
        try:
            return await wait_through_cancellation(future)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                await run_blocking(future.result().release)
            raise

    async def _reload(self, shared: SharedStore, upload: Upload) -> None:
        partial = await run_blocking(shared.partial, upload.id)
        if partial is not None:
            self._move_to(upload, partial)
            return
        self._uploads.pop(upload.id, None)
        upload.completed = await run_blocking(self.store.load_completed, upload.id)
        if upload.completed is None:
            tombstone = await run_blocking(self.store.load_tombstone, upload.id)
            upload.gone = "expired" if tombstone is not None else "terminated"

    # -- changes --

    async def create(self, info: CreationInfo) -> Upload:
        """Durably create an upload within the quotas; a zero-length one completes at once."""
        # Asked before the check: from the check to the registration below nothing may await,
        # or creations racing this one would not see each other's reservations.
        free = await run_blocking(self.store.free_bytes)
        reserved = await self._reservations(info.dock)
        expires = self.expiry_of(info)
        check_creation(
            self._quotas, dock=info.dock, length=info.length, unfinished=reserved, free=free
        )
        upload = Upload(info, 0, expires, hasher=self.store.new_hash())
        # Registered before the first await, so creations racing this one count it.
        self._uploads[upload.id] = upload
        self._creating.add(upload.id)
        try:
            await run_blocking(self.store.create, info, expires)
        except StoreError as exc:
            self._uploads.pop(upload.id, None)
            raise refusal_at(exc, upload, 0) from None
        finally:
            self._creating.discard(upload.id)
        log.info(
            "upload.created",
            upload=upload.id,
            length=info.length,
            dock=info.dock,
            camera=_short(info.metadata.get("camera")),
            metadata_keys=sorted(info.metadata),
        )
        if info.length == 0 and not info.partial:
            async with upload.lock, self._shared_lock(upload) as fence:
                await self._complete(upload, fence)
        return upload

    async def _reservations(self, dock: str | None) -> list[Reservation]:
        """What the quotas count: this node's unfinished uploads, or in multi-node mode the
        dock's uploads in the shared state (every node's) plus creations still in progress here.
        Two nodes creating for one dock at the same instant may each miss the other's: a dock
        can pass its count by at most the number of nodes minus one."""
        if self._shared is None:
            return [Reservation(u.info.dock, u.length, u.offset) for u in self._uploads.values()]
        try:
            theirs = await run_blocking(self._shared.unfinished_of, dock)
        except StoreError as exc:
            raise storage_refusal(exc, what="the upload was not created") from None
        known = {p.info.upload for p in theirs}
        pending = [
            self._uploads[upload_id]
            for upload_id in self._creating
            if upload_id in self._uploads and upload_id not in known
        ]
        return [Reservation(p.info.dock, p.info.length, p.offset) for p in theirs] + [
            Reservation(u.info.dock, u.length, u.offset) for u in pending
        ]

    async def apply_chunk(
        self,
        upload: Upload,
        content: StreamReader,
        *,
        offset: int,
        checksum: Checksum | None,
        content_length: int | None,
    ) -> ChunkResult:
        """Apply one PATCH body at `offset`; raise ProtocolError for every refusal.

        Acknowledgeable only once this returns: the bytes are synced and the offset committed.
        """
        generation = upload.supersede()
        async with upload.lock:
            self._check_still_current(upload, generation)
            if upload.completed is not None:
                return self.chunk_on_completed(upload.completed, offset, content_length)
            try:
                async with self._shared_lock(upload) as fence:
                    if fence is not None:
                        await self._check_after_reload(upload, generation, fence)
                        if upload.completed is not None:
                            return self.chunk_on_completed(upload.completed, offset, content_length)
                    return await self._apply_locked(
                        upload,
                        generation,
                        content,
                        offset=offset,
                        checksum=checksum,
                        content_length=content_length,
                        fence=fence,
                    )
            except StoreError as exc:  # multi-node: the shared lock, the reload, the hash
                if self._shared is None:
                    raise  # as ever: the middleware's refusal
                raise refusal_at(exc, upload, upload.offset) from None

    async def _check_after_reload(self, upload: Upload, generation: int, fence: int) -> None:
        """Multi-node, under both locks: the upload may have expired or moved on elsewhere."""
        self._check_still_current(upload, generation)
        if upload.completed is None and self._past_expiry(upload, time.time()):
            await self._expire_locked(upload, fence)
            self._check_still_current(upload, generation)  # 410

    async def _apply_locked(
        self,
        upload: Upload,
        generation: int,
        content: StreamReader,
        *,
        offset: int,
        checksum: Checksum | None,
        content_length: int | None,
        fence: int | None,
    ) -> ChunkResult:
        """The chunk under the lock(s): check the offset, store, commit, complete at the end."""
        if offset != upload.offset:
            raise ProtocolError(
                409,
                f"Upload-Offset {offset} does not match the upload's offset",
                {"Upload-Offset": str(upload.offset)},
            )
        remaining = upload.length - offset
        if content_length is not None and content_length > remaining:
            raise ProtocolError(
                413, "chunk goes past Upload-Length", {"Upload-Offset": str(upload.offset)}
            )
        whole = (await self.running_hash(upload, fence)).copy()
        received = await self._chunks.store(
            upload,
            generation,
            content,
            checksum=checksum,
            limit=remaining,
            whole=whole,
            fence=fence,
        )
        if received.interrupted:
            log.info(
                "upload.body_interrupted",
                upload=upload.id,
                reason=received.interrupted,
                kept=received.count,
            )
            raise ProtocolError(
                INTERRUPTED_STATUS[received.interrupted],
                f"body ended early ({received.interrupted}); kept what arrived",
                {"Upload-Offset": str(upload.offset)},
                close_connection=True,
            )
        if upload.offset == upload.length and not upload.info.partial:
            await self._complete_or_report(upload, fence)
        return ChunkResult(upload.offset, upload.expires, upload.completed)

    def _check_still_current(self, upload: Upload, generation: int) -> None:
        if upload.gone == "expired":
            raise ProtocolError(410, "upload expired")
        if upload.gone is not None:
            raise ProtocolError(404, "no such upload")
        if self.stopping:
            raise ProtocolError(
                503, "server is shutting down", {"Upload-Offset": str(upload.offset)}
            )
        if generation != upload.generation:
            raise ProtocolError(
                409,
                "superseded by a newer request for this upload",
                {"Upload-Offset": str(upload.offset)},
            )

    @staticmethod
    def chunk_on_completed(
        record: CompletedUpload, offset: int, content_length: int | None
    ) -> ChunkResult:
        """A PATCH to a finished upload: only an empty one at its end succeeds (idempotent)."""
        if offset != record.length:
            raise ProtocolError(409, "upload is complete", {"Upload-Offset": str(record.length)})
        if content_length != 0:
            raise ProtocolError(413, "upload is complete", {"Upload-Offset": str(record.length)})
        return ChunkResult(record.length, 0.0, record)

    async def _complete_or_report(self, upload: Upload, fence: int | None) -> None:
        try:
            await self._complete(upload, fence)
        except PartsReplaced:
            await self._end_spoiled(upload, fence)
            raise ProtocolError(
                410, "upload cannot be completed (a stored part was replaced): send it again"
            ) from None
        except StoreError as exc:
            error = refusal_at(exc, upload, upload.offset)
            raise ProtocolError(
                error.status,
                "all bytes stored, but the receipt could not be written yet; HEAD retries",
                error.headers,
            ) from None

    async def _complete(self, upload: Upload, fence: int | None) -> None:
        """Sign the receipt and complete the upload in the store. Caller holds the lock (and in
        multi-node mode the shared one, whose `fence` the store checks)."""
        digest = (await self.running_hash(upload, fence)).hexdigest()
        info = upload.info
        record = self._sign(info, upload.length, digest)
        await run_blocking(functools.partial(self.store.complete, record, fence=fence))
        record = await self._as_stored(record)
        upload.completed = record
        self._uploads.pop(upload.id, None)
        log.info(
            "upload.completed",
            upload=upload.id,
            length=upload.length,
            sha256=digest,
            dock=info.dock,
        )

    async def _as_stored(self, record: CompletedUpload) -> CompletedUpload:
        """The completed record the store holds for `record`'s upload: the receipt handed out
        is always the stored one. An earlier attempt's record (signed in another second) wins
        when a retried completion found it stored already (its clean-up had failed)."""
        stored = await run_blocking(self.store.load_completed, record.upload)
        if stored is None or not same_bytes(stored, record):
            raise StoreError(f"{record.upload}: completed, but the store holds no record of it")
        return stored

    def _sign(self, info: CreationInfo, length: int, digest: str) -> CompletedUpload:
        """The completed record of `info` holding `length` bytes of SHA-256 `digest`, with the
        server's signed receipt over exactly those."""
        completed_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        header = receipt.sign(
            self._signing_key,
            upload=info.upload,
            length=length,
            sha256=digest,
            completed=completed_at,
        )
        return CompletedUpload(
            upload=info.upload,
            length=length,
            sha256=digest,
            receipt=header,
            completed=rfc3339(completed_at),
            metadata=info.metadata,
            metadata_header=info.metadata_header,
            created=info.created,
            dock=info.dock,
            concat=info.concat,
        )

    async def _end_spoiled(self, upload: Upload, fence: int | None) -> None:
        """An upload whose stored parts are not the committed ones (`PartsReplaced`): no receipt
        can ever be given for it, so it ends as an expired one does (tombstone, 410) and the dock
        uploads the clip again. Caller holds the lock(s)."""
        log.error("upload.parts_replaced", upload=upload.id, length=upload.length)
        await self._expire_locked(upload, fence)

    async def finish_pending_completion(self, upload: Upload) -> CompletedUpload | None:
        """Complete an upload whose bytes are all committed but whose completion failed or was
        interrupted before the receipt was written (HEAD and startup call this)."""
        if upload.completed is not None or upload.offset != upload.length or upload.info.partial:
            return upload.completed
        async with upload.lock:
            if upload.completed is None and upload.gone is None:
                try:
                    async with self._shared_lock(upload) as fence:
                        if (
                            upload.completed is None
                            and upload.gone is None
                            and upload.offset == upload.length
                        ):
                            await self._complete(upload, fence)
                except PartsReplaced:
                    await self._end_spoiled(upload, fence)
                except StoreError as exc:
                    log.error("upload.completion_failed", upload=upload.id, error=str(exc))
        return upload.completed

    async def concatenate(self, info: CreationInfo, partial_ids: Sequence[str]) -> CompletedUpload:
        """Make the final upload `info` of finished partials (tus concatenation), signed at once.

        Every partial must be an unfinished partial upload of the same dock with all its bytes
        committed; the final's SHA-256 is the partial's running hash when there is one partial
        (no byte is read again), else the partials are re-read in order and hashed as one
        stream (SHA-256 states do not combine). Raises ProtocolError for every refusal.
        """
        store = self.store
        if not isinstance(store, Concater):
            raise ProtocolError(400, "concatenation is not supported by this store")
        made = await self._made_before(info, partial_ids)
        if made is not None:
            log.info("upload.concatenation_repeated", upload=made.upload, dock=info.dock)
            return made
        partials = [self._partial_for_final(p, info.dock) for p in partial_ids]
        if len(set(partial_ids)) != len(partial_ids):
            raise ProtocolError(400, "Upload-Concat names a partial upload twice")
        async with contextlib.AsyncExitStack() as held:
            for upload in sorted(partials, key=lambda u: u.id):  # one order: no deadlock
                upload.supersede()
                await held.enter_async_context(upload.lock)
            for upload in partials:  # checked again under the locks
                self._partial_for_final(upload.id, info.dock)
            length = sum(u.length for u in partials)
            if len(partials) == 1:
                digest = (await self.running_hash(partials[0])).hexdigest()
            else:
                digest = await run_blocking(_hash_partials, store, partials)
            record = self._sign(info, length, digest)
            try:
                await run_blocking(store.concatenate, record, [u.id for u in partials])
            except StoreError as exc:
                raise storage_refusal(exc, upload=info.upload) from None
            for upload in partials:
                upload.gone = "concatenated"
                self._uploads.pop(upload.id, None)
        log.info(
            "upload.concatenated",
            upload=info.upload,
            partials=[u.id for u in partials],
            length=length,
            sha256=digest,
            dock=info.dock,
            camera=_short(info.metadata.get("camera")),
            metadata_keys=sorted(info.metadata),
        )
        return record

    async def _made_before(
        self, info: CreationInfo, partial_ids: Sequence[str]
    ) -> CompletedUpload | None:
        """The final upload these partials already went into, if this is the same request again
        (same dock, same `Upload-Concat` and metadata): its answer was lost, and a second final
        of the same bytes would only be a duplicate."""
        if not partial_ids or any(p in self._uploads for p in partial_ids):
            return None
        finals = set()
        for partial in partial_ids:
            tombstone = await run_blocking(self.store.load_tombstone, partial)
            if tombstone is None or tombstone.dock != info.dock:
                return None
            finals.add(concatenated_into(tombstone))
        final = finals.pop() if len(finals) == 1 else None
        if final is None:
            return None
        record = await run_blocking(self.store.load_completed, final)
        same = record is not None and (record.concat, record.metadata_header, record.dock) == (
            info.concat,
            info.metadata_header,
            info.dock,
        )
        return record if same else None

    def _partial_for_final(self, upload_id: str, dock: str | None) -> Upload:
        upload = self._uploads.get(upload_id)
        if upload is None or upload.gone is not None or upload.info.dock != dock:
            raise ProtocolError(404, "a partial upload named in Upload-Concat does not exist")
        if not upload.info.partial:
            raise ProtocolError(400, "Upload-Concat names an upload that is not a partial upload")
        if upload.offset != upload.length:
            raise ProtocolError(
                400,
                f"partial upload {upload.id} is not finished ({upload.offset} of "
                f"{upload.length} bytes): concatenation-unfinished is not supported",
            )
        return upload

    async def terminate(self, upload: Upload) -> None:
        """DELETE of an unfinished upload: remove its data; later requests get 404."""
        generation = upload.supersede(at_once=True)
        async with upload.lock:
            self._check_still_current(upload, generation)
            if upload.completed is not None:
                raise _completed_refusal()
            try:
                async with self._shared_lock(upload) as fence:
                    self._check_still_current(upload, generation)
                    if upload.completed is not None:
                        raise _completed_refusal()
                    if self._shared is not None:  # first: a Fenced node ends nothing
                        terminate = functools.partial(
                            self._shared.terminate, upload.id, fence=fence
                        )
                        await run_blocking(terminate)
                    upload.gone = "terminated"
                    self._uploads.pop(upload.id, None)
                    if self._shared is None:
                        await run_blocking(self.store.terminate, upload.id)
            except StoreError as exc:
                raise refusal_at(exc, upload, upload.offset) from None
        log.info("upload.terminated", upload=upload.id, offset=upload.offset)

    async def expire(self, upload: Upload) -> None:
        """Remove an unfinished upload whose time ran out, leaving a tombstone (410)."""
        async with upload.lock:
            if upload.gone is not None or upload.completed is not None:
                return
            if self._shared is None:
                await self._expire_locked(upload)
                return
            try:
                # Not waiting: an upload someone is changing is not idle.
                async with self._shared_lock(upload, wait=0.0) as fence:
                    if (
                        upload.gone is None
                        and upload.completed is None
                        and self._past_expiry(upload, time.time())
                    ):
                        await self._expire_locked(upload, fence)
            except StoreError as exc:
                log.info("upload.expiry_postponed", upload=upload.id, error=str(exc))

    @staticmethod
    def _past_expiry(upload: Upload, now: float) -> bool:
        waiting = upload.offset < upload.length or upload.info.partial  # as in _is_expired
        return upload.expires <= now and waiting

    async def _expire_locked(self, upload: Upload, fence: int | None = None) -> None:
        if self._shared is not None and fence is not None:
            expire = functools.partial(
                self._shared.expire, upload.id, upload.info.dock, fence=fence
            )
            try:
                await run_blocking(expire)
            except Fenced:
                log.warning("upload.expiry_fenced", upload=upload.id)
                return  # taken over by another node: not this one's to end
            except NotFound:
                log.info("upload.expiry_found_it_ended", upload=upload.id)
                return  # completed or removed on another node meanwhile: the next find says
            except StoreError as exc:
                log.error("upload.expiry_cleanup_failed", upload=upload.id, error=str(exc))
            upload.gone = "expired"
            self._uploads.pop(upload.id, None)
            log.info("upload.expired", upload=upload.id, offset=upload.offset, length=upload.length)
            return
        upload.gone = "expired"
        self._uploads.pop(upload.id, None)
        try:
            await run_blocking(self.store.expire, upload.id, upload.info.dock)
        except StoreError as exc:
            log.error("upload.expiry_cleanup_failed", upload=upload.id, error=str(exc))
        log.info("upload.expired", upload=upload.id, offset=upload.offset, length=upload.length)

    async def sweep(self, *, tombstone_ttl: float) -> None:
        """Expire idle unfinished uploads and forget old tombstones."""
        now = time.time()
        if self._shared is not None:
            await self._sweep_shared(self._shared, now, tombstone_ttl)
            return
        for upload in self.unfinished():
            if self._is_expired(upload, now):
                await self.expire(upload)
        await self._sweep_tombstones(now - tombstone_ttl)

    async def _sweep_tombstones(self, older_than: float) -> None:
        removed = await asyncio.to_thread(self.store.sweep_tombstones, older_than)
        if removed:
            log.info("store.tombstones_removed", count=removed)

    def _forget_idle(self) -> None:
        """Multi-node: this node's `Upload`s are only a cache of the shared state, and uploads
        finished on other nodes would otherwise stay in it for ever (bounded memory). Those no
        request holds are dropped; the next request builds its `Upload` afresh. (A request
        between `find` and taking the local lock cannot be caught here: nothing awaits there.)"""
        dropped = _forget_idle_uploads(self._uploads)
        if dropped:
            log.debug("uploads.cache_trimmed", dropped=dropped)

    async def _sweep_shared(self, shared: SharedStore, now: float, tombstone_ttl: float) -> None:
        """Multi-node: one node at a time sweeps, every unfinished upload of the shared state
        (not only those this node has seen)."""
        self._forget_idle()
        try:
            turn = await run_blocking(
                functools.partial(
                    shared.acquire, SWEEPER_LOCK, timeout=0.0, release_requested=lambda: None
                )
            )
        except StoreUnavailable:
            return  # another node is sweeping (or PostgreSQL is away): its turn
        try:
            states = await run_blocking(
                lambda: [p for p in shared.unfinished() if p.expires <= now]
            )
            for partial in states:
                upload = self._adopt(partial)
                if not self._past_expiry(upload, now):
                    continue  # all bytes there: waiting for its completion, not idle
                if not upload.lock.locked():
                    await self.expire(upload)
            await self._sweep_tombstones(now - tombstone_ttl)
        finally:
            await run_blocking(turn.release)


def _forget_idle_uploads(uploads: dict[str, Upload]) -> int:
    """Drop the uploads no request here is changing; return how many (see `_forget_idle`)."""
    idle = [upload_id for upload_id, upload in uploads.items() if not upload.lock.locked()]
    for upload_id in idle:
        del uploads[upload_id]
    return len(idle)


def _let_go(upload: Upload) -> None:
    """A request on another node waits for this upload: the body being read here may now stay
    silent for SUPERSEDE_GRACE at most (as for a newer request on this node)."""
    if upload.cutoff is not None:
        upload.cutoff.supersede(SUPERSEDE_GRACE)


def _hash_partials(store: Concater, partials: Sequence[Upload]) -> str:
    """SHA-256 of the partials' committed bytes in order, streamed (worker thread)."""
    digest = hashlib.sha256()
    for upload in partials:
        with store.open_partial(upload.id, upload.length) as source:
            while piece := source.read(1 << 20):
                digest.update(piece)
    return digest.hexdigest()


def _completed_refusal() -> ProtocolError:
    return ProtocolError(403, "completed uploads are kept as evidence and cannot be terminated")
