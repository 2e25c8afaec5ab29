"""A confirmed clip whose file is missing is recorded as wiped only when that is what happened."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from dockd import pipeline
from dockd.devices.source import DockedCamera
from dockd.journal import Journal, NewClip, State
from dockd.status.metrics import DockMetrics


def _confirmed(tmp_path: Path, root: Path, session: str):
    journal = Journal.open(tmp_path / "state")
    clip = journal.add_clip(
        NewClip(
            camera="C",
            model="m",
            bay="b",
            rel_path=b"DCIM/A.MP4",
            size=1,
            mtime_ns=1,
            dev=os.stat(root).st_dev,
            ino=1,
            session=session,
            evidence=False,
            recorded_at="t",
            recorded_at_source="mtime",
            metadata={},
        )
    )
    journal.mark_hashed(
        clip.id,
        plaintext_sha256="a" * 64,
        ciphertext_sha256="b" * 64,
        ciphertext_length=300,
        age_header=b"h",
        secrets=b"k" * 32,
    )
    journal.mark_uploading(clip.id, "http://x/files/u")
    journal.mark_uploaded(clip.id)
    clip = journal.mark_confirmed(clip.id, {"policy": "receipt", "length": 300})
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
