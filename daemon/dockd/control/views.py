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
    from dockd.metrics import DockMetrics, ServerTracker
    from dockd.offloader import CameraStatus, Offloader
    from dockd.progress import ClipProgress, ProgressBoard

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
        "reason": operator_reason(clip.state.value, clip.reason),
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


# Machine-readable bay states (`state_code` in `dockctl status --json`): stable identifiers,
# while `state` is the sentence the desk reads.
SAFE_CODE = "safe_to_remove"
REMOVABLE_CODE = "removable_not_offloaded"
KEY_MISMATCH = "receipt key mismatch: check [server] receipt_public_key"
# What confirm.py / crypto/receipt.py record when the receipt's signature fails under the
# configured key: the server signs with another key (or the dock has the wrong public key).
_KEY_MISMATCH_REASON = "does not verify under the configured server key"


def receipt_key_mismatch(reason: str | None) -> bool:
    return (
        reason is not None
        and "server receipt rejected" in reason
        and _KEY_MISMATCH_REASON in reason
    )


READ_ONLY = "camera read-only"
# strerror(EROFS), as the pipeline records an unlink refused by a read-only camera file system.
_EROFS = "Read-only file system"


def camera_read_only(reason: str | None) -> bool:
    return reason is not None and _EROFS in reason


def operator_reason(state: str, reason: str | None) -> str | None:
    """A clip's reason as the desk should read it: the cause to fix first, then the detail."""
    if state == State.UPLOADED.value and receipt_key_mismatch(reason):
        return f"{KEY_MISMATCH} ({reason})"
    if camera_read_only(reason):
        return (
            f"{READ_ONLY}: clips cannot be removed from it (write-protect switch, or mounted "
            f"read-only); once fixed: dockctl release --bay BAY ({reason})"
        )
    return reason


def _bay_state(
    status: CameraStatus,
    broken: bool,
    clips: list[ClipRecord],
    session_clips: list[ClipRecord],
    running: list[ClipProgress],
) -> tuple[str, str, str | None]:
    """(state, state_code, reason) as the desk reads it. `broken`: the camera itself cannot be
    offloaded."""
    notes = "; ".join(status.notes) or None
    if status.safe_to_remove:
        return SAFE, SAFE_CODE, notes
    if status.removable:
        return status.why_not or "REMOVABLE", REMOVABLE_CODE, notes
    if broken:
        return "error", "error", status.why_not
    stale = set(status.gone_quarantined)
    mismatched = [c for c in clips if c.state is State.UPLOADED and receipt_key_mismatch(c.reason)]
    if mismatched:
        # Configuration, not waiting: no receipt from this server will ever verify.
        return (
            KEY_MISMATCH,
            "receipt_key_mismatch",
            (f"{len(mismatched)} uploaded clip(s) unconfirmed: {mismatched[0].reason}"),
        )
    stages = {p.stage for p in running}
    if "uploading" in stages:
        counted = [c for c in session_clips if c.state not in (State.HELD, State.DISMISSED)]
        done = sum(1 for c in counted if c.state in (State.UPLOADED, State.CONFIRMED, State.WIPED))
        # n/m: clips the server already holds in full, of the clips on this docking
        return f"uploading {done}/{len(counted)} clips", "uploading", None
    if running:
        if stages <= {"confirming"}:
            return "waiting for receipt", "waiting_for_receipt", None
        return "offloading", "offloading", None
    stuck = [c for c in clips if c.state in (State.QUARANTINED, State.FAILED) and c.id not in stale]
    if stuck:
        first = stuck[0]
        explained = operator_reason(first.state.value, first.reason)
        reason = f"{display_path(first.rel_path)}: {first.state.value}: {explained}"
        if first.retry_at:
            reason += f" (next try {time.strftime('%H:%M:%S', time.localtime(first.retry_at))})"
        if any(camera_read_only(c.reason) for c in stuck):
            return READ_ONLY, "camera_read_only", reason
        return "error", "error", reason
    waiting = [c for c in clips if c.state is State.UPLOADED]
    if waiting:
        return "waiting for receipt", "waiting_for_receipt", waiting[0].reason
    if status.why_not == "scanning":
        return "scanning", "scanning", None
    why = status.why_not if status.why_not != "offloading" else None
    return "offloading", "offloading", why


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
        closed = (State.WIPED, State.DISMISSED)
        live = [c for c in every if c.state not in closed]
        session = [c for c in every if c.state not in closed or c.session == view.camera.session]
        running = [p for p in snapshot if p.camera == serial]
        broken = view.model is None or view.scan_error is not None
        state, code, reason = _bay_state(status, broken, live, session, running)
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
                "state_code": code,
                "reason": reason,
                "safe_to_remove": status.safe_to_remove,
                "removable": status.removable or status.safe_to_remove,
                "held_not_offloaded": status.held_not_offloaded,
                "kept_on_camera": status.kept_on_camera,
                "notes": list(status.notes),
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
        if state in (State.WIPED, State.DISMISSED):
            continue
        metrics.clips_by_state.labels(state.value).set(totals.get(state.value, (0, 0))[0])
