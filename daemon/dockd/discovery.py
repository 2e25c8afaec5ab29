"""Discovery: each docked camera's storage scanned (in a thread), each clip recorded once settled.

A clip is recorded in the journal once its size and mtime have not moved for `settle_time` and
no process holds it open for writing. Nothing here can end a camera's scan task silently: any
exception while scanning or recording becomes the camera's `scan_error` (shown, counted,
retried), one clip that cannot be recorded stays listed as not recorded while the others go on,
and a failure to write the dock's own state is the dock's condition (`dockhealth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from dockd import pipeline, recorded_time
from dockd.config import CameraModel
from dockd.devices.camera import FoundClip, ScanLimits, ScanResult, display_path, scan_camera
from dockd.devices.source import DockedCamera
from dockd.dockhealth import is_storage_error
from dockd.journal import NewClip, State

log = structlog.get_logger()

# Quiet scans back off up to this multiple of discovery.scan_interval.
MAX_SCAN_BACKOFF = 8


@dataclass
class _Pending:
    found: FoundClip
    since: float


@dataclass
class CameraView:
    """What the offloader knows of one docked camera right now."""

    camera: DockedCamera
    model: CameraModel | None
    scans: int = 0
    pending: dict[bytes, _Pending] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    scan_error: str | None = None
    truncated: bool = False  # the last scan hit ScanLimits.max_entries: files were not examined
    # Wall-clock start of the last scan whose findings were all taken (0: none yet).
    scanned_from: float = 0.0
    # Clips found but not recorded in the journal (an error while recording): path -> reason.
    unrecorded: dict[bytes, str] = field(default_factory=dict)
    # rel_path -> (size, mtime_ns, ctime_ns) of every clip file the last complete scan saw; None
    # before the first scan or when it was truncated (then nothing can be said to be gone).
    present: dict[bytes, tuple[int, int, int | None]] | None = None
    task: asyncio.Task[None] | None = None
    rescan: asyncio.Event = field(default_factory=asyncio.Event)  # an operator's "scan now"


def _sidecar_metadata(found: FoundClip) -> dict[str, object]:
    """The few sidecar fields dockd carries, as plain short strings/bools (never the raw JSON)."""
    sidecar = found.sidecar or {}
    carried: dict[str, object] = {}
    for key in ("officer", "category", "incident"):
        value = sidecar.get(key)
        if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
            carried[key] = value
    if found.sidecar_error:
        carried["sidecar_error"] = found.sidecar_error[:200]
    return carried


def _versions(result: ScanResult) -> dict[bytes, tuple[int, int, int | None]]:
    return {
        f.rel_path: (f.identity.size, f.identity.mtime_ns, f.identity.ctime_ns)
        for f in result.clips
    }


class Discovery:
    """Scans docked cameras and records their settled clips; `changed()` wakes the dispatcher."""

    def __init__(self, ctx: pipeline.PipelineContext, changed: Callable[[], None]) -> None:
        self.ctx = ctx
        self._changed = changed
        self.limits = ScanLimits()

    async def scan_loop(self, view: CameraView, model: CameraModel) -> None:
        base = self.ctx.settings.discovery.scan_interval
        interval = base
        while True:
            started = time.time()
            try:
                result = await asyncio.to_thread(
                    scan_camera, view.camera.root, model.clip_globs, model.sidecar, self.limits
                )
                changed = self._absorb(view, model, result)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure is a state, never a dead task
                self._scan_failed(view, exc)
                interval = base
            else:
                view.scan_error = None
                view.scanned_from = started
                view.present = None if result.truncated else _versions(result)
                view.scans += 1
                self._changed()
                # A docked camera rarely changes, and a scan of 100 000 files costs seconds of
                # CPU: back off while nothing changes (an operator's rescan is always immediate).
                interval = base if changed else min(interval * 2, base * MAX_SCAN_BACKOFF)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await view.rescan.wait()
            if view.rescan.is_set():
                interval = base
            view.rescan.clear()

    def _scan_failed(self, view: CameraView, exc: Exception) -> None:
        """A scan (or recording what it found) failed: the camera is not safe, and says why."""
        camera = view.camera
        if is_storage_error(exc):
            self.ctx.health.failed(exc)
            view.scan_error = self.ctx.health.problem
            self.ctx.metrics.scan_errors.labels("dock_storage").inc()
            return
        if isinstance(exc, OSError):
            view.scan_error = f"cannot scan camera storage: {exc.strerror or exc}"
            log.warning("camera.scan_failed", camera=camera.serial, reason=view.scan_error)
            self.ctx.metrics.scan_errors.labels("unreadable").inc()
            return
        view.scan_error = (
            f"internal error while scanning the camera ({type(exc).__name__}: {exc}); "
            "scanning again; clips may remain"
        )
        log.error(
            "camera.scan_error", camera=camera.serial, bay=camera.bay, error=repr(exc), exc_info=exc
        )
        self.ctx.metrics.scan_errors.labels("internal_error").inc()

    def _absorb(self, view: CameraView, model: CameraModel, result: ScanResult) -> bool:
        """Take a scan's findings; True when anything is new, changed or still settling.

        Each clip is taken on its own: one that cannot be recorded (hostile metadata that trips
        a bug) stays listed in `view.unrecorded` with the reason, which keeps the camera from
        being safe to remove, and the others go on. A failure of the dock's own storage is not
        the clip's fault: it stops the scan, to be retried whole.
        """
        now = time.monotonic()
        seen: set[bytes] = set()
        recorded = 0
        unrecorded: dict[bytes, str] = {}
        for found in result.clips:
            seen.add(found.rel_path)
            if found.rel_path in view.camera.reserved:
                continue  # the dock's own file in the camera root (bay identity), not evidence
            try:
                recorded += self._absorb_clip(view, model, found, now)
            except Exception as exc:  # one hostile clip must not hide the rest
                if is_storage_error(exc):
                    raise
                unrecorded[found.rel_path] = f"could not be recorded ({type(exc).__name__}: {exc})"
                if found.rel_path not in view.unrecorded:
                    log.error(
                        "clip.record_failed",
                        camera=view.camera.serial,
                        path=display_path(found.rel_path),
                        error=repr(exc),
                        exc_info=exc,
                    )
                    self.ctx.metrics.scan_errors.labels("internal_error").inc()
        view.unrecorded = unrecorded
        vanished = set(view.pending) - seen
        for gone in vanished:
            del view.pending[gone]
        camera = view.camera
        skipped = [(display_path(s.rel_path), s.reason) for s in result.skipped]
        for path, reason in sorted(set(skipped) - set(view.skipped)):
            log.warning(
                "clip.skipped", camera=camera.serial, bay=camera.bay, path=path, reason=reason
            )
        view.skipped = skipped
        view.truncated = result.truncated
        if result.truncated:
            log.warning(
                "camera.scan_truncated", camera=camera.serial, limit=self.limits.max_entries
            )
        return bool(recorded or vanished or view.pending or unrecorded)

    def _absorb_clip(
        self, view: CameraView, model: CameraModel, found: FoundClip, now: float
    ) -> int:
        """Record one found clip once it has settled; 1 if it was recorded now."""
        journal, camera, ident = self.ctx.journal, view.camera, found.identity
        settle = self.ctx.settings.discovery.settle_time
        live = journal.find_live(
            camera.serial, found.rel_path, ident.size, ident.mtime_ns, ident.ctime_ns
        )
        if live is not None:
            # Only a row not read yet may take the identity of the file there now. A row read at
            # an earlier docking (or before ctime was recorded) keeps its old session, so its
            # wipe proves sameness by content: binding it to today's file would skip that proof.
            if live.state is State.DISCOVERED and live.session != camera.session:
                journal.seen_in_session(
                    live.id, camera.session, ident.dev, ident.ino, camera.bay, ident.ctime_ns
                )
            return 0
        pending = view.pending.get(found.rel_path)
        if found.writing:
            # Open for writing by some process: not settled, however long its size stays put.
            view.pending[found.rel_path] = _Pending(found, now)
            return 0
        if pending is None or pending.found.identity != ident:
            view.pending[found.rel_path] = _Pending(found, now)
            if settle > 0:
                return 0
        elif now - pending.since < settle:
            return 0
        self._record(view, model, found)
        del view.pending[found.rel_path]  # only once it is in the journal
        return 1

    def _record(self, view: CameraView, model: CameraModel, found: FoundClip) -> None:
        camera, ident = view.camera, found.identity
        recorded_at, source, notes = recorded_time.recorded_at(found.sidecar, found.raw_mtime_ns)
        metadata = _sidecar_metadata(found)
        metadata.update(notes)
        if found.raw_mtime_ns != ident.mtime_ns:  # saturated for the journal: keep the original
            metadata["mtime_ns_raw"] = str(found.raw_mtime_ns)
        if found.nlink > 1:
            metadata["hard_links"] = found.nlink
        if camera.officer and "officer" not in metadata:
            metadata["officer"] = camera.officer
        try:
            record = self.ctx.journal.add_clip(
                NewClip(
                    camera=camera.serial,
                    model=model.name,
                    bay=camera.bay,
                    rel_path=found.rel_path,
                    size=ident.size,
                    mtime_ns=ident.mtime_ns,
                    ctime_ns=ident.ctime_ns,
                    dev=ident.dev,
                    ino=ident.ino,
                    session=camera.session,
                    evidence=(found.sidecar or {}).get("evidence") is True,
                    recorded_at=recorded_at,
                    recorded_at_source=source,
                    metadata=metadata,
                )
            )
        except sqlite3.IntegrityError:
            return  # already recorded by an earlier scan of the same version
        log.info(
            "clip.discovered",
            clip=record.id,
            camera=camera.serial,
            bay=camera.bay,
            size=ident.size,
            evidence=record.evidence,
        )
