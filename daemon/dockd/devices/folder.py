"""Bay folders as a camera source (development, `dockd demo`, drop-folder docks).

Layout: `bays_dir/<bay name>/` is one bay; it holds the camera's storage plus a small identity file
(`camera.json`: `{"serial": "...", "model": "...", "officer": "..."}`, officer optional). A bay
with a valid identity file is a docked camera; the identity file or the bay directory going away
undocks it. Writers should put the clips in place first and write the identity file last,
atomically (write a temporary name, then rename): the identity file is the "docked" signal.

watchdog wakes us promptly (one non-recursive watch on `bays_dir` for bays coming and going, and one
non-recursive watch per bay for its identity file: a recursive watch would cover every directory
of every camera, which a hostile camera could use to exhaust inotify watches). A poll every
`poll_interval` is the safety net for anything watchdog misses. An identity must have stood
unchanged for `settle_time` before it counts, so a half-written file is neither docked nor
reported as invalid while its writer is still busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from dockd.devices.camera import UnsafeFile, display_path, load_json_object, read_small_file
from dockd.devices.source import MAX_SERIAL_CHARS, CameraEvents, DockedCamera, new_session

log = structlog.get_logger()

IDENTITY_MAX_BYTES = 16 * 1024
IDENTITY_MAX_DEPTH = 8
MAX_MODEL_CHARS = 64
MAX_OFFICER_CHARS = 128
MAX_BAYS = 1024  # more entries than any dock has bays: stop listing, it is not a bay folder

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# Only what can change the set of bays or an identity file. Not opens or closes-without-write:
# our own reads of camera.json would wake us, and we would read it again, forever.
_BAYS_DIR_EVENTS: list[type[FileSystemEvent]] = [
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
]
_BAY_EVENTS: list[type[FileSystemEvent]] = [
    DirDeletedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
]

FileKey = tuple[int, int, int, int]  # (dev, ino, size, mtime_ns) of an identity file
_UNSTATABLE: FileKey = (0, 0, 0, 0)


class InvalidIdentity(ValueError):
    """The identity file exists but does not describe a camera."""


@dataclass(frozen=True)
class CameraIdentity:
    serial: str
    model: str
    officer: str | None


@dataclass(frozen=True)
class BayLook:
    """What one look at a bay directory found."""

    name: str  # directory name as os.fsdecode gives it (may hold surrogates)
    dir_key: tuple[int, int]  # (dev, ino) of the bay directory: a recreated bay is a new bay
    file_key: FileKey | None  # None: no identity file
    identity: CameraIdentity | None
    error: str | None  # why an existing identity file was rejected


@dataclass
class _Docking:
    dir_key: tuple[int, int]
    identity: CameraIdentity
    camera: DockedCamera


def _text_field(doc: dict[str, Any], key: str, limit: int, *, required: bool) -> str | None:
    value = doc.get(key)
    if value is None or (value == "" and not required):
        if required:
            raise InvalidIdentity(f"missing {key!r}")
        return None
    if not isinstance(value, str):
        raise InvalidIdentity(f"{key!r} must be a string")
    value = value.strip()
    if not value or len(value) > limit or not value.isprintable():
        raise InvalidIdentity(f"{key!r} must be 1-{limit} printable characters")
    return value


def parse_identity(data: bytes) -> CameraIdentity:
    """Validate a bay identity file's bytes; InvalidIdentity says what is wrong."""
    try:
        doc = load_json_object(data, IDENTITY_MAX_DEPTH)
    except ValueError as exc:
        raise InvalidIdentity(str(exc)) from exc
    serial = _text_field(doc, "serial", MAX_SERIAL_CHARS, required=True)
    model = _text_field(doc, "model", MAX_MODEL_CHARS, required=True)
    officer = _text_field(doc, "officer", MAX_OFFICER_CHARS, required=False)
    assert serial is not None and model is not None  # required=True never returns None
    return CameraIdentity(serial=serial, model=model, officer=officer)


def bay_display_name(name: str) -> str:
    """The bay name operators see: the directory name, escaped if it is not printable."""
    return display_path(os.fsencode(name))


class _WakeOnEvent(FileSystemEventHandler):
    """Runs on watchdog's thread; all it does is poke the event loop."""

    def __init__(self, wake: Callable[[], None], only_name: str | None = None) -> None:
        self._wake = wake
        self._only_name = only_name

    def on_any_event(self, event: FileSystemEvent) -> None:
        if self._only_name is not None and not self._concerns(event):
            return
        self._wake()

    def _concerns(self, event: FileSystemEvent) -> bool:
        if isinstance(event, DirDeletedEvent):
            return True  # the bay directory itself went away
        paths = (event.src_path, event.dest_path)
        return any(
            path and os.path.basename(os.fsdecode(path)) == self._only_name for path in paths
        )


_Watch = tuple[tuple[int, int], ObservedWatch]  # (dev, ino) of the watched directory, watch


class _Watches:
    """watchdog watches: bays_dir, plus one per bay directory. Only a wake-up source.

    A watch is keyed by the directory's (dev, ino): a directory deleted and recreated under the
    same name needs a new watch (the old one died with it, and watchdog would hand back the dead
    one for the same path).
    """

    def __init__(
        self,
        observer: BaseObserver | None,
        bays_dir: Path,
        identity_file: str,
        wake: Callable[[], None],
    ) -> None:
        self._observer = observer  # None: no watchdog on this host, polling covers everything
        self._bays_dir = bays_dir
        self._identity_file = identity_file
        self._wake = wake  # called on watchdog's thread
        self._root_watch: _Watch | None = None
        self._bay_watches: dict[str, _Watch] = {}
        self._failures_logged: set[str] = set()

    def ensure_root(self, dir_key: tuple[int, int]) -> None:
        """Watch bays_dir for bays arriving and leaving."""
        handler = _WakeOnEvent(self._wake)
        self._root_watch = self._renew(
            self._root_watch, dir_key, self._bays_dir, handler, _BAYS_DIR_EVENTS
        )

    def ensure_bay(self, name: str, dir_key: tuple[int, int]) -> None:
        """Watch a bay directory for its identity file."""
        handler = _WakeOnEvent(self._wake, only_name=self._identity_file)
        watch = self._renew(
            self._bay_watches.get(name), dir_key, self._bays_dir / name, handler, _BAY_EVENTS
        )
        if watch is None:
            self._bay_watches.pop(name, None)
        else:
            self._bay_watches[name] = watch

    def keep_only(self, names: set[str]) -> None:
        """Drop the watches of bays that are gone."""
        for name in set(self._bay_watches) - names:
            self._unschedule(self._bay_watches.pop(name))

    def _renew(
        self,
        current: _Watch | None,
        dir_key: tuple[int, int],
        path: Path,
        handler: _WakeOnEvent,
        events: list[Any],
    ) -> _Watch | None:
        if current is not None:
            if current[0] == dir_key:
                return current
            self._unschedule(current)
        if self._observer is None:
            return None
        try:
            watch = self._observer.schedule(
                handler, str(path), recursive=False, event_filter=events
            )
        except OSError as exc:  # e.g. the inotify watch limit: the poll still covers this path
            if str(path) not in self._failures_logged:
                self._failures_logged.add(str(path))
                log.warning(
                    "bays.watch_failed", path=display_path(os.fsencode(path)), error=str(exc)
                )
            return None
        return dir_key, watch

    def _unschedule(self, watch: _Watch) -> None:
        if self._observer is not None:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(watch[1])


class FolderSource:
    """CameraSource over a directory of bay folders (see the module docstring)."""

    def __init__(
        self,
        bays_dir: Path,
        *,
        identity_file: str = "camera.json",
        poll_interval: float = 1.0,
        settle_time: float = 0.5,
    ) -> None:
        if not identity_file or "/" in identity_file or identity_file in (".", ".."):
            raise ValueError(f"identity_file must be a plain file name: {identity_file!r}")
        if poll_interval <= 0 or settle_time < 0:
            raise ValueError("poll_interval must be > 0 and settle_time >= 0")
        self.bays_dir = Path(bays_dir)
        self.identity_file = identity_file
        self.poll_interval = poll_interval
        self.settle_time = settle_time

    async def run(self, events: CameraEvents) -> None:
        """Watch the bays until cancelled; docked/undocked are called on the event loop thread."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def wake_from_thread() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody to wake
                loop.call_soon_threadsafe(wake.set)

        observer = _start_observer()
        watches = _Watches(observer, self.bays_dir, self.identity_file, wake_from_thread)
        looker = _BayLooker(self.bays_dir, self.identity_file, watches)
        bays = _BayTracker(self, events)
        try:
            while True:
                wake.clear()
                try:
                    looks = await asyncio.to_thread(looker.look)
                    bays.reconcile(looks)
                except Exception:  # a bug here must not take the dock down: log, poll again
                    log.exception("bays.reconcile_failed", bays_dir=str(self.bays_dir))
                timeout = min(self.poll_interval, bays.seconds_until_settled())
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
                # races with the wake-up, and the source would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(timeout, 0.0)):
                        await wake.wait()
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=10)


def _start_observer() -> BaseObserver | None:
    """A running watchdog observer, or None (polling only) if the host refuses one."""
    try:
        observer = Observer()
        observer.start()
    except OSError as exc:  # e.g. fs.inotify.max_user_instances reached
        log.warning("bays.watchdog_unavailable", error=str(exc), fallback="polling only")
        return None
    return observer


class _BayLooker:
    """Reads the bays folder safely (blocking: runs in a worker thread, one look at a time)."""

    def __init__(self, bays_dir: Path, identity_file: str, watches: _Watches) -> None:
        self._bays_dir = bays_dir
        self._identity_name = os.fsencode(identity_file)
        self._watches = watches
        self._symlinks_logged: set[str] = set()

    def look(self) -> dict[str, BayLook] | None:
        """Look at every bay. None: bays_dir exists but cannot be read (keep the current state)."""
        try:
            bays_fd = os.open(self._bays_dir, _DIR_FLAGS)
        except FileNotFoundError:
            self._watches.keep_only(set())
            return {}
        except OSError as exc:
            log.warning("bays.unreadable", bays_dir=str(self._bays_dir), error=str(exc))
            return None
        looks: dict[str, BayLook] = {}
        symlinks: set[str] = set()
        try:
            st = os.fstat(bays_fd)
            # Watch before listing, so a bay arriving right after the listing still wakes us.
            self._watches.ensure_root((st.st_dev, st.st_ino))
            with os.scandir(bays_fd) as listing:
                for count, entry in enumerate(listing):
                    if count >= MAX_BAYS:
                        log.warning("bays.too_many", bays_dir=str(self._bays_dir), limit=MAX_BAYS)
                        break
                    look = self._look_at_entry(bays_fd, entry, symlinks)
                    if look is not None:
                        looks[look.name] = look
        except OSError as exc:
            log.warning("bays.unreadable", bays_dir=str(self._bays_dir), error=str(exc))
            return None
        finally:
            os.close(bays_fd)
        self._watches.keep_only(set(looks))
        self._symlinks_logged &= symlinks  # a symlink that comes back is reported again
        return looks

    def _look_at_entry(
        self, bays_fd: int, entry: os.DirEntry[str], symlinks: set[str]
    ) -> BayLook | None:
        name = entry.name
        if name.startswith("."):  # writers stage bays under a hidden name, then rename
            return None
        try:
            if entry.is_symlink():
                symlinks.add(name)
                if name not in self._symlinks_logged:
                    self._symlinks_logged.add(name)
                    log.warning("bay.symlink_ignored", bay=bay_display_name(name))
                return None
            if not entry.is_dir(follow_symlinks=False):
                return None
            bay_fd = os.open(os.fsencode(name), _DIR_FLAGS, dir_fd=bays_fd)
        except OSError:  # vanished, or swapped for a symlink since the listing: next look
            return None
        try:
            st = os.fstat(bay_fd)
            dir_key = (st.st_dev, st.st_ino)
            # Watch before reading, so a write right after our read still wakes us.
            self._watches.ensure_bay(name, dir_key)
            file_key, identity, error = self._read_identity(bay_fd)
        finally:
            os.close(bay_fd)
        return BayLook(name, dir_key, file_key, identity, error)

    def _read_identity(
        self, bay_fd: int
    ) -> tuple[FileKey | None, CameraIdentity | None, str | None]:
        name = self._identity_name
        try:
            st = os.stat(name, dir_fd=bay_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None, None, None
        except OSError as exc:  # present but not even stat-able: an invalid identity, not none
            return _UNSTATABLE, None, f"unreadable: {exc.strerror or exc}"
        file_key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            return file_key, parse_identity(read_small_file(bay_fd, name, IDENTITY_MAX_BYTES)), None
        except FileNotFoundError:
            return None, None, None
        except UnsafeFile as exc:
            return file_key, None, exc.reason
        except OSError as exc:
            return file_key, None, f"unreadable: {exc.strerror or exc}"
        except InvalidIdentity as exc:
            return file_key, None, str(exc)


class _BayTracker:
    """Turns successive looks at the bays into docked/undocked calls (event loop thread only)."""

    def __init__(self, source: FolderSource, events: CameraEvents) -> None:
        self._source = source
        self._events = events
        self._docked: dict[str, _Docking] = {}
        # bay name -> (identity file key, when first seen, monotonic) while it settles
        self._first_seen: dict[str, tuple[FileKey, float]] = {}
        self._invalid_logged: dict[str, tuple[FileKey | None, str]] = {}
        self._present: dict[str, tuple[int, int]] = {}  # bay directories seen, by dir_key
        self._next_settle: float | None = None

    def seconds_until_settled(self) -> float:
        if self._next_settle is None:
            return float("inf")
        return self._next_settle - time.monotonic()

    def reconcile(self, looks: dict[str, BayLook] | None) -> None:
        if looks is None:
            return  # bays_dir unreadable right now: keep what we know rather than undock all
        self._next_settle = None
        for name in list(self._docked):
            if name not in looks:
                self._undock(name, "bay removed")
        for per_bay in (self._first_seen, self._invalid_logged, self._present):
            for name in set(per_bay) - set(looks):
                del per_bay[name]
        for look in sorted(looks.values(), key=lambda look: look.name):
            if self._present.get(look.name) != look.dir_key:
                self._present[look.name] = look.dir_key
                log.info("bay.appeared", bay=bay_display_name(look.name))
            self._reconcile_bay(look)

    def _reconcile_bay(self, look: BayLook) -> None:
        docking = self._docked.get(look.name)
        if look.file_key is None:  # no identity file: an empty bay
            self._first_seen.pop(look.name, None)
            if docking is not None:
                self._undock(look.name, "identity file removed")
            return
        if docking is not None and docking.dir_key != look.dir_key:
            self._undock(look.name, "bay directory replaced")
            docking = None
        if look.identity is not None and docking is not None:
            if docking.identity == look.identity:
                self._first_seen.pop(look.name, None)
                return
            self._undock(look.name, "identity changed")
            docking = None
        if not self._settled(look):
            return
        if look.identity is None:
            if docking is not None:
                self._undock(look.name, "identity file invalid")
            self._log_invalid(look)
            return
        self._dock(look)

    def _settled(self, look: BayLook) -> bool:
        """Has this identity file stood unchanged for settle_time? Schedules a re-check if not."""
        assert look.file_key is not None
        settle = self._source.settle_time
        now = time.monotonic()
        seen = self._first_seen.get(look.name)
        if seen is None or seen[0] != look.file_key:
            seen = (look.file_key, now)
            self._first_seen[look.name] = seen
        mtime_age = time.time() - look.file_key[3] / 1e9
        if now - seen[1] >= settle or mtime_age >= settle:
            return True
        due = seen[1] + settle
        self._next_settle = due if self._next_settle is None else min(self._next_settle, due)
        return False

    def _dock(self, look: BayLook) -> None:
        assert look.identity is not None
        self._first_seen.pop(look.name, None)
        self._invalid_logged.pop(look.name, None)
        identity = look.identity
        camera = DockedCamera(
            serial=identity.serial,
            model=identity.model,
            bay=bay_display_name(look.name),
            root=self._source.bays_dir / look.name,
            session=new_session(),
            officer=identity.officer,
            reserved=frozenset({os.fsencode(self._source.identity_file)}),
        )
        self._docked[look.name] = _Docking(look.dir_key, identity, camera)
        log.info(
            "bay.docked",
            bay=camera.bay,
            serial=camera.serial,
            model=camera.model,
            has_officer=camera.officer is not None,  # the name itself stays out of logs (GDPR)
            session=camera.session,
        )
        self._notify(self._events.docked, camera)

    def _undock(self, name: str, reason: str) -> None:
        docking = self._docked.pop(name)
        camera = docking.camera
        log.info(
            "bay.undocked",
            bay=camera.bay,
            serial=camera.serial,
            session=camera.session,
            reason=reason,
        )
        self._notify(self._events.undocked, camera)

    def _log_invalid(self, look: BayLook) -> None:
        assert look.error is not None
        key = (look.file_key, look.error)
        if self._invalid_logged.get(look.name) != key:
            self._invalid_logged[look.name] = key
            log.warning("bay.invalid_identity", bay=bay_display_name(look.name), error=look.error)

    @staticmethod
    def _notify(callback: Callable[[DockedCamera], None], camera: DockedCamera) -> None:
        try:
            callback(camera)
        except Exception:  # the pipeline's problem, not a reason to stop watching bays
            log.exception("bay.event_handler_failed", bay=camera.bay, session=camera.session)
