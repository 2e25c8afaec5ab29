"""The one pass (server with tus concatenation) through the fake uploader: each fault exactly.

Invariant 1 holds on this path too: the receipt is checked against the hashes of exactly the
bytes read and sent, a file changed on the camera mid-stream is never wiped, and a partial the
server lost sends the clip again from the start. The real-process measurements (rchar, kill -9)
are in test_one_read.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from support.adversary import rewrite_in_place
from support.dock import decrypt_sha256, journal_rows, make_bay, wait_for
from support.fake_uploader import FakeUploader
from support.running_daemon import RunningDaemon, start_daemon

CLIP = "DCIM/A.MP4"
SIZE = 600_000
CHUNK = 64 * 1024


async def _start(tmp_path: Path, fake: FakeUploader, keys, recipient: str) -> RunningDaemon:
    fake.concatenation = True
    return await start_daemon(tmp_path, fake, keys, recipient, chunk_size=CHUNK)


def _state(tmp_path: Path) -> str | None:
    rows = journal_rows(tmp_path / "state")
    return rows[0]["state"] if rows else None


def _history(tmp_path: Path) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "state" / "journal.db")
    try:
        return [r[0] for r in conn.execute("SELECT to_state FROM transitions ORDER BY id")]
    finally:
        conn.close()


async def test_one_pass_reads_and_sends_each_byte_once(tmp_path, fake, keys, recipient):
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: _state(tmp_path) == "WIPED", what="wipe")
        metrics = running.daemon.metrics
        assert metrics.read_bytes._value.get() == SIZE  # one camera read, counted
        assert metrics.reread_bytes._value.get() == 0
        [final] = fake.completed("clip")
        assert final.received == 0  # the final was made of the partial: nothing sent twice
        assert fake.blocks * CHUNK >= final.length > (fake.blocks - 1) * CHUNK
        assert final.metadata["sha256"] == digests[CLIP]  # the custody hash reached the server
        [obj] = fake.stored_objects(tmp_path / "server-copy")
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests[CLIP]
        assert _history(tmp_path)[:4] == ["DISCOVERED", "STREAMING", "HASHED", "UPLOADING"]
    finally:
        await running.close()


async def test_a_response_lost_after_the_last_byte_rehashes_and_sends_nothing(
    tmp_path, fake, keys, recipient
):
    fake.lose_response_after_commit()
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: _state(tmp_path) == "WIPED", what="wipe after the lost answer")
        metrics = running.daemon.metrics
        # The server held every byte: the clip was read once more to hash it, sent no more.
        assert metrics.reread_bytes._value.get() == SIZE
        assert metrics.read_bytes._value.get() == 2 * SIZE
        [obj] = fake.stored_objects(tmp_path / "server-copy")
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests[CLIP]
        assert sum(u.received for u in fake.uploads.values()) == 0  # partial gone, final made
    finally:
        await running.close()


async def test_a_partial_the_server_lost_sends_the_clip_again(tmp_path, fake, keys, recipient):
    fake.pause()
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: fake.calls["send"] >= 1, what="the stream under way")
        [lost] = list(fake.uploads)
        fake.forget(lost)  # the partial expired on the server
        fake.resume()
        await wait_for(lambda: _state(tmp_path) == "WIPED", what="wipe of the clip sent again")
        [obj] = fake.stored_objects(tmp_path / "server-copy")
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests[CLIP]
        assert "DISCOVERED" in _history(tmp_path)[1:]  # forget_partial: back to the start
    finally:
        await running.close()


async def test_a_clip_rewritten_mid_stream_is_never_wiped(tmp_path, fake, keys, recipient):
    fake.pause()
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: fake.calls["send"] >= 1, what="the stream under way")
        path = tmp_path / "bays/bay-1" / CLIP
        rewrite_in_place(path, os.urandom(SIZE))  # same size and mtime; only ctime tells
        fake.resume()
        await wait_for(lambda: _state(tmp_path) == "QUARANTINED", what="quarantine")
        # Caught by the one pass itself (identity re-checked before the last block is sent),
        # not only later by the wipe's re-hash.
        assert "changed on the camera" in journal_rows(tmp_path / "state")[0]["reason"]
        assert path.stat().st_size == SIZE
        assert not fake.completed("clip"), "no final upload for bytes the camera changed"
        assert not running.daemon.offloader.status("CAM-1").safe_to_remove
    finally:
        await running.close()


async def test_a_receipt_for_other_bytes_quarantines_the_one_pass_clip(
    tmp_path, fake, keys, recipient
):
    fake.sign_other_bytes()
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: _state(tmp_path) == "QUARANTINED", what="quarantine")
        assert (tmp_path / "bays/bay-1" / CLIP).stat().st_size == SIZE
    finally:
        await running.close()


async def test_a_ctime_only_change_mid_stream_is_settled_by_content(
    tmp_path, fake, keys, recipient
):
    """A chmod (or a hard link made or removed elsewhere) moves ctime but not the bytes: the
    pass reads the file again to prove it, and the clip goes on instead of being quarantined."""
    fake.block_delay = 0.3  # ~3 s for the clip's 10 blocks
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        # A block arrived: the pass has the file open and checked (a change before the open
        # is one "since discovery", refused as ever).
        await wait_for(lambda: fake.blocks >= 1, what="the stream under way")
        path = tmp_path / "bays/bay-1" / CLIP
        before = path.stat().st_ctime_ns
        await wait_for(lambda: (path.chmod(0o640), path.stat().st_ctime_ns != before)[1])
        assert fake.blocks * CHUNK < SIZE, "changed before the last block was read"
        await wait_for(lambda: _state(tmp_path) == "WIPED", what="wipe")
        # (Discovery keys file versions by ctime too, so it also recorded the chmod'ed file as
        # a version of its own; that row is not this test's business.)
        obj = fake.stored_objects(tmp_path / "server-copy")[0]  # the first version's final
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests[CLIP]
    finally:
        await running.close()


async def test_a_final_whose_answer_was_lost_is_found_again_not_made_twice(
    tmp_path, fake, keys, recipient
):
    """The dock asks again for the final upload it could not journal: the server answers with
    the one it made, so nothing is read or sent again and there is one stored copy."""
    fake.lose_final_response()
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        digests = make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: _state(tmp_path) == "WIPED", what="wipe after the lost answer")
        [final] = fake.completed("clip")
        assert fake.calls["create_final"] == 2
        assert running.daemon.metrics.read_bytes._value.get() == SIZE  # read once
        assert fake.blocks * CHUNK < final.length + CHUNK  # each block sent once
        [obj] = fake.stored_objects(tmp_path / "server-copy")
        assert decrypt_sha256(obj["data_path"], keys.age_identity) == digests[CLIP]
    finally:
        await running.close()


async def test_a_clip_quarantined_mid_stream_leaves_no_unfinished_upload_on_the_server(
    tmp_path, fake, keys, recipient
):
    """A partial that will never be finished is ended on the server, not left to expire: it
    counts against the dock's unfinished-upload quota there (100 by default, kept for 7 days),
    so a camera whose clips change mid-stream could otherwise stop every bay's offload."""
    fake.pause()
    running = await _start(tmp_path, fake, keys, recipient)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(lambda: fake.calls["send"] >= 1, what="the stream under way")
        [partial] = list(fake.uploads)
        rewrite_in_place(tmp_path / "bays/bay-1" / CLIP, os.urandom(SIZE))
        fake.resume()
        await wait_for(lambda: _state(tmp_path) == "QUARANTINED", what="quarantine")
        await wait_for(lambda: partial not in fake.uploads, timeout=10, what="partial ended")
        assert fake.calls["terminate"] == 1
        [row] = journal_rows(tmp_path / "state")
        assert "changed on the camera" in row["reason"]
    finally:
        await running.close()
