"""The bay verdict as a pure function (bay_status.camera_status): every reason, in its order.

Mutation testing showed these branches were reached by no test that looked at them: a camera
still scanning, one whose clips are still in flight, a clip held open by a writer, and a row
superseded by other content that must keep blocking until a later scan has seen the new file.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dockd.bay_status import camera_status
from dockd.config import CameraModel
from dockd.devices.camera import FileIdentity, FoundClip, ScanLimits
from dockd.devices.source import DockedCamera
from dockd.discovery import CameraView, _Pending
from dockd.journal import Journal
from support.clips import confirmed, new_clip

LIMITS = ScanLimits()


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path)


def _view(**fields) -> CameraView:
    camera = DockedCamera("CAM1", "m", "bay-1", Path("/nonexistent"), "s1")
    return CameraView(camera, CameraModel("m", ("**/*.MP4",)), **{"scans": 1, **fields})


def _verdict(journal: Journal, view: CameraView, busy: int = 0, problem: str | None = None):
    every = journal.clips_for_camera("CAM1", include_wiped=True)
    return camera_status(view, every, busy, problem, LIMITS)


def _wiped(journal: Journal, path: bytes) -> None:
    clip = journal.add_clip(new_clip(path))
    confirmed(journal, clip.id)
    journal.mark_wiped(clip.id)


def test_a_camera_not_scanned_yet_is_scanning(journal):
    assert _verdict(journal, _view(scans=0)).why_not == "scanning"
    assert _verdict(journal, _view(scans=1)).safe_to_remove


def test_clips_in_flight_keep_the_camera_even_when_every_row_is_wiped(journal):
    _wiped(journal, b"DCIM/A.MP4")
    assert _verdict(journal, _view(), busy=0).safe_to_remove
    status = _verdict(journal, _view(), busy=1)
    assert not status.safe_to_remove and status.why_not == "offloading"


def test_the_dock_own_condition_comes_first(journal):
    _wiped(journal, b"DCIM/A.MP4")
    status = _verdict(journal, _view(), problem="dock disk full: /var/lib/dockd, 0.1 MB free")
    assert not status.safe_to_remove and status.why_not.startswith("dock disk full")


def test_a_clip_open_for_writing_is_named_as_such(journal):
    ident = FileIdentity(1, 2, 10, 3, 4)
    writing = FoundClip(b"DCIM/W.MP4", ident, None, None, writing=True)
    settling = FoundClip(b"DCIM/S.MP4", ident, None, None)
    now = time.monotonic()
    view = _view(
        pending={b"DCIM/W.MP4": _Pending(writing, now), b"DCIM/S.MP4": _Pending(settling, now)}
    )
    status = _verdict(journal, view)
    assert status.why_not == (
        "2 clip(s) still being written or settling (1 open for writing by another process)"
    )
    only_settling = _view(pending={b"DCIM/S.MP4": _Pending(settling, now)})
    assert _verdict(journal, only_settling).why_not == "1 clip(s) still being written or settling"


def test_an_unreadable_location_names_its_path_and_reason(journal):
    view = _view(skipped=[("DCIM/100", "unreadable: Input/output error")])
    assert _verdict(journal, view).why_not == (
        "1 possible clip location(s) could not be read, so clips may remain "
        "(DCIM/100: unreadable: Input/output error)"
    )


def test_a_superseded_row_blocks_until_a_scan_that_started_after_the_proof(journal):
    clip = journal.add_clip(new_clip(b"DCIM/A.MP4"))
    confirmed(journal, clip.id)
    superseded = journal.supersede(clip.id, "other bytes at this path")
    proof = superseded.superseded_at
    assert proof is not None
    present = {b"DCIM/A.MP4": (10, 1, None)}
    before = _verdict(journal, _view(present=present, scanned_from=proof - 1))
    at_once = _verdict(journal, _view(present=present, scanned_from=proof))
    after = _verdict(journal, _view(present=present, scanned_from=proof + 1))
    assert not before.safe_to_remove and not at_once.safe_to_remove
    assert after.safe_to_remove and after.gone_quarantined == (clip.id,)


def test_the_stuck_clip_named_is_the_failed_or_quarantined_one(journal):
    held = journal.add_clip(new_clip(b"DCIM/H.MP4"))
    confirmed(journal, held.id)
    journal.hold(held.id, actor="alice", reason="kept")
    bad = journal.add_clip(new_clip(b"DCIM/Q.MP4"))
    journal.quarantine(bad.id, "file replaced")
    status = _verdict(journal, _view(present={b"DCIM/Q.MP4": (10, 1, None)}))
    assert status.why_not == "DCIM/Q.MP4: QUARANTINED: file replaced"
