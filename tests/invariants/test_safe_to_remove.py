""" "SAFE TO REMOVE" means every clip on the camera is stored, confirmed and wiped.

The offloader's verdict for a docked camera, taken from the real journal with one clip in each
state. Only a wiped clip lets the camera go (HELD has its own rules and is left out here); a
CONFIRMED clip is on the server but still on the camera, so the camera is not free yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dockd.crypto.keys import KeygenResult
from dockd.devices.source import DockedCamera
from dockd.journal import ClipRecord, Journal, State
from dockd.offloader import CameraView, Offloader
from dockd.pipeline import PipelineContext
from dockd.progress import ProgressBoard
from support import clips
from support.dock import dock_config, settings_from

SERIAL = "CAM-1"


@pytest.fixture
def offloader(tmp_path: Path, keys: KeygenResult) -> Iterator[Offloader]:
    """An offloader with CAM-1 docked and scanned once, dispatching nothing."""
    recipient = keys.age_recipient.read_text().strip()
    data = dock_config(
        tmp_path, "http://127.0.0.1:9/files/", recipient, public_key=keys.server_public_key
    )
    settings = settings_from(tmp_path, data)
    journal = Journal.open(settings.dock.state_dir)
    ctx = PipelineContext(settings, journal, None, None, ProgressBoard())  # type: ignore[arg-type]
    running = Offloader(ctx)
    camera = DockedCamera(SERIAL, "cam", "bay-1", tmp_path / "bays" / "bay-1", "this-docking")
    running.views[SERIAL] = CameraView(camera, settings.model("cam"), scans=1)
    yield running
    journal.close()


def _new(journal: Journal) -> int:
    return journal.add_clip(clips.new_clip(camera=SERIAL, session="this-docking")).id


def _uploaded(journal: Journal, clip_id: int) -> ClipRecord:
    clips.uploading(journal, clip_id)
    return journal.mark_uploaded(clip_id)


def _wiped(journal: Journal, clip_id: int) -> ClipRecord:
    clips.confirmed(journal, clip_id)
    return journal.mark_wiped(clip_id)


# How to bring a fresh clip to each state, through the journal's own transitions.
TO_STATE: dict[State, Callable[[Journal, int], ClipRecord]] = {
    State.DISCOVERED: lambda journal, clip_id: journal.get(clip_id),
    State.STREAMING: clips.streaming,
    State.HASHED: clips.hashed,
    State.UPLOADING: clips.uploading,
    State.UPLOADED: _uploaded,
    State.CONFIRMED: clips.confirmed,
    State.QUARANTINED: lambda journal, clip_id: journal.quarantine(clip_id, "changed"),
    State.FAILED: lambda journal, clip_id: journal.mark_failed(clip_id, "503", time.time() + 60),
    State.WIPED: _wiped,
    # closed by an operator once its version left the camera: no longer on the camera's account
    State.DISMISSED: lambda journal, clip_id: journal.dismiss(
        journal.quarantine(clip_id, "changed").id, actor="test", reason="gone from the camera"
    ),
}
CLOSED = (State.WIPED, State.DISMISSED)
UNSETTLED = [s for s in State if s not in (*CLOSED, State.HELD)]


def test_every_state_is_covered() -> None:
    assert set(TO_STATE) == set(State) - {State.HELD}


def test_control_a_camera_whose_clips_are_all_wiped_is_safe(offloader: Offloader) -> None:
    journal = offloader.ctx.journal
    for _ in range(2):
        assert _wiped(journal, _new(journal)).state is State.WIPED
    status = offloader.status(SERIAL)
    assert status.safe_to_remove, status.why_not
    assert status.clips["WIPED"] == 2


@pytest.mark.parametrize("state", UNSETTLED, ids=[s.value for s in UNSETTLED])
def test_one_clip_not_wiped_keeps_the_camera(offloader: Offloader, state: State) -> None:
    journal = offloader.ctx.journal
    _wiped(journal, _new(journal))  # the others are done: this one clip decides
    assert TO_STATE[state](journal, _new(journal)).state is state
    status = offloader.status(SERIAL)
    assert not status.safe_to_remove, f"safe to remove with a clip {state.value}"
    assert status.why_not


def test_only_clip_confirmed_with_the_wipe_deferred_is_not_safe(offloader: Offloader) -> None:
    """Stored and confirmed on the server, but still on the camera: not free for the next shift."""
    journal = offloader.ctx.journal
    clip_id = _new(journal)
    clips.confirmed(journal, clip_id, policy="receipt")
    journal.note(clip_id, "camera read-only: the clip is stored and confirmed but not removed")
    status = offloader.status(SERIAL)
    assert not status.safe_to_remove
    assert "CONFIRMED" in (status.why_not or "") and "read-only" in (status.why_not or "")
