"""A confirmed clip whose file is missing is recorded as wiped only when that is what happened."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from dockd import pipeline
from dockd.devices.source import DockedCamera
from dockd.journal import Journal, State
from dockd.metrics import DockMetrics
from support.clips import confirmed, new_clip


def _confirmed(tmp_path: Path, root: Path, session: str):
    journal = Journal.open(tmp_path / "state")
    clip = journal.add_clip(new_clip(camera="C", dev=os.stat(root).st_dev, session=session))
    clip = confirmed(journal, clip.id, policy="receipt")
    ctx = SimpleNamespace(journal=journal, metrics=DockMetrics())
    camera = DockedCamera(serial="C", model="m", bay="b", root=root, session=session)
    return ctx, clip, camera


def test_missing_file_in_its_directory_is_recorded_as_wiped_with_a_note(tmp_path):
    root = tmp_path / "camera"
    (root / "DCIM").mkdir(parents=True)
    ctx, clip, camera = _confirmed(tmp_path, root, "s1")
    wiped = pipeline._missing(ctx, clip, camera)
    assert wiped.state is State.WIPED
    assert "already missing" in ctx.journal.history(clip.id)[-1][4]


def test_missing_directory_is_not_recorded_as_a_wipe(tmp_path):
    root = tmp_path / "camera"
    root.mkdir()  # DCIM is gone: bay folder moved, card reformatted, another partition...
    ctx, clip, camera = _confirmed(tmp_path, root, "s1")
    with pytest.raises(pipeline.WipeDeferred, match="not recorded as wiped"):
        pipeline._missing(ctx, clip, camera)
    assert ctx.journal.get(clip.id).state is State.CONFIRMED
