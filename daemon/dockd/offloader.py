"""The offloader: docked cameras in, clips through the pipeline, cameras out "safe to remove".

It is the `CameraEvents` sink every camera source feeds. `discovery` scans each docked camera and
records its settled clips; the dispatcher here runs clips through `pipeline.process` under a
global cap on simultaneous clips, spreading the slots across cameras (every docked camera makes
progress) and taking evidence first, then the oldest recording, with a starvation guard for the
rest (`_next`); `bay_status` gives each camera's verdict. Undocking cancels that camera's work,
which is always safe: the journal only holds facts, and the server holds the offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import structlog

from dockd import bay_status, pipeline
from dockd.bay_status import CameraStatus
from dockd.devices.source import DockedCamera
from dockd.discovery import CameraView, Discovery
from dockd.dockhealth import is_storage_error
from dockd.journal import ClipRecord

__all__ = ["CameraStatus", "CameraView", "Offloader"]

log = structlog.get_logger()

# The dispatcher re-reads the journal at least this often, to pick up clips whose retry time came.
DISPATCH_POLL_SECONDS = 1.0
# A clip whose task ended in an unexpected exception is not started again before this long, even
# if recording its FAILED state failed too (a full disk): no hot loop of tracebacks.
INTERNAL_ERROR_COOLDOWN = 60.0


class Offloader:
    def __init__(self, ctx: pipeline.PipelineContext) -> None:
        self.ctx = ctx
        self.views: dict[str, CameraView] = {}
        self._inflight: dict[int, tuple[asyncio.Task[None], str]] = {}
        self._wake = asyncio.Event()
        self.discovery = Discovery(ctx, self._wake.set)
        self._evidence_streak = 0  # evidence clips started in a row while others waited
        self._cooldown: dict[int, float] = {}  # clip id -> monotonic time it may start again
        ctx.rescan_camera = self.rescan

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
        view.task = asyncio.get_running_loop().create_task(self.discovery.scan_loop(view, model))
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
        """Is this clip's exact file version on its docked camera now (see bay_status)?"""
        return bay_status.version_present(self.views.get(clip.camera), clip)

    def status(self, serial: str) -> CameraStatus:
        view = self.views[serial]
        return bay_status.camera_status(
            view,
            self.ctx.journal.clips_for_camera(serial, include_wiped=True),
            sum(1 for _t, s in self._inflight.values() if s == serial),
            self.ctx.health.problem,
            self.discovery.limits,
        )
