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
import datetime as dt
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog

from dockd import pipeline
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
from dockd.journal import SETTLED, ClipRecord, NewClip, State

log = structlog.get_logger()

# Quiet scans back off up to this multiple of discovery.scan_interval.
MAX_SCAN_BACKOFF = 8
# The dispatcher re-reads the journal at least this often, to pick up clips whose retry time came.
DISPATCH_POLL_SECONDS = 1.0


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


def _recorded_at(found: FoundClip) -> tuple[str, str]:
    sidecar = found.sidecar or {}
    value = sidecar.get("recorded_at")
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.astimezone(dt.UTC).isoformat(timespec="seconds").replace(
                "+00:00", "Z"
            ), "sidecar"
    return pipeline.utc_iso(found.identity.mtime_ns), "mtime"


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
            try:
                result = await asyncio.to_thread(
                    scan_camera, view.camera.root, model.clip_globs, model.sidecar, self._limits
                )
            except OSError as exc:
                view.scan_error = f"cannot scan camera storage: {exc.strerror or exc}"
                log.warning("camera.scan_failed", camera=view.camera.serial, reason=view.scan_error)
            else:
                view.scan_error = None
                changed = self._absorb(view, model, result)
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

    def _absorb(self, view: CameraView, model: CameraModel, result: ScanResult) -> bool:
        """Take a scan's findings; True when anything is new, changed or still settling."""
        journal, camera = self.ctx.journal, view.camera
        now = time.monotonic()
        settle = self.ctx.settings.discovery.settle_time
        seen: set[bytes] = set()
        recorded = 0
        for found in result.clips:
            ident = found.identity
            seen.add(found.rel_path)
            if found.rel_path in view.camera.reserved:
                continue  # the dock's own file in the camera root (bay identity), not evidence
            live = journal.find_live(camera.serial, found.rel_path, ident.size, ident.mtime_ns)
            if live is not None:
                if live.state is State.DISCOVERED and live.session != camera.session:
                    journal.seen_in_session(
                        live.id, camera.session, ident.dev, ident.ino, camera.bay
                    )
                continue
            pending = view.pending.get(found.rel_path)
            if pending is None or pending.found.identity != ident:
                view.pending[found.rel_path] = _Pending(found, now)
                if settle > 0:
                    continue
            elif now - pending.since < settle:
                continue
            del view.pending[found.rel_path]
            self._record(view, model, found)
            recorded += 1
        vanished = set(view.pending) - seen
        for gone in vanished:
            del view.pending[gone]
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
        return bool(recorded or vanished or view.pending)

    def _record(self, view: CameraView, model: CameraModel, found: FoundClip) -> None:
        camera, ident = view.camera, found.identity
        recorded_at, source = _recorded_at(found)
        metadata = _sidecar_metadata(found)
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
        free = self.ctx.settings.upload.max_parallel - len(self._inflight)
        if free <= 0:
            return
        ready = [
            c
            for c in self.ctx.journal.workable(self._offloadable(), time.time())
            if c.id not in self._inflight
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
        if exc is not None:  # a bug: keep the daemon alive, park the clip with the reason
            log.error("clip.internal_error", clip=clip_id, error=repr(exc), exc_info=exc)
            self.ctx.metrics.clips_failed.labels("internal_error").inc()
            with contextlib.suppress(Exception):
                self.ctx.journal.mark_failed(clip_id, f"internal error: {exc!r}", time.time() + 60)

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
    def status(self, serial: str) -> CameraStatus:
        view = self.views[serial]
        every = self.ctx.journal.clips_for_camera(serial, include_wiped=True)
        clips = [c for c in every if c.state is not State.WIPED]
        # Counts cover this docking: the live clips plus those wiped since it was docked.
        counts = Counter(
            c.state.value
            for c in every
            if c.state is not State.WIPED or c.session == view.camera.session
        )
        busy = sum(1 for _t, s in self._inflight.values() if s == serial)
        why_not: str | None = None
        if view.model is None:
            why_not = f"unknown camera model {view.camera.model!r}: not offloaded"
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
        elif view.pending:
            why_not = f"{len(view.pending)} clip(s) still being written or settling"
        elif busy or any(c.state not in SETTLED for c in clips):
            stuck = [c for c in clips if c.state in (State.QUARANTINED, State.FAILED) or c.reason]
            why_not = (
                f"{display_path(stuck[0].rel_path)}: {stuck[0].state.value}: {stuck[0].reason}"
                if stuck and not busy
                else "offloading"
            )
        return CameraStatus(
            serial=serial,
            bay=view.camera.bay,
            model=view.camera.model,
            safe_to_remove=why_not is None,
            why_not=why_not,
            clips=counts,
            pending=len(view.pending),
        )
