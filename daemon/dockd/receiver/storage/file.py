"""The file store: every upload as files in one directory tree, and the only receiver code that
touches descriptors, fsync, pwrite and posix_fadvise.

Layout under STORE (directories 0700, files 0600)::

    partial/<id>.bin        bytes received so far; only [0, committed offset) counts
    partial/<id>.state      the committed offset and expiry: two checksummed slots, updated in
                            place (`offset_record`)
    partial/<id>.json       creation info, written once; its presence means "created"
    complete/<id>.json.tmp  a completion in progress (recovery finishes it)
    complete/<id>.bin       the finished upload, renamed from partial/
    complete/<id>.json      sidecar (sha256, signed receipt, metadata); its presence means "complete"
    gone/<id>.json          tombstone of an expired upload, so it answers 410 rather than 404

Rules that make an acknowledgement mean something:

* Bytes are fdatasync'd before the offset that covers them is committed, and the offset is
  committed (one slot of the state file overwritten, fdatasync) before the client hears of it:
  two syncs per PATCH, no rename, no directory fsync (the state file's name was made durable at
  creation). A crash can leave bytes past the committed offset (an interrupted PATCH): `recover`
  truncates them away.
* Completion writes the sidecar to a temporary name, moves the data into complete/, then renames
  the sidecar into place: whatever the crash point, `recover` either finishes the completion or
  leaves a consistent partial upload.
* Every function here blocks (disk I/O, fsync): callers on the event loop run them in a thread.
  Upload ids reach the file system only after `is_upload_id` accepted them.
* Disk-full errors leave as `StoreFull`, other OS errors as `StoreError`: callers never see errno.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec, TypeVar

import structlog

from dockd.durable import fsync_dir as _fsync_dir
from dockd.durable import write_synced
from dockd.receiver.storage import offset_record
from dockd.receiver.storage.api import (
    ChunkWriter,
    CompletedUpload,
    CreationInfo,
    NotFound,
    PartialState,
    RunningHash,
    StoreError,
    StoreFull,
    Tombstone,
    concatenated_reason,
    is_upload_id,
)
from dockd.receiver.storage.offset_record import OffsetState

log = structlog.get_logger("dockd.receiver.store")

_READ_PIECE = 1 << 20
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

P = ParamSpec("P")
T = TypeVar("T")


def _store_errors(function: Callable[P, T]) -> Callable[P, T]:
    """Turn the OS's errors into the store's: disk full becomes StoreFull (507)."""

    @functools.wraps(function)
    def translated(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return function(*args, **kwargs)
        except OSError as exc:
            raise _translated(exc) from exc

    return translated


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


class FileChunkWriter:
    """A chunk being written into `partial/<id>.bin`: pwrite, then fdatasync + state commit.

    Owns the descriptors (data and state file) for one request; only bytes covered by a
    `commit` survive a restart.
    """

    def __init__(self, store: FileStore, upload: str, offset: int) -> None:
        self._upload = upload
        self._committed = offset
        self._fd = _open_for_writing(store.data_path(upload))
        try:
            self._state_fd, self._state = _open_state(store.state_path(upload))
        except BaseException:
            os.close(self._fd)
            raise

    def write(self, data: bytes, position: int) -> None:  # worker thread
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self._fd, view, position)
                view, position = view[written:], position + written
        except OSError as exc:
            raise _translated(exc) from exc

    @_store_errors
    def commit(self, offset: int, expires: float, running_hash: RunningHash) -> None:
        # hashlib state cannot be persisted: after a restart `running_hash` re-reads the prefix.
        chunk_start = self._committed
        os.fdatasync(self._fd)
        # Drop the now-clean pages: stored evidence is not read again here, and keeping it
        # would push useful pages out. Done after the sync, where it is cheap; on dirty
        # pages (per write) it cost ~2 ms/MiB on the request's critical path.
        os.posix_fadvise(self._fd, chunk_start, offset - chunk_start, os.POSIX_FADV_DONTNEED)
        self._state = offset_record.commit(self._state_fd, self._state, offset, expires)
        self._committed = offset

    @_store_errors
    def discard(self) -> None:
        """Drop everything past the committed offset (a refused or failed chunk)."""
        os.ftruncate(self._fd, self._committed)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._state_fd)


@_store_errors
def _open_for_writing(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_NOFOLLOW)


@_store_errors
def _open_state(path: Path) -> tuple[int, OffsetState]:
    """The state file, open for in-place commits, with the record it holds now."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        state = offset_record.read_fd(fd)
        if state is None or state.legacy:  # `recover` rewrites both before any writer exists
            raise StoreError(f"{path.name}: no committed offset in the current format")
    except BaseException:
        os.close(fd)
        raise
    return fd, state


def _translated(exc: OSError) -> StoreError:
    if exc.errno in _DISK_FULL:
        return StoreFull(f"store is full: {exc.strerror}")
    return StoreError(f"store I/O error: {exc}")


class FileStore:
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
        """Where a finished upload's bytes are (file-store tests; others use `open_completed`)."""
        return self._path(self.complete_dir, upload, ".bin")

    def sidecar_path(self, upload: str) -> Path:
        return self._path(self.complete_dir, upload, ".json")

    def state_path(self, upload: str) -> Path:
        return self._path(self.partial_dir, upload, ".state")

    # -- lifecycle --

    def describe(self) -> str:
        return f"file:{self.root}"

    def unfinished_deadline(self, info: CreationInfo) -> float | None:
        return None  # nothing removes an unfinished upload behind the receiver's back

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer can still use on the store's file system."""
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

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

    @_store_errors
    def create(self, info: CreationInfo, expires: float) -> None:
        """Make a new upload durable: empty data file and state first, creation info last."""
        data = self.data_path(info.upload)
        state = self.state_path(info.upload)
        created = self._path(self.partial_dir, info.upload, ".json")
        fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        state_tmp = state.with_name(state.name + ".tmp")
        created_tmp = created.with_name(created.name + ".tmp")
        _write_durably(state_tmp, offset_record.initial_file(0, expires))
        _write_durably(created_tmp, _json_bytes(asdict(info)))
        os.rename(state_tmp, state)
        os.rename(created_tmp, created)
        _fsync_dir(self.partial_dir)

    def open_writer(self, upload: str, offset: int, *, fence: int | None = None) -> ChunkWriter:
        # One process owns a file store: there is no other lock holder to fence off.
        return FileChunkWriter(self, upload, offset)

    def replace_state(self, upload: str, offset: int, expires: float) -> None:
        """Write a fresh state file (temp name, fsync, rename, directory fsync): for recovery,
        which resets an offset or converts the old JSON format. Call only after the bytes are
        synced. Chunk commits update the file in place instead (`FileChunkWriter.commit`)."""
        state = self.state_path(upload)
        tmp = state.with_name(state.name + ".tmp")
        _write_durably(tmp, offset_record.initial_file(offset, expires))
        os.rename(tmp, state)
        _fsync_dir(self.partial_dir)

    def new_hash(self) -> RunningHash:
        return hashlib.sha256()

    @_store_errors
    def running_hash(self, upload: str, offset: int) -> RunningHash:
        """SHA-256 state of the first `offset` stored bytes (rebuilds the running hash after a
        restart: hashlib state cannot be saved, so the committed prefix is read once)."""
        hasher = hashlib.sha256()
        fd = os.open(self.data_path(upload), os.O_RDONLY | os.O_NOFOLLOW)
        try:
            position = 0
            while position < offset:
                piece = os.pread(fd, min(_READ_PIECE, offset - position), position)
                if not piece:
                    raise StoreError(f"{upload}: data file is shorter than its committed offset")
                hasher.update(piece)
                position += len(piece)
        finally:
            os.close(fd)
        return hasher

    @_store_errors
    def complete(self, record: CompletedUpload, *, fence: int | None = None) -> None:
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

    # -- concatenation (storage.api.Concater) --

    @_store_errors
    def open_partial(self, upload: str, length: int) -> BinaryIO:
        self._check_partial_committed(upload, length)
        return self.data_path(upload).open("rb")

    @_store_errors
    def concatenate(
        self, record: CompletedUpload, partials: Sequence[str], *, fence: int | None = None
    ) -> None:
        """Make the final upload from finished partials, crash-safe at every step.

        The final's bytes are first assembled at `partial/<final>.bin`, where recovery removes
        them as an unacknowledged creation if the crash comes first. One partial is adopted by a
        hard link (no copy: the same inode gets a second name, the partial stays intact); several
        are copied and fsync'd. From there the path is `complete`'s: pending sidecar, data
        renamed into complete/, sidecar renamed (the moment of completion). The partials are
        replaced by tombstones naming the final only after that; a crash before leaves them to
        expire.
        """
        final = record.upload
        if self.sidecar_path(final).exists():
            return
        lengths = [self._check_partial_committed(p, None) for p in partials]
        if sum(lengths) != record.length:
            raise StoreError(f"{final}: partials hold {sum(lengths)} bytes, not {record.length}")
        assembled = self.data_path(final)
        _unlink(assembled)  # left by an earlier attempt that failed
        if len(partials) == 1:
            self._trim(partials[0], lengths[0])
            os.link(self.data_path(partials[0]), assembled, follow_symlinks=False)
        else:
            self._copy_partials(assembled, partials, lengths)
        _fsync_dir(self.partial_dir)
        sidecar = self.sidecar_path(final)
        pending = sidecar.with_name(sidecar.name + ".tmp")
        _write_durably(pending, _json_bytes(asdict(record)))
        self._finish_completion(final, pending, sidecar)
        for partial in partials:
            self.write_tombstone(partial, concatenated_reason(final), record.dock)
            self.remove_partial(partial)

    def _check_partial_committed(self, upload: str, length: int | None) -> int:
        """The partial's length, if its data file holds all its bytes (at least `length`).

        That every byte is *committed* is the caller's to check (the coordinator does, under the
        upload's lock, from the committed offset it keeps); no writer is open then, and what a
        failed or interrupted chunk left past the committed offset was truncated away, so the
        data file is exactly the committed bytes. Reading the state file here would tie this
        method to its format.
        """
        created = _read_json(self._path(self.partial_dir, upload, ".json"))
        if created is None:
            raise NotFound(f"{upload}: no unfinished upload")
        info = CreationInfo.from_json(created)
        need = info.length if length is None else length
        if not info.partial or self.data_path(upload).stat().st_size < need:
            raise StoreError(f"{upload}: not a finished partial upload")
        return info.length

    def _copy_partials(self, target: Path, partials: Sequence[str], lengths: list[int]) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                for partial, length in zip(partials, lengths, strict=True):
                    with self.data_path(partial).open("rb") as source:
                        remaining = length
                        while remaining:
                            piece = source.read(min(_READ_PIECE, remaining))
                            if not piece:
                                raise StoreError(f"{partial}: data shorter than committed")
                            out.write(piece)
                            remaining -= len(piece)
            os.fsync(fd)
        finally:
            os.close(fd)

    def load_completed(self, upload: str) -> CompletedUpload | None:
        data = _read_json(self.sidecar_path(upload))
        return CompletedUpload.from_json(data) if data is not None else None

    def completed(self) -> Iterator[CompletedUpload]:
        for sidecar in sorted(self.complete_dir.glob("*.json")):
            data = _read_json(sidecar)
            if data is not None and is_upload_id(sidecar.stem):
                yield CompletedUpload.from_json(data)

    def open_completed(self, upload: str) -> BinaryIO:
        if self.load_completed(upload) is None:
            raise NotFound(f"{upload}: no completed upload")
        return self.completed_data_path(upload).open("rb")

    @_store_errors
    def terminate(self, upload: str) -> None:
        self.remove_partial(upload)

    @_store_errors
    def expire(self, upload: str, dock: str | None) -> None:
        try:
            self.write_tombstone(upload, "expired", dock)
        finally:
            self.remove_partial(upload)

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

    def _read_state(self, upload: str) -> OffsetState | None:
        try:
            content = self.state_path(upload).read_bytes()
        except FileNotFoundError:
            return None
        state = offset_record.parse(content)
        if state is None:
            log.error("store.unreadable_offset_record", upload=upload)
        return state

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
        state = self._read_state(upload)
        offset, expires = (state.offset, state.expires) if state is not None else (0, 0.0)
        if state is None or state.legacy:
            # No record (only a disk that lost synced data gets here) or the old JSON format:
            # write the current format before any writer updates it in place.
            self.replace_state(upload, offset, expires)
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
            self.replace_state(upload, offset, expires)
        if size > offset:
            os.truncate(data, offset)  # bytes of an interrupted PATCH were never acknowledged
            log.info("store.truncated_unacknowledged_bytes", upload=upload, dropped=size - offset)
        return PartialState(info, min(offset, info.length), expires)
