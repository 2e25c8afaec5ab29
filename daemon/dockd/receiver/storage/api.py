"""What the receiver needs from a store: the upload records, the interfaces, and the errors.

The handlers and the upload coordinator (`uploads.py`) speak only these types; a store backend
(the file store, the in-memory store, later an S3 store) implements `UploadStore` and passes the
contract suite in tests/receiver/contract/. Optional capabilities are separate small protocols
(`Locker`, `Concater`), found with `isinstance`, as tusd's StoreComposer does.

Every method blocks (disk, network, fsync): callers on the event loop run them on a worker thread
with `run_blocking`. A blocking interface keeps the file store's durability code as it was, and
an object store can use a blocking client (boto3, psycopg) in the same threads.

The promise every store keeps, whatever it is built on:

* `ChunkWriter.commit(offset)` returns only once bytes [0, offset) and the offset itself are
  durable: the handler acknowledges (204) right after it. Bytes written but never committed
  may vanish at any restart; committed ones never do.
* `complete` is atomic: after any crash, `recover` reports the upload either as completed
  (sidecar and exactly `length` bytes) or as unfinished with its committed offset, never half.
* Reading a completed upload is streamed (`open_completed` returns a file-like object): no
  caller needs an object in memory.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, runtime_checkable

from dockd.utc import iso_utc

# secrets.token_urlsafe(24): 24 random bytes (192 bits) in 32 base64url characters.
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{32}")


def new_upload_id() -> str:
    """A fresh upload id: unguessable, and safe as a file name, object key and URL segment."""
    return secrets.token_urlsafe(24)


def is_upload_id(text: str) -> bool:
    """True if `text` has exactly the shape `new_upload_id` produces (checked before any use)."""
    return _UPLOAD_ID.fullmatch(text) is not None


def rfc3339(when: dt.datetime) -> str:
    """The store's timestamps are the tree's one format (`dockd.utc.iso_utc`)."""
    return iso_utc(when)


# -- errors: what went wrong, in words that do not depend on the backend --


class StoreError(Exception):
    """The store failed or is unusable (500, or a refusal to start)."""


class StoreFull(StoreError):
    """No room for these bytes (507): nothing of the chunk counts."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached right now (503 + Retry-After); nothing acknowledged is lost."""

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(StoreError):
    """No such upload in the state the caller asked for (404)."""


class Fenced(StoreError):
    """A write carried a fencing token older than the upload's lock (another node took it over);
    the store refused it, so a stalled node cannot change an upload it no longer holds (409)."""


# -- records --

PARTIAL = "partial"  # `Upload-Concat` of a partial upload (tus concatenation extension)


@dataclass(frozen=True)
class CreationInfo:
    """What a POST established; never changes afterwards."""

    upload: str
    length: int
    metadata_header: str  # Upload-Metadata exactly as sent ("" if none), echoed on HEAD
    metadata: dict[str, str | None]  # decoded values (None: not UTF-8 text, or holds NUL)
    created: str  # RFC 3339 UTC
    dock: str | None  # owner when token auth is on
    # tus concatenation: "partial" for a partial upload (never completed on its own, no
    # receipt), "" for an ordinary one. Absent from records written before concatenation.
    concat: str = ""

    @property
    def partial(self) -> bool:
        return self.concat == PARTIAL

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CreationInfo:
        return cls(
            upload=str(data["upload"]),
            length=int(data["length"]),
            metadata_header=str(data.get("metadata_header", "")),
            metadata=dict(data.get("metadata", {})),
            created=str(data["created"]),
            dock=data.get("dock"),
            concat=str(data.get("concat", "")),
        )


@dataclass(frozen=True)
class PartialState:
    """An unfinished upload as recovered from the store."""

    info: CreationInfo
    offset: int  # committed
    expires: float


@dataclass(frozen=True)
class CompletedUpload:
    """The sidecar of a finished upload: what the receipt signs, and where it came from."""

    upload: str
    length: int
    sha256: str  # lowercase hex of the stored bytes
    receipt: str  # Dockd-Receipt header value
    completed: str  # RFC 3339 UTC, as signed in the receipt
    metadata: dict[str, str | None] = field(default_factory=dict)
    metadata_header: str = ""
    created: str = ""
    dock: str | None = None
    # A final upload's `Upload-Concat` value ("final;<url> <url>"), echoed on HEAD; "" otherwise.
    concat: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompletedUpload:
        return cls(
            upload=str(data["upload"]),
            length=int(data["length"]),
            sha256=str(data["sha256"]),
            receipt=str(data["receipt"]),
            completed=str(data["completed"]),
            metadata=dict(data.get("metadata", {})),
            metadata_header=str(data.get("metadata_header", "")),
            created=str(data.get("created", "")),
            dock=data.get("dock"),
            concat=str(data.get("concat", "")),
        )


def same_bytes(one: CompletedUpload, other: CompletedUpload) -> bool:
    """Whether two completed records (two signings of one completion) describe the same stored
    bytes of the same upload: their receipts may differ only in when they were signed."""
    return (one.upload, one.length, one.sha256) == (other.upload, other.length, other.sha256)


@dataclass(frozen=True)
class Tombstone:
    """An upload that expired unfinished, or a partial upload used by a final one: it answers
    410 rather than 404 for a while."""

    upload: str
    reason: str  # "expired", or `concatenated_reason(final)`
    at: float
    dock: str | None


_CONCATENATED = "concatenated into "


def concatenated_reason(final: str) -> str:
    """The tombstone reason of a partial upload used by the final upload `final`: a final
    creation repeated after a lost answer finds the final it already made (idempotent)."""
    return _CONCATENATED + final


def concatenated_into(tombstone: Tombstone) -> str | None:
    """The final upload a partial's tombstone names, or None (expired, or not a partial)."""
    final = tombstone.reason.removeprefix(_CONCATENATED)
    return final if final != tombstone.reason and is_upload_id(final) else None


# -- the interfaces --


class RunningHash(Protocol):
    """hashlib's sha256 object, as far as stores and the coordinator use it."""

    def update(self, data: bytes, /) -> None: ...
    def copy(self) -> RunningHash: ...
    def hexdigest(self) -> str: ...
    def digest(self) -> bytes: ...


class ChunkWriter(Protocol):
    """Writes one request's bytes into an unfinished upload, from its committed offset on.

    `write` may be called from a worker thread while the hashers run on others; nothing it
    writes counts until `commit`. One writer per upload at a time (the caller holds the lock).
    """

    def write(self, data: bytes, position: int) -> None:
        """Store `data` at absolute `position` (not yet durable)."""
        ...

    def commit(self, offset: int, expires: float, running_hash: RunningHash) -> None:
        """Make bytes [0, offset) and the offset durable; return only when they are.

        `running_hash` covers exactly [0, offset): a store that can persist hash state keeps it,
        so `running_hash` need not re-read the prefix after a restart (the file store re-reads).
        """
        ...

    def discard(self) -> None:
        """Drop everything written past the committed offset (a refused or failed chunk)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class UploadStore(Protocol):
    """The state of every upload: unfinished, completed, and expired (tombstone)."""

    def describe(self) -> str:
        """Where the store is, for logs (`file:/srv/store`, `memory:`)."""
        ...

    def recover(self) -> list[PartialState]:
        """Prepare the store, repair what a crash left (finish or undo completions, drop
        uncommitted bytes), and return every unfinished upload. Called once at start."""
        ...

    def free_bytes(self) -> int | None:
        """Bytes new uploads may still take, or None if the backend has no useful limit."""
        ...

    def create(self, info: CreationInfo, expires: float) -> None:
        """Durably create an empty upload (raises StoreFull / StoreUnavailable)."""
        ...

    def unfinished_deadline(self, info: CreationInfo) -> float | None:
        """The latest time (epoch seconds) the upload may still be unfinished, whatever its
        activity, or None for no limit. The S3 store: before the bucket's lifecycle rule aborts
        its multipart upload, which counts from creation, not from the last write. The
        coordinator never lets an upload's expiry go past it."""
        ...

    def open_writer(self, upload: str, offset: int, *, fence: int | None = None) -> ChunkWriter:
        """A writer appending at the committed `offset`. With a `Locker`, `fence` is the lock's
        token and every commit checks it (raising `Fenced` when a newer holder exists)."""
        ...

    def new_hash(self) -> RunningHash:
        """A fresh SHA-256 of the kind this store can persist through `commit` (the file store:
        hashlib's; a store that saves hash state returns a serialisable one)."""
        ...

    def running_hash(self, upload: str, offset: int) -> RunningHash:
        """The SHA-256 state of committed bytes [0, offset): restored if the store persisted it,
        else rebuilt by reading the prefix (streamed)."""
        ...

    def complete(self, record: CompletedUpload, *, fence: int | None = None) -> None:
        """Atomically turn the unfinished upload into a completed one with this sidecar; the
        stored object is exactly `record.length` bytes. Idempotent for the same record; if an
        earlier attempt already stored a record for the same bytes, that one stays (the caller
        hands out `load_completed`'s, never one the store does not hold).
        `fence` as for `open_writer`: a stale holder cannot complete."""
        ...

    def load_completed(self, upload: str) -> CompletedUpload | None: ...

    def load_tombstone(self, upload: str) -> Tombstone | None: ...

    def terminate(self, upload: str) -> None:
        """Delete an unfinished upload (later lookups find nothing)."""
        ...

    def expire(self, upload: str, dock: str | None) -> None:
        """Delete an unfinished upload and leave a tombstone (later lookups find the tombstone)."""
        ...

    def sweep_tombstones(self, older_than: float) -> int:
        """Forget tombstones written before `older_than` (unix time); return how many."""
        ...

    def completed(self) -> Iterator[CompletedUpload]:
        """Every completed upload (sidecars only; ordered by upload id)."""
        ...

    def open_completed(self, upload: str) -> BinaryIO:
        """The stored bytes of a completed upload, to read as a stream (raises NotFound)."""
        ...


# -- optional capabilities --


class UploadLock(Protocol):
    """A held lock on one upload; `fence` grows with every new holder."""

    fence: int

    def release(self) -> None: ...


@runtime_checkable
class Locker(Protocol):
    """Cross-process locking (several receiver nodes over one shared store, issue 16)."""

    def acquire(
        self, upload: str, *, timeout: float, release_requested: Callable[[], None]
    ) -> UploadLock:
        """Take the upload's lock, waiting at most `timeout` s (StoreUnavailable after that).

        `release_requested` is called (from any thread) when another request, on any node,
        waits for this lock: the holder then cuts its body off soon, as `Upload.supersede` does
        in one process (tusd's `requestUnlock`), so a dock resuming after a dropped connection
        is not locked out by its own dead request on another node.
        """
        ...


@runtime_checkable
class Concater(Protocol):
    """The tus concatenation extension: a final upload made of finished partial uploads.

    A partial upload is an unfinished upload whose `CreationInfo.concat` is "partial": its bytes
    are committed chunk by chunk like any other, but it is never completed on its own (no
    receipt, no sidecar) and it expires like any unfinished upload if no final upload uses it.
    The coordinator checks the partials (same dock, all bytes committed), computes the final
    upload's SHA-256 and signs its receipt; the store then makes the final upload.
    """

    def open_partial(self, upload: str, length: int) -> BinaryIO:
        """The first `length` committed bytes of a partial upload, to read as a stream (the
        coordinator re-hashes several partials this way: SHA-256 states do not combine)."""
        ...

    def concatenate(
        self, record: CompletedUpload, partials: Sequence[str], *, fence: int | None = None
    ) -> None:
        """Atomically create the completed upload `record` whose bytes are the committed bytes
        of `partials` in order (their lengths sum to `record.length`), then replace each
        partial by a tombstone whose reason is `concatenated_reason(record.upload)`.

        Crash-safe as `complete`: after any crash the final upload is either completed (sidecar
        and exactly `record.length` bytes) or absent, and until it is completed every partial
        is intact. Idempotent for the same record.
        """
        ...
