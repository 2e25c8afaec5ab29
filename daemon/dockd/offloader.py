"""The offloader: docked cameras in, clips through the pipeline, cameras out "safe to remove".

It is the `CameraEvents` sink every camera source feeds. For each docked camera it scans the
storage (in a thread) and records each clip once its size and mtime have settled; a dispatcher
runs clips through `pipeline.process` under a global cap on simultaneous clips, spreading the
slots across cameras (every docked camera makes progress) and taking evidence first, then the
oldest recording, with a starvation guard for the rest (`_next`). Undocking cancels that
camera's work, which is always safe: the journal only holds facts, and the server holds the
offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog

from dockd import pipeline, recorded_time
from dockd.config import CameraModel
from dockd.devices.camera import (
    DEPTH_REASON,
    FoundClip,
    ScanLimits,
    ScanResult,
    display_path,
    scan_camera,
)
from dockd.devices.source import DockedCamera
from dockd.dockhealth import is_storage_error
from dockd.journal import SETTLED, ClipRecord, NewClip, State

log = structlog.get_logger()

# Quiet scans back off up to this multiple of discovery.scan_interval.
MAX_SCAN_BACKOFF = 8
# The dispatcher re-reads the journal at least this often, to pick up clips whose retry time came.
DISPATCH_POLL_SECONDS = 1.0
# A clip whose task ended in an unexpected exception is not started again before this long, even
# if recording its FAILED state failed too (a full disk): no hot loop of tracebacks.
INTERNAL_ERROR_COOLDOWN = 60.0


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


@dataclass(frozen=True)
class CameraStatus:
    serial: str
    bay: str
    model: str
    safe_to_remove: bool
    why_not: str | None
    clips: Counter[str]
    pending: int
    # Every clip is settled but some are HELD without the server's confirmation: the operator
    # may take the camera, but it is NOT safe to remove (never shown as such).
    removable: bool = False
    held_not_offloaded: int = 0
    kept_on_camera: int = 0  # HELD clips the server confirmed: kept on the camera on purpose
    # QUARANTINED rows whose file is no longer on the camera: a note, not a blocker.
    gone_quarantined: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()


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


def _superseded_and_rescanned(view: CameraView, clip: ClipRecord) -> bool:
    """A row whose path was proven to hold other bytes stops blocking the camera only once a
    scan that started after that proof was taken whole: until then, the new content at the path
    may be known to nobody."""
    return clip.superseded_at is not None and view.scanned_from > clip.superseded_at


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _blocks_removal(reason: str) -> bool:
    """A skipped entry that may hide evidence: an unreadable file or directory, or a directory
    below the depth limit. (Symlinks, FIFOs, devices and sockets are never clips.)"""
    return reason.startswith("unreadable") or reason == DEPTH_REASON


class Offloader:
    def __init__(self, ctx: pipeline.PipelineContext) -> None:
        self.ctx = ctx
        self.views: dict[str, CameraView] = {}
        self._inflight: dict[int, tuple[asyncio.Task[None], str]] = {}
        self._wake = asyncio.Event()
        self._limits = ScanLimits()
        self._evidence_streak = 0  # evidence clips started in a row while others waited
        self._cooldown: dict[int, float] = {}  # clip id -> monotonic time it may start again
        ctx.rescan_camera = self.rescan

    # ---- CameraEvents ----------------------------------------------------------------------
    def docked(self, camera: DockedCamera) -> None:
        old = self.views.get(camera.serial)
        if old is not None:
            self.undocked(old.camera)
        model = self.ctx.settings.model(camera.model)
        view = CameraView(camera, model)
        self.views[camera.serial] = view
        if model is None:
            log.warning(
                "camera.unknown_model", camera=camera.serial, bay=camera.bay, model=camera.model
            )
            return
        log.info("camera.docked", camera=camera.serial, bay=camera.bay, model=camera.model)
        view.task = asyncio.get_running_loop().create_task(self._scan_loop(view, model))
        self._wake.set()

    def undocked(self, camera: DockedCamera) -> None:
        view = self.views.get(camera.serial)
        if view is None or view.camera.session != camera.session:
            return
        del self.views[camera.serial]
        if view.task is not None:
            view.task.cancel()
        for clip_id, (task, serial) in list(self._inflight.items()):
            if serial == camera.serial:
                task.cancel()
                log.info("clip.interrupted", clip=clip_id, camera=serial, reason="camera undocked")
        log.info("camera.undocked", camera=camera.serial, bay=camera.bay)
        self._wake.set()

    # ---- discovery -------------------------------------------------------------------------
    async def _scan_loop(self, view: CameraView, model: CameraModel) -> None:
        base = self.ctx.settings.discovery.scan_interval
        interval = base
        while True:
            started = time.time()
            try:
                result = await asyncio.to_thread(
                    scan_camera, view.camera.root, model.clip_globs, model.sidecar, self._limits
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
                self._wake.set()
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
                "camera.scan_truncated", camera=camera.serial, limit=self._limits.max_entries
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

    # ---- dispatch --------------------------------------------------------------------------
    async def run(self) -> None:
        """Dispatch clips until cancelled."""
        try:
            while True:
                self._fill()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives with the wake-up, and shutdown would hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DISPATCH_POLL_SECONDS):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            await self.stop()

    def _fill(self) -> None:
        try:
            self._fill_slots()
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            self.ctx.health.failed(exc)

    def _storage_ready(self) -> bool:
        """False while the dock's own disk is full or failing; probes it when the back-off ends."""
        health = self.ctx.health
        if health.problem is None:
            return True
        if health.paused():
            return False
        try:
            self.ctx.journal.audit("dock.storage_probe", str(health.state_dir))
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            health.failed(exc)
            return False
        health.recovered()
        for view in self.views.values():
            view.rescan.set()  # scans that failed on the full disk run again now
        return True

    def _fill_slots(self) -> None:
        if not self._storage_ready():
            return
        free = self.ctx.settings.upload.max_parallel - len(self._inflight)
        if free <= 0:
            return
        clock = time.monotonic()
        for clip_id in [c for c, until in self._cooldown.items() if until <= clock]:
            del self._cooldown[clip_id]
        ready = [
            c
            for c in self.ctx.journal.workable(self._offloadable(), time.time())
            if c.id not in self._inflight and c.id not in self._cooldown
        ]
        per_camera = Counter(serial for _task, serial in self._inflight.values())
        rank = {clip.id: index for index, clip in enumerate(ready)}
        while free and ready:
            clip = self._next(ready, per_camera, rank)
            ready.remove(clip)
            self._start(clip, self.views[clip.camera].camera)
            per_camera[clip.camera] += 1
            free -= 1

    def _next(
        self, ready: list[ClipRecord], per_camera: Counter[str], rank: dict[int, int]
    ) -> ClipRecord:
        """The clip for the next free slot.

        `ready` is in priority order (evidence, oldest recording, first found). Evidence of any
        camera goes first; within the same class the camera with the fewest clips in flight
        goes first (every docked camera makes progress), then the oldest. Starvation guard:
        after `upload.evidence_streak` evidence clips started in a row while some other clip
        was waiting, the best non-evidence clip takes this slot, so a stream of flagged clips
        slows the rest down but can never stop it.
        """
        others = [c for c in ready if not c.evidence]
        pool = ready
        streak_max = self.ctx.settings.upload.evidence_streak
        if others and len(others) < len(ready) and self._evidence_streak >= streak_max:
            pool = others
        clip = min(pool, key=lambda c: (not c.evidence, per_camera[c.camera], rank[c.id]))
        if clip.evidence and others:
            self._evidence_streak += 1
        else:
            self._evidence_streak = 0
        return clip

    def _offloadable(self) -> list[str]:
        return [s for s, v in self.views.items() if v.model is not None]

    def _start(self, clip: ClipRecord, camera: DockedCamera) -> None:
        task = asyncio.get_running_loop().create_task(pipeline.process(self.ctx, clip.id, camera))
        self._inflight[clip.id] = (task, camera.serial)
        task.add_done_callback(lambda t, cid=clip.id: self._finished(cid, t))

    def _finished(self, clip_id: int, task: asyncio.Task[None]) -> None:
        self._inflight.pop(clip_id, None)
        self._wake.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        # Not started again for a while, whether or not the journal can record why.
        self._cooldown[clip_id] = time.monotonic() + INTERNAL_ERROR_COOLDOWN
        if is_storage_error(exc):
            self.ctx.health.failed(exc)
            return
        # A bug: keep the daemon alive, park the clip with the reason.
        log.error("clip.internal_error", clip=clip_id, error=repr(exc), exc_info=exc)
        self.ctx.metrics.clips_failed.labels("internal_error").inc()
        try:
            self.ctx.journal.mark_failed(
                clip_id, f"internal error: {exc!r}", time.time() + INTERNAL_ERROR_COOLDOWN
            )
        except Exception as again:  # the cooldown above still holds
            if is_storage_error(again):
                self.ctx.health.failed(again)
            else:
                log.error("clip.internal_error_unrecorded", clip=clip_id, error=repr(again))

    async def stop(self) -> None:
        tasks = [task for task, _serial in self._inflight.values()]
        tasks += [v.task for v in self.views.values() if v.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- control API: read-only accessors and operator nudges --------------------------------
    def inflight_count(self) -> int:
        return len(self._inflight)

    def interrupt(self, clip_id: int) -> bool:
        """Stop a clip's task (an operator held it); safe like an undock. False if not running."""
        entry = self._inflight.get(clip_id)
        if entry is None:
            return False
        entry[0].cancel()
        return True

    def rescan(self, serial: str) -> bool:
        """Scan this camera now instead of at the next interval; also re-dispatch."""
        view = self.views.get(serial)
        if view is None:
            return False
        view.rescan.set()
        self._wake.set()
        return True

    def wake(self) -> None:
        """Re-read the journal now (a clip was released or retried)."""
        self._wake.set()

    # ---- status ----------------------------------------------------------------------------
    def version_present(self, clip: ClipRecord) -> bool | None:
        """Is this clip's exact file version (path, size, mtime, ctime) on its camera now, as the
        last complete scan saw it? None when that cannot be told (camera not docked, not scanned
        yet, scan truncated, or the path was unreadable). A row from before ctime was recorded
        matches on (size, mtime)."""
        view = self.views.get(clip.camera)
        if view is None or view.present is None or view.scan_error is not None:
            return None
        if display_path(clip.rel_path) in {path for path, _reason in view.skipped}:
            return None
        found = view.present.get(clip.rel_path)
        if found is None:
            return False
        size, mtime_ns, ctime_ns = found
        return (size, mtime_ns) == (clip.size, clip.mtime_ns) and clip.ctime_ns in (None, ctime_ns)

    def _gone(self, view: CameraView, clip: ClipRecord) -> bool:
        """No file at all is at this clip's path on the camera (a replaced version still holds
        the path: that row keeps blocking until someone looks)."""
        if self.version_present(clip) is not False:
            return False
        assert view.present is not None
        return clip.rel_path not in view.present

    def status(self, serial: str) -> CameraStatus:
        view = self.views[serial]
        every = self.ctx.journal.clips_for_camera(serial, include_wiped=True)
        closed = (State.WIPED, State.DISMISSED)
        clips = [c for c in every if c.state not in closed]
        # Counts cover this docking: the live clips plus those closed since it was docked.
        counts = Counter(
            c.state.value
            for c in every
            if c.state not in closed or c.session == view.camera.session
        )
        gone = [
            c
            for c in clips
            if c.state is State.QUARANTINED
            and (_superseded_and_rescanned(view, c) or self._gone(view, c))
        ]
        gone_ids = {c.id for c in gone}
        clips = [c for c in clips if c.id not in gone_ids]
        held = [c for c in clips if c.state is State.HELD]
        not_offloaded = [c for c in held if c.confirmation is None]
        kept = [c for c in held if c.confirmation is not None]
        busy = sum(1 for _t, s in self._inflight.values() if s == serial)
        why_not: str | None = None
        if view.model is None:
            why_not = f"unknown camera model {view.camera.model!r}: not offloaded"
        elif self.ctx.health.problem:
            why_not = self.ctx.health.problem
        elif view.scan_error:
            why_not = view.scan_error
        elif view.scans == 0:
            why_not = "scanning"
        elif view.truncated:
            why_not = (
                f"the camera holds more than {self._limits.max_entries} entries: not every file "
                "was examined, so clips may remain"
            )
        elif unread := [(p, r) for p, r in view.skipped if _blocks_removal(r)]:
            why_not = (
                f"{len(unread)} possible clip location(s) could not be read, so clips may remain "
                f"({unread[0][0]}: {unread[0][1]})"
            )
        elif view.unrecorded:
            path, reason = next(iter(view.unrecorded.items()))
            why_not = (
                f"{len(view.unrecorded)} clip(s) found but not recorded, so not offloaded "
                f"({display_path(path)}: {reason}); retrying"
            )
        elif view.pending:
            writing = sum(1 for p in view.pending.values() if p.found.writing)
            why_not = f"{len(view.pending)} clip(s) still being written or settling" + (
                f" ({writing} open for writing by another process)" if writing else ""
            )
        elif busy or any(c.state not in SETTLED for c in clips):
            stuck = [
                c
                for c in clips
                if c.state in (State.QUARANTINED, State.FAILED)
                or (c.reason and c.state not in SETTLED)
            ]
            why_not = (
                f"{display_path(stuck[0].rel_path)}: {stuck[0].state.value}: {stuck[0].reason}"
                if stuck and not busy
                else "offloading"
            )
        removable = why_not is None and bool(not_offloaded)
        if removable:
            # Never "SAFE TO REMOVE": an operator's hold is not the server holding the bytes.
            why_not = f"REMOVABLE: {_plural(len(not_offloaded), 'clip')} held, NOT offloaded"
        notes = []
        if kept:
            notes.append(
                f"{_plural(len(kept), 'clip')} kept on the camera on purpose "
                "(held; the server has confirmed them)"
            )
        notes += [
            f"{display_path(c.rel_path)}: QUARANTINED row (clip {c.id}) whose file is no longer "
            f"on the camera: dockctl dismiss {c.id} --reason TEXT closes it"
            for c in gone
        ]
        return CameraStatus(
            serial=serial,
            bay=view.camera.bay,
            model=view.camera.model,
            safe_to_remove=why_not is None,
            why_not=why_not,
            clips=counts,
            pending=len(view.pending),
            removable=removable,
            held_not_offloaded=len(not_offloaded),
            kept_on_camera=len(kept),
            gone_quarantined=tuple(sorted(gone_ids)),
            notes=tuple(notes),
        )
