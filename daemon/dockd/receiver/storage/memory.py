"""The in-memory store: the whole interface in dicts, for fast tests and as a second implementation
that keeps the contract suite honest about what is file-store detail and what is the contract.

`MemoryMedium` plays the durable medium (a disk, a bucket): what a `MemoryStore` committed lives
there, so a "restart" is a new `MemoryStore` on the same medium, and bytes written but never
committed are gone, exactly as the file store's recovery truncates them. Every upload is held in
RAM: never use it for real evidence.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from dockd.receiver.storage.api import (
    ChunkWriter,
    CompletedUpload,
    CreationInfo,
    NotFound,
    PartialState,
    RunningHash,
    StoreError,
    StoreFull,
    StoreUnavailable,
    Tombstone,
    concatenated_reason,
    is_upload_id,
)


@dataclass
class _Unfinished:
    info: CreationInfo
    data: bytearray = field(default_factory=bytearray)  # committed bytes only
    expires: float = 0.0


@dataclass
class MemoryMedium:
    """What survives a restart of a `MemoryStore`, plus the faults a test can switch on."""

    unfinished: dict[str, _Unfinished] = field(default_factory=dict)
    completed: dict[str, tuple[CompletedUpload, bytes]] = field(default_factory=dict)
    tombstones: dict[str, Tombstone] = field(default_factory=dict)
    capacity: int | None = None  # bytes; None = unlimited
    unavailable: bool = False  # every operation raises StoreUnavailable while set
    lock: threading.Lock = field(default_factory=threading.Lock)

    def used(self) -> int:
        # Snapshots (list() is atomic under the GIL): other uploads commit from other threads.
        return sum(len(u.data) for u in list(self.unfinished.values())) + sum(
            len(data) for _, data in list(self.completed.values())
        )


class MemoryChunkWriter:
    """Bytes of one request, held aside until `commit` appends them to the medium."""

    def __init__(self, store: MemoryStore, upload: str, offset: int) -> None:
        self._store = store
        self._upload = upload
        self._committed = offset
        self._pending = bytearray()

    def write(self, data: bytes, position: int) -> None:
        self._store.check_available()
        start = position - self._committed
        if start < 0:
            raise StoreError(f"{self._upload}: write at {position} before the committed offset")
        end = start + len(data)
        capacity = self._store.medium.capacity
        if capacity is not None and self._store.medium.used() + end > capacity:
            raise StoreFull("memory store is full")
        if len(self._pending) < end:
            self._pending.extend(bytes(end - len(self._pending)))
        self._pending[start:end] = data

    def commit(self, offset: int, expires: float, running_hash: RunningHash) -> None:
        self._store.check_available()
        entry = self._store.unfinished(self._upload)
        with self._store.medium.lock:
            entry.data += self._pending[: offset - self._committed]
            entry.expires = expires
        self._pending = bytearray()
        self._committed = offset

    def discard(self) -> None:
        self._pending = bytearray()

    def close(self) -> None:
        self._pending = bytearray()


class MemoryStore:
    """`UploadStore` in memory; `MemoryStore(medium)` again simulates a restart."""

    def __init__(self, medium: MemoryMedium | None = None) -> None:
        self.medium = medium if medium is not None else MemoryMedium()

    def check_available(self) -> None:
        if self.medium.unavailable:
            raise StoreUnavailable("memory store switched off by the test", retry_after=1.0)

    def unfinished(self, upload: str) -> _Unfinished:
        entry = self.medium.unfinished.get(upload)
        if entry is None:
            raise NotFound(f"{upload}: no unfinished upload")
        return entry

    def describe(self) -> str:
        return "memory:"

    def recover(self) -> list[PartialState]:
        self.check_available()
        return [
            PartialState(u.info, len(u.data), u.expires)
            for _, u in sorted(self.medium.unfinished.items())
        ]

    def unfinished_deadline(self, info: CreationInfo) -> float | None:
        return None  # nothing removes an unfinished upload behind the receiver's back

    def free_bytes(self) -> int | None:
        capacity = self.medium.capacity
        return None if capacity is None else max(capacity - self.medium.used(), 0)

    def create(self, info: CreationInfo, expires: float) -> None:
        self.check_available()
        if not is_upload_id(info.upload):
            raise ValueError(f"not an upload id: {info.upload[:40]!r}")
        with self.medium.lock:
            self.medium.unfinished[info.upload] = _Unfinished(info, expires=expires)

    def open_writer(self, upload: str, offset: int, *, fence: int | None = None) -> ChunkWriter:
        self.check_available()
        self.unfinished(upload)
        return MemoryChunkWriter(self, upload, offset)

    def new_hash(self) -> RunningHash:
        return hashlib.sha256()

    def running_hash(self, upload: str, offset: int) -> RunningHash:
        self.check_available()
        data = self.unfinished(upload).data
        if len(data) < offset:
            raise StoreError(f"{upload}: fewer bytes stored than committed")
        return hashlib.sha256(data[:offset])

    def complete(self, record: CompletedUpload, *, fence: int | None = None) -> None:
        self.check_available()
        with self.medium.lock:
            if record.upload in self.medium.completed:
                return
            entry = self.medium.unfinished.get(record.upload)
            if entry is None or len(entry.data) < record.length:
                raise StoreError(f"{record.upload}: not all bytes are committed")
            self.medium.completed[record.upload] = (record, bytes(entry.data[: record.length]))
            del self.medium.unfinished[record.upload]

    # -- concatenation (storage.api.Concater) --

    def open_partial(self, upload: str, length: int) -> BinaryIO:
        self.check_available()
        entry = self._finished_partial(upload)
        return io.BytesIO(bytes(entry.data[:length]))

    def concatenate(
        self, record: CompletedUpload, partials: Sequence[str], *, fence: int | None = None
    ) -> None:
        """Under the medium's lock, so the final appears whole or not at all."""
        self.check_available()
        with self.medium.lock:
            if record.upload in self.medium.completed:
                return
            entries = [self._finished_partial(p) for p in partials]
            data = b"".join(bytes(e.data[: e.info.length]) for e in entries)
            if len(data) != record.length:
                raise StoreError(f"{record.upload}: partials hold {len(data)} bytes")
            self.medium.completed[record.upload] = (record, data)
            for partial in partials:
                del self.medium.unfinished[partial]
                self.medium.tombstones[partial] = Tombstone(
                    partial, concatenated_reason(record.upload), time.time(), record.dock
                )

    def _finished_partial(self, upload: str) -> _Unfinished:
        entry = self.unfinished(upload)
        if not entry.info.partial or len(entry.data) < entry.info.length:
            raise StoreError(f"{upload}: not a finished partial upload")
        return entry

    def load_completed(self, upload: str) -> CompletedUpload | None:
        self.check_available()
        found = self.medium.completed.get(upload)
        return found[0] if found is not None else None

    def load_tombstone(self, upload: str) -> Tombstone | None:
        self.check_available()
        return self.medium.tombstones.get(upload)

    def terminate(self, upload: str) -> None:
        self.check_available()
        with self.medium.lock:
            self.medium.unfinished.pop(upload, None)

    def expire(self, upload: str, dock: str | None) -> None:
        self.check_available()
        with self.medium.lock:
            self.medium.tombstones[upload] = Tombstone(upload, "expired", time.time(), dock)
            self.medium.unfinished.pop(upload, None)

    def sweep_tombstones(self, older_than: float) -> int:
        self.check_available()
        with self.medium.lock:
            old = [u for u, t in self.medium.tombstones.items() if t.at < older_than]
            for upload in old:
                del self.medium.tombstones[upload]
        return len(old)

    def completed(self) -> Iterator[CompletedUpload]:
        self.check_available()
        for upload in sorted(self.medium.completed):
            yield self.medium.completed[upload][0]

    def open_completed(self, upload: str) -> BinaryIO:
        self.check_available()
        found = self.medium.completed.get(upload)
        if found is None:
            raise NotFound(f"{upload}: no completed upload")
        return io.BytesIO(found[1])
