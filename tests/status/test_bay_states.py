"""The bay state the desk reads, from a real journal and the offloader's view of one camera.

No daemon: the camera's last scan is set by hand, so each case is exactly the one named.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from dockd.config import CameraModel
from dockd.control.views import _bay_state
from dockd.devices.source import DockedCamera
from dockd.journal import Journal
from dockd.offloader import CameraView, Offloader
from support.clips import confirmed, new_clip

SAFE = "SAFE TO REMOVE"


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path)


def _offloader(
    journal: Journal, present: dict[bytes, tuple[int, int, int | None]] | None
) -> Offloader:
    offloader = Offloader(SimpleNamespace(journal=journal, health=SimpleNamespace(problem=None)))  # type: ignore[arg-type]
    camera = DockedCamera("CAM1", "m", "bay-1", Path("/nonexistent"), "s1")
    offloader.views["CAM1"] = CameraView(
        camera, CameraModel("m", ("**/*.MP4",)), scans=1, present=present
    )
    return offloader


def _desk(offloader: Offloader) -> tuple[str, str, str | None]:
    status = offloader.status("CAM1")
    clips = offloader.ctx.journal.clips_for_camera("CAM1")
    return _bay_state(status, False, clips, clips, [])


def test_a_held_clip_never_offloaded_reads_removable_never_safe(journal):
    clip = journal.add_clip(new_clip(b"DCIM/A.MP4"))
    journal.hold(clip.id, actor="alice (uid 1000)", reason="officer wants it kept")
    offloader = _offloader(journal, {b"DCIM/A.MP4": (10, 1, None)})
    status = offloader.status("CAM1")
    assert status.safe_to_remove is False and status.removable is True
    state, code, _reason = _desk(offloader)
    assert (state, code) == ("REMOVABLE: 1 clip held, NOT offloaded", "removable_not_offloaded")
    assert SAFE not in state


def test_a_held_clip_the_server_confirmed_is_safe_and_counted_as_kept(journal):
    clip = journal.add_clip(new_clip(b"DCIM/A.MP4"))
    confirmed(journal, clip.id)
    journal.hold(clip.id, actor="alice (uid 1000)", reason="keep a copy on the camera")
    state, code, reason = _desk(_offloader(journal, {b"DCIM/A.MP4": (10, 1, None)}))
    assert (state, code) == (SAFE, "safe_to_remove")
    assert reason is not None and "1 clip kept on the camera" in reason


def test_a_quarantined_version_gone_from_the_camera_is_a_note_not_a_blocker(journal):
    clip = journal.add_clip(new_clip(b"DCIM/A.MP4"))
    journal.quarantine(clip.id, "unreadable on camera: No such file or directory")
    offloader = _offloader(journal, {})  # a complete scan found nothing at that path
    assert offloader.version_present(journal.get(clip.id)) is False
    state, code, reason = _desk(offloader)
    assert (state, code) == (SAFE, "safe_to_remove")
    assert reason is not None and f"dockctl dismiss {clip.id}" in reason


@pytest.mark.parametrize(
    "present",
    [
        {b"DCIM/A.MP4": (10, 1, None)},  # the same version is still there
        {b"DCIM/A.MP4": (99, 7, None)},  # another version at that path: someone must look
        None,  # the scan was truncated or never completed: nothing can be said to be gone
    ],
)
def test_a_quarantined_clip_that_may_still_be_there_keeps_blocking(journal, present):
    clip = journal.add_clip(new_clip(b"DCIM/A.MP4"))
    journal.quarantine(clip.id, "unreadable on camera: Input/output error")
    state, code, reason = _desk(_offloader(journal, present))
    assert (state, code) == ("error", "error")
    assert reason is not None and "DCIM/A.MP4: QUARANTINED" in reason


def test_a_read_only_camera_says_so(journal):
    clip = journal.add_clip(new_clip(b"DCIM/A.MP4"))
    confirmed(journal, clip.id)
    # what the pipeline records when the unlink is refused by a read-only file system
    journal.quarantine(clip.id, "unreadable on camera: Read-only file system")
    state, code, reason = _desk(_offloader(journal, {b"DCIM/A.MP4": (10, 1, None)}))
    assert (state, code) == ("camera read-only", "camera_read_only")
    assert reason is not None and "dockctl release --bay" in reason
