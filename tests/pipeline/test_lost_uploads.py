"""A server that keeps losing the clip's upload (a partial gone at its final's creation, an upload
gone at its first PATCH): the clip is sent again once at once, then waits with a reason.

Each loss sends the clip back (forget_partial: to DISCOVERED, a whole new camera read;
forget_upload: to HASHED, a new upload). Without a bound the clip's task went round that loop
as fast as the server answered, re-reading the camera each time, with no reason on the clip and
no back-off.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from support.dock import journal_rows, make_bay, wait_for
from support.fake_uploader import FakeUploader
from support.running_daemon import start_daemon

CLIP = "DCIM/A.MP4"
SIZE = 300_000
CHUNK = 64 * 1024


@pytest.mark.parametrize("concatenation", [True, False], ids=["one-pass", "two-pass"])
async def test_a_server_that_keeps_losing_uploads_parks_the_clip_with_a_reason(
    tmp_path, fake: FakeUploader, keys, recipient, concatenation
):
    fake.concatenation = concatenation
    fake.lose_uploads()
    running = await start_daemon(
        tmp_path,
        fake,
        keys,
        recipient,
        chunk_size=CHUNK,
        failure_backoff=60.0,
        failure_backoff_max=120.0,
    )
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(
            lambda: (
                journal_rows(tmp_path / "state")
                and journal_rows(tmp_path / "state")[0]["state"] == "FAILED"
            ),
            timeout=15,
            what="the clip parked as FAILED",
        )
        created = fake.calls["create"]
        await asyncio.sleep(1.0)  # a loop would go on creating uploads meanwhile
        [row] = journal_rows(tmp_path / "state")
        assert row["state"] == "FAILED"
        assert "lost" in row["reason"]
        assert row["retry_at"] > time.time() + 30  # the failure back-off, not at once
        assert fake.calls["create"] == created <= 2  # made once, made again once: no more
        # The camera was read at most twice (the first read, and the one after the first loss).
        assert running.daemon.metrics.read_bytes._value.get() <= 2 * SIZE
        assert not running.status().safe_to_remove
        assert (tmp_path / "bays/bay-1" / CLIP).stat().st_size == SIZE
    finally:
        await running.close()


async def test_a_final_upload_the_server_lost_starts_the_clip_again_at_once(
    tmp_path, fake: FakeUploader, keys, recipient
):
    """The final was made of the partial, so losing the final loses both: one loss, sent again
    at once (not a second loss found by asking for a final of the used-up partial)."""
    fake.concatenation = True
    status = fake.status
    lost: list[str] = []

    async def lose_the_first_final(url: str):
        if not lost and fake.uploads[url].metadata.get("sha256"):
            lost.append(url)
            fake.forget(url)  # expired on the server before the dock asked for its receipt
        return await status(url)

    fake.status = lose_the_first_final  # type: ignore[method-assign]
    running = await start_daemon(
        tmp_path,
        fake,
        keys,
        recipient,
        chunk_size=CHUNK,
        failure_backoff=60.0,
        failure_backoff_max=120.0,
    )
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {CLIP: SIZE})
        await wait_for(
            lambda: (rows := journal_rows(tmp_path / "state")) and rows[0]["state"] == "WIPED",
            timeout=15,
            what="wiped after the lost final, without the failure back-off",
        )
        assert lost
        assert running.daemon.metrics.read_bytes._value.get() == 2 * SIZE
    finally:
        await running.close()
