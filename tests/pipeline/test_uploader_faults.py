"""What the dock does when the ingest side misbehaves at the seam, through the fake uploader.

The same behaviours are proven against the real receiver (tests/invariants, tests/transport,
tests/faults); here each fault is injected exactly, so each test takes about a second.
"""

from __future__ import annotations

from pathlib import Path

from support.dock import (
    decrypt_sha256,
    journal_rows,
    make_bay,
    wait_for,
)
from support.fake_uploader import FakeUploader
from support.running_daemon import RunningDaemon, start_daemon

CLIP = "DCIM/A.MP4"
SIZE = 600_000


async def _start(tmp_path: Path, fake: FakeUploader, keys, recipient: str) -> RunningDaemon:
    return await start_daemon(tmp_path, fake, keys, recipient)


def _clip_rows(tmp_path: Path) -> list[dict]:
    return journal_rows(tmp_path / "state")


def _state(tmp_path: Path) -> str | None:
    rows = _clip_rows(tmp_path)
    return rows[0]["state"] if rows else None


async def test_a_response_lost_after_the_commit_resends_nothing_and_wipes(
    tmp_path, fake, keys, recipient
):
    fake.lose_response_after_commit()
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: _state(tmp_path) == "WIPED", what="wipe after the lost answer")
        [upload] = fake.completed("clip")
        assert upload.received == upload.length  # the retry asked first, and sent nothing again
        [obj] = fake.stored_objects(tmp_path / "server-copy")
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests[CLIP]
    finally:
        await running.close()


async def test_a_receipt_for_other_bytes_quarantines_and_keeps_the_clip(
    tmp_path, fake, keys, recipient
):
    fake.sign_other_bytes()
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: _state(tmp_path) == "QUARANTINED", what="quarantine")
        assert "sha256" in _clip_rows(tmp_path)[0]["reason"].lower()
        assert (tmp_path / "bays/bay-1" / CLIP).stat().st_size == SIZE
        assert not running.daemon.offloader.status("CAM-1").safe_to_remove
    finally:
        await running.close()


async def test_an_upload_the_server_lost_is_made_again_and_the_clip_arrives(
    tmp_path, fake, keys, recipient
):
    fake.pause()
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: fake.calls["send"] >= 1, what="an upload under way")
        [lost] = list(fake.uploads)
        fake.forget(lost)  # expired on the server while the dock was sending
        fake.resume()
        await wait_for(lambda: _state(tmp_path) == "WIPED", what="wipe of the recreated upload")
        [obj] = fake.stored_objects(tmp_path / "server-copy")
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests[CLIP]
        assert lost not in fake.uploads and fake.calls["create"] == 2
    finally:
        await running.close()


async def test_refused_credentials_are_a_named_state_and_recover_without_an_operator(
    tmp_path, fake, keys, recipient
):
    fake.refuse("credentials")
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: _state(tmp_path) == "FAILED", what="a failed clip")
        assert "refuses this dock (credentials)" in _clip_rows(tmp_path)[0]["reason"]
        assert (tmp_path / "bays/bay-1" / CLIP).exists()
        fake.refuse(None)  # the token was fixed on the server
        await wait_for(lambda: _state(tmp_path) == "WIPED", what="wipe after the fix")
    finally:
        await running.close()
