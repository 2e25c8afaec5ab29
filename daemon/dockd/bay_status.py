"""Whether a docked camera is safe to remove, and if not, why: one verdict per camera.

"SAFE TO REMOVE" means every clip on the camera is stored and confirmed (WIPED, or HELD with the
server's confirmation), every file the last scan found was recorded and settled, nothing is being
written, and the dock can record what it does. Anything else is another state that says what is
left: the first reason that applies, in the order of `camera_status`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from dockd.devices.camera import DEPTH_REASON, ScanLimits, display_path
from dockd.discovery import CameraView
from dockd.journal import SETTLED, ClipRecord, State


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


def version_present(view: CameraView | None, clip: ClipRecord) -> bool | None:
    """Is this clip's exact file version (path, size, mtime, ctime) on its camera now, as the
    last complete scan saw it? None when that cannot be told (camera not docked, not scanned
    yet, scan truncated, or the path was unreadable). A row from before ctime was recorded
    matches on (size, mtime)."""
    if view is None or view.present is None or view.scan_error is not None:
        return None
    if display_path(clip.rel_path) in {path for path, _reason in view.skipped}:
        return None
    found = view.present.get(clip.rel_path)
    if found is None:
        return False
    size, mtime_ns, ctime_ns = found
    return (size, mtime_ns) == (clip.size, clip.mtime_ns) and clip.ctime_ns in (None, ctime_ns)


def _gone(view: CameraView, clip: ClipRecord) -> bool:
    """No file at all is at this clip's path on the camera (a replaced version still holds
    the path: that row keeps blocking until someone looks)."""
    if version_present(view, clip) is not False:
        return False
    assert view.present is not None
    return clip.rel_path not in view.present


def camera_status(
    view: CameraView,
    every: list[ClipRecord],
    busy: int,
    dock_problem: str | None,
    limits: ScanLimits,
) -> CameraStatus:
    """The verdict for one camera from its view, all its journal rows (wiped included), the
    number of its clips in flight and the dock's own condition."""
    serial = view.camera.serial
    closed = (State.WIPED, State.DISMISSED)
    clips = [c for c in every if c.state not in closed]
    # Counts cover this docking: the live clips plus those closed since it was docked.
    counts = Counter(
        c.state.value for c in every if c.state not in closed or c.session == view.camera.session
    )
    gone = [
        c
        for c in clips
        if c.state is State.QUARANTINED and (_superseded_and_rescanned(view, c) or _gone(view, c))
    ]
    gone_ids = {c.id for c in gone}
    clips = [c for c in clips if c.id not in gone_ids]
    held = [c for c in clips if c.state is State.HELD]
    not_offloaded = [c for c in held if c.confirmation is None]
    kept = [c for c in held if c.confirmation is not None]
    why_not: str | None = None
    if view.model is None:
        why_not = f"unknown camera model {view.camera.model!r}: not offloaded"
    elif dock_problem:
        why_not = dock_problem
    elif view.scan_error:
        why_not = view.scan_error
    elif view.scans == 0:
        why_not = "scanning"
    elif view.truncated:
        why_not = (
            f"the camera holds more than {limits.max_entries} entries: not every file "
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
            if c.state in (State.QUARANTINED, State.FAILED) or (c.reason and c.state not in SETTLED)
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
