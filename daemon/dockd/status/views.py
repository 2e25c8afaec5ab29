"""What the control API shows: plain JSON-able dicts built from the daemon's live state.

One place turns the offloader's camera views, the journal and the progress board into the rows
the station desk reads (`dockctl status`), so the CLI only renders.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dockd.devices.camera import display_path
from dockd.journal import WORKABLE, ClipRecord, Journal, State

if TYPE_CHECKING:
    from dockd.offloader import Offloader
    from dockd.progress import ClipProgress, ProgressBoard
    from dockd.status.metrics import DockMetrics, ServerTracker

SAFE = "SAFE TO REMOVE"
# States with work still to do on the dock (the queue): the workable ones.
QUEUED = WORKABLE


def clip_view(clip: ClipRecord) -> dict[str, Any]:
    return {
        "id": clip.id,
        "camera": clip.camera,
        "bay": clip.bay,
        "path": display_path(clip.rel_path),
        "size": clip.size,
        "state": clip.state.value,
        "reason": clip.reason,
        "retry_at": clip.retry_at,
        "attempts": clip.attempts,
        "evidence": clip.evidence,
        "recorded_at": clip.recorded_at,
        "officer": clip.metadata.get("officer"),
        "sha256": clip.plaintext_sha256,
        "upload_url": clip.upload_url,
        "held_from": clip.held_from.value if clip.held_from else None,
    }


def progress_view(entry: ClipProgress) -> dict[str, Any]:
    return {
        "clip": entry.clip_id,
        "camera": entry.camera,
        "bay": entry.bay,
        "name": entry.name,
        "stage": entry.stage,
        "done": entry.done,
        "total": entry.total,
        "elapsed": round(time.monotonic() - entry.started, 3),
    }


def _bay_state(
    safe: bool,
    why_not: str | None,
    broken: bool,
    clips: list[ClipRecord],
    session_clips: list[ClipRecord],
    running: list[ClipProgress],
) -> tuple[str, str | None]:
    """(state, reason) as the desk reads it. `broken`: the camera itself cannot be offloaded."""
    if safe:
        return SAFE, None
    if broken:
        return "error", why_not
    stages = {p.stage for p in running}
    if "uploading" in stages:
        counted = [c for c in session_clips if c.state is not State.HELD]
        done = sum(1 for c in counted if c.state in (State.UPLOADED, State.CONFIRMED, State.WIPED))
        # n/m: clips the server already holds in full, of the clips on this docking
        return f"uploading {done}/{len(counted)} clips", None
    if running:
        if stages <= {"confirming"}:
            return "waiting for receipt", None
        return "offloading", None
    stuck = [c for c in clips if c.state in (State.QUARANTINED, State.FAILED)]
    if stuck:
        first = stuck[0]
        reason = f"{display_path(first.rel_path)}: {first.state.value}: {first.reason}"
        if first.retry_at:
            reason += f" (next try {time.strftime('%H:%M:%S', time.localtime(first.retry_at))})"
        return "error", reason
    waiting = [c for c in clips if c.state is State.UPLOADED]
    if waiting:
        return "waiting for receipt", waiting[0].reason
    if why_not == "scanning":
        return "scanning", None
    return "offloading", why_not if why_not != "offloading" else None


# Below this the rate is noise (a zero-byte clip's 200-byte ciphertext), not a basis for an ETA.
MIN_RATE = 1024.0


def bays_view(
    offloader: Offloader, progress: ProgressBoard, metrics: DockMetrics
) -> list[dict[str, Any]]:
    journal = offloader.ctx.journal
    snapshot = progress.snapshot()
    rows = []
    for serial, view in sorted(offloader.views.items(), key=lambda kv: kv[1].camera.bay):
        status = offloader.status(serial)
        every = journal.clips_for_camera(serial, include_wiped=True)
        live = [c for c in every if c.state is not State.WIPED]
        session = [
            c for c in every if c.state is not State.WIPED or c.session == view.camera.session
        ]
        running = [p for p in snapshot if p.camera == serial]
        broken = view.model is None or view.scan_error is not None
        state, reason = _bay_state(
            status.safe_to_remove, status.why_not, broken, live, session, running
        )
        left = sum(c.size for c in live if c.state in QUEUED and c.state is not State.UPLOADED)
        left -= sum(min(p.done, p.total) for p in running if p.stage == "uploading")
        left = max(left, 0)
        rate = metrics.rates.rate(serial) if left and not status.safe_to_remove else 0.0
        rate = rate if rate >= MIN_RATE else 0.0
        rows.append(
            {
                "bay": view.camera.bay,
                "camera": serial,
                "model": view.camera.model,
                "officer": view.camera.officer,
                "state": state,
                "reason": reason,
                "safe_to_remove": status.safe_to_remove,
                "why_not": status.why_not,
                "clips": dict(status.clips),
                "bytes_left": left,
                "throughput": round(rate, 1),
                "eta_seconds": round(left / rate, 1) if rate > 0 and left else None,
                "skipped": [{"path": p, "reason": r} for p, r in view.skipped],
            }
        )
    return rows


def queue_view(offloader: Offloader) -> dict[str, Any]:
    journal: Journal = offloader.ctx.journal
    totals = journal.state_totals()
    docked = [s for s, v in offloader.views.items() if v.model is not None]
    ready = journal.workable(docked, time.time())
    queued = journal.workable(docked, float("inf"))
    return {
        "queued": len(queued),
        "queued_bytes": sum(c.size for c in queued),
        "ready": len(ready),
        "in_flight": offloader.inflight_count(),
        "by_state": {state: {"clips": n, "bytes": b} for state, (n, b) in sorted(totals.items())},
        # clips with work left on cameras that are not docked now (they resume when re-docked)
        "waiting_for_camera": sum(
            n for state, (n, _b) in totals.items() if state in {s.value for s in QUEUED}
        )
        - len(queued),
    }


def status_view(
    offloader: Offloader,
    progress: ProgressBoard,
    metrics: DockMetrics,
    tracker: ServerTracker,
    *,
    dock: str,
    server_url: str,
) -> dict[str, Any]:
    return {
        "dock": dock,
        "daemon": "running",
        "time": time.time(),
        "bays": bays_view(offloader, progress, metrics),
        "queue": queue_view(offloader),
        "server": {"url": server_url, **tracker.as_dict()},
    }


def refresh_gauges(offloader: Offloader, metrics: DockMetrics) -> None:
    """Set the scrape-time gauges from the offloader and the journal."""
    queue = queue_view(offloader)
    metrics.cameras_docked.set(len(offloader.views))
    metrics.clips_queued.set(queue["queued"])
    metrics.queued_bytes.set(queue["queued_bytes"])
    totals = offloader.ctx.journal.state_totals()
    for state in State:
        if state is State.WIPED:
            continue
        metrics.clips_by_state.labels(state.value).set(totals.get(state.value, (0, 0))[0])
