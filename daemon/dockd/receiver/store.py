"""The receiver's durable file store: what is on disk, in which order it gets there, and recovery.

Layout under STORE (directories 0700, files 0600)::

    partial/<id>.bin        bytes received so far; only [0, committed offset) counts
    partial/<id>.state      {"offset", "expires"}: the committed offset, replaced atomically
    partial/<id>.json       creation info, written once; its presence means "created"
    complete/<id>.json.tmp  a completion in progress (recovery finishes it)
    complete/<id>.bin       the finished upload, renamed from partial/
    complete/<id>.json      sidecar (sha256, signed receipt, metadata); its presence means "complete"
    gone/<id>.json          tombstone of an expired upload, so it answers 410 rather than 404

Rules that make an acknowledgement mean something:

* Bytes are fdatasync'd before the offset that covers them is committed, and the offset is
  committed (tmp file, fsync, rename, fsync dir) before the client hears of it. A crash can
  leave bytes past the committed offset (an interrupted PATCH): `recover` truncates them away.
* Completion writes the sidecar to a temporary name, moves the data into complete/, then renames
  the sidecar into place: whatever the crash point, `recover` either finishes the completion or
  leaves a consistent partial upload.
* Every function here blocks (disk I/O, fsync): callers on the event loop run them in a thread.
  Upload ids reach the file system only after `is_upload_id` accepted them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from dockd.durable import write_synced

log = structlog.get_logger("dockd.receiver.store")

# secrets.token_urlsafe(24): 24 random bytes (192 bits) in 32 base64url characters.
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{32}")
_READ_PIECE = 1 << 20
_DIR_MODE = 0o700
_FILE_MODE = 0o600


class StoreError(RuntimeError):
    """The store is unusable or holds something it could not have written itself."""


def new_upload_id() -> str:
    """A fresh upload id: unguessable, and safe as a file name and URL segment."""
    return secrets.token_urlsafe(24)


def is_upload_id(text: str) -> bool:
    """True if `text` has exactly the shape `new_upload_id` produces (checked before any path use)."""
    return _UPLOAD_ID.fullmatch(text) is not None


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class CreationInfo:
    """What a POST established; never changes afterwards."""

    upload: str
    length: int
    metadata_header: str  # Upload-Metadata exactly as sent ("" if none), echoed on HEAD
    metadata: dict[str, str | None]  # decoded values (None: not UTF-8 text)
    created: str  # RFC 3339 UTC
    dock: str | None  # owner when token auth is on

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CreationInfo:
        return cls(
            upload=str(data["upload"]),
            length=int(data["length"]),
            metadata_header=str(data.get("metadata_header", "")),
            metadata=dict(data.get("metadata", {})),
            created=str(data["created"]),
            dock=data.get("dock"),
        )


@dataclass(frozen=True)
class PartialState:
    """An unfinished upload as recovered from disk."""

    info: CreationInfo
    offset: int
    expires: float


@dataclass(frozen=True)
class CompletedUpload:
    """The sidecar of a finished upload (`complete/<id>.json`)."""

    upload: str
    length: int
    sha256: str  # lowercase hex of the stored bytes
    receipt: str  # Dockd-Receipt header value
    completed: str  # RFC 3339 UTC, as signed in the receipt
    metadata: dict[str, str | None] = field(default_factory=dict)
    metadata_header: str = ""
    created: str = ""
    dock: str | None = None

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
        )


@dataclass(frozen=True)
class Tombstone:
    upload: str
    reason: str
    at: float
    dock: str | None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Write a whole file and fsync it (the caller renames it into place and fsyncs the dir)."""
    write_synced(path, data, mode=_FILE_MODE)


def _json_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None if it is missing or not a JSON object (torn write)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class Store:
    """The on-disk state of every upload. Blocking; one caller per upload at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.partial_dir = root / "partial"
        self.complete_dir = root / "complete"
        self.gone_dir = root / "gone"

    # -- paths (ids are validated by callers; assert keeps a slip from becoming a traversal) --

    def _path(self, directory: Path, upload: str, suffix: str) -> Path:
        if not is_upload_id(upload):
            raise ValueError(f"not an upload id: {upload[:40]!r}")
        return directory / f"{upload}{suffix}"

    def data_path(self, upload: str) -> Path:
        return self._path(self.partial_dir, upload, ".bin")

    def completed_data_path(self, upload: str) -> Path:
        """Where a finished upload's bytes are (for the evidence service, the demo and tests)."""
        return self._path(self.complete_dir, upload, ".bin")

    def sidecar_path(self, upload: str) -> Path:
        return self._path(self.complete_dir, upload, ".json")

    # -- lifecycle --

    def prepare(self) -> None:
        """Create the store directories if needed; refuse a store we cannot write to."""
        for directory in (self.root, self.partial_dir, self.complete_dir, self.gone_dir):
            if directory.exists() and not directory.is_dir():
                raise StoreError(f"{directory}: store path exists and is not a directory")
            if not directory.exists():
                try:
                    directory.mkdir(mode=_DIR_MODE, parents=True)
                    _fsync_dir(directory.parent)  # the new directory itself must survive a crash
                except OSError as exc:
                    raise StoreError(
                        f"{directory}: cannot create store directory: {exc.strerror}"
                    ) from None
            if not os.access(directory, os.W_OK | os.X_OK):
                raise StoreError(f"{directory}: store directory is not writable")

    def create(self, info: CreationInfo, expires: float) -> None:
        """Make a new upload durable: empty data file and state first, creation info last."""
        data = self.data_path(info.upload)
        state = self._path(self.partial_dir, info.upload, ".state")
        created = self._path(self.partial_dir, info.upload, ".json")
        fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        state_tmp = state.with_name(state.name + ".tmp")
        created_tmp = created.with_name(created.name + ".tmp")
        _write_durably(state_tmp, _json_bytes({"offset": 0, "expires": expires}))
        _write_durably(created_tmp, _json_bytes(asdict(info)))
        os.rename(state_tmp, state)
        os.rename(created_tmp, created)
        _fsync_dir(self.partial_dir)

    def open_data(self, upload: str) -> int:
        """A descriptor for writing the upload's bytes at explicit offsets (os.pwrite)."""
        return os.open(self.data_path(upload), os.O_WRONLY | os.O_NOFOLLOW)

    @staticmethod
    def sync_data(fd: int) -> None:
        os.fdatasync(fd)

    @staticmethod
    def discard_after(fd: int, offset: int) -> None:
        """Drop everything past the committed offset (a refused or failed chunk)."""
        os.ftruncate(fd, offset)

    def commit(self, upload: str, offset: int, expires: float) -> None:
        """Durably record the committed offset. Call only after the bytes are synced."""
        state = self._path(self.partial_dir, upload, ".state")
        tmp = state.with_name(state.name + ".tmp")
        _write_durably(tmp, _json_bytes({"offset": offset, "expires": expires}))
        os.rename(tmp, state)
        _fsync_dir(self.partial_dir)

    def hash_prefix(self, upload: str, length: int) -> Any:
        """SHA-256 state of the first `length` stored bytes (rebuilds the running hash after a
        restart: hashlib state cannot be saved, so the committed prefix is read once)."""
        hasher = hashlib.sha256()
        fd = os.open(self.data_path(upload), os.O_RDONLY | os.O_NOFOLLOW)
        try:
            position = 0
            while position < length:
                piece = os.pread(fd, min(_READ_PIECE, length - position), position)
                if not piece:
                    raise StoreError(f"{upload}: data file is shorter than its committed offset")
                hasher.update(piece)
                position += len(piece)
        finally:
            os.close(fd)
        return hasher

    def complete(self, record: CompletedUpload) -> None:
        """Move a fully received upload into complete/ with its sidecar (crash-safe at each step)."""
        upload = record.upload
        self._trim(upload, record.length)
        sidecar = self.sidecar_path(upload)
        pending = sidecar.with_name(sidecar.name + ".tmp")
        _write_durably(pending, _json_bytes(asdict(record)))
        self._finish_completion(upload, pending, sidecar)

    def _trim(self, upload: str, length: int) -> None:
        """Cut anything past `length` (left by a refused chunk whose truncation failed), durably:
        the stored file must be exactly the bytes the receipt describes."""
        fd = os.open(self.data_path(upload), os.O_WRONLY | os.O_NOFOLLOW)
        try:
            if os.fstat(fd).st_size > length:
                os.ftruncate(fd, length)
                os.fsync(fd)
        finally:
            os.close(fd)

    def _finish_completion(self, upload: str, pending: Path, sidecar: Path) -> None:
        completed_data = self.completed_data_path(upload)
        if not completed_data.exists():
            os.rename(self.data_path(upload), completed_data)
            _fsync_dir(self.complete_dir)
            _fsync_dir(self.partial_dir)
        os.rename(pending, sidecar)  # the moment of completion
        _fsync_dir(self.complete_dir)
        self._remove_partial_files(upload)

    def _remove_partial_files(self, upload: str) -> None:
        for suffix in (".json", ".state", ".bin", ".json.tmp", ".state.tmp"):
            _unlink(self._path(self.partial_dir, upload, suffix))
        _fsync_dir(self.partial_dir)

    def load_completed(self, upload: str) -> CompletedUpload | None:
        data = _read_json(self.sidecar_path(upload))
        return CompletedUpload.from_json(data) if data is not None else None

    def remove_partial(self, upload: str) -> None:
        """Delete an unfinished upload (termination, expiry). Creation info goes first, so a
        crash half way leaves stray files that `recover` removes, never a half-alive upload."""
        _unlink(self._path(self.partial_dir, upload, ".json"))
        self._remove_partial_files(upload)

    # -- tombstones --

    def write_tombstone(self, upload: str, reason: str, dock: str | None) -> None:
        path = self._path(self.gone_dir, upload, ".json")
        tmp = path.with_name(path.name + ".tmp")
        _write_durably(tmp, _json_bytes({"reason": reason, "at": time.time(), "dock": dock}))
        os.rename(tmp, path)
        _fsync_dir(self.gone_dir)

    def load_tombstone(self, upload: str) -> Tombstone | None:
        data = _read_json(self._path(self.gone_dir, upload, ".json"))
        if data is None:
            return None
        return Tombstone(
            upload, str(data.get("reason", "")), float(data.get("at", 0)), data.get("dock")
        )

    def sweep_tombstones(self, older_than: float) -> int:
        """Forget expired uploads whose tombstone is older than `older_than` (unix time)."""
        removed = 0
        for path in self.gone_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
        return removed

    # -- recovery --

    def recover(self) -> list[PartialState]:
        """Bring the store to a consistent state after any crash; return the unfinished uploads.

        Finishes interrupted completions, removes files of creations that were never acknowledged,
        and truncates every data file to its committed offset.
        """
        self.prepare()
        for pending in sorted(self.complete_dir.glob("*.json.tmp")):
            self._recover_completion(pending)
        for sidecar in self.complete_dir.glob("*.json"):
            upload = sidecar.name.removesuffix(".json")
            if is_upload_id(upload) and self._path(self.partial_dir, upload, ".json").exists():
                self._remove_partial_files(upload)  # crashed after completing, before cleanup
        partials: list[PartialState] = []
        for path in sorted(self.partial_dir.iterdir()):
            upload, _, suffix = path.name.partition(".")
            if not is_upload_id(upload):
                log.warning("store.unknown_file", path=str(path))
                continue
            if suffix.endswith(".tmp"):
                _unlink(path)  # a state or creation write that never got renamed into place
            elif suffix == "json":
                state = self._recover_partial(upload)
                if state is not None:
                    partials.append(state)
        for path in self.partial_dir.iterdir():
            upload, _, _ = path.name.partition(".")
            if is_upload_id(upload) and not self._path(self.partial_dir, upload, ".json").exists():
                log.info("store.removed_unacknowledged_creation", upload=upload)
                self._remove_partial_files(upload)
        return partials

    def _recover_completion(self, pending: Path) -> None:
        upload = pending.name.removesuffix(".json.tmp")
        if not is_upload_id(upload):
            log.warning("store.unknown_file", path=str(pending))
            return
        sidecar = self.sidecar_path(upload)
        data = _read_json(pending)
        if sidecar.exists() or data is None:
            _unlink(pending)  # stale, or torn while being written (the data never moved yet)
            return
        length = int(data["length"])
        partial_data = self.data_path(upload)
        if self.completed_data_path(upload).exists():
            pass  # crashed after moving the data: only the sidecar rename is left
        elif partial_data.exists() and partial_data.stat().st_size >= length:
            self._trim(upload, length)  # the completing chunk was synced before the sidecar
        else:
            log.error("store.completion_without_data", upload=upload)
            _unlink(pending)
            return
        self._finish_completion(upload, pending, sidecar)
        log.info("store.completion_finished_on_recovery", upload=upload)

    def _recover_partial(self, upload: str) -> PartialState | None:
        created = _read_json(self._path(self.partial_dir, upload, ".json"))
        if created is None:
            log.error("store.unreadable_creation_info", upload=upload)
            return None
        info = CreationInfo.from_json(created)
        state = _read_json(self._path(self.partial_dir, upload, ".state")) or {}
        offset = int(state.get("offset", 0))
        expires = float(state.get("expires", 0.0))
        data = self.data_path(upload)
        try:
            size = data.stat().st_size
        except FileNotFoundError:
            log.error("store.missing_data_file", upload=upload)
            _write_durably(data, b"")
            size = 0
        if size < offset:
            # Only a disk that lost synced data gets here; resume from what is really there.
            log.error("store.data_shorter_than_committed", upload=upload, offset=offset, size=size)
            offset = size
            self.commit(upload, offset, expires)
        if size > offset:
            os.truncate(data, offset)  # bytes of an interrupted PATCH were never acknowledged
            log.info("store.truncated_unacknowledged_bytes", upload=upload, dropped=size - offset)
        return PartialState(info, min(offset, info.length), expires)
