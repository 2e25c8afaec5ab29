"""The ingest server behind the dock's URL changes while the dock runs: e.g. one `dockd serve`
with the file store (tus concatenation: the one pass) is replaced by the multi-node deployment
on S3, which does not offer concatenation (docs/RECEIVER.md: docks fall back to two passes).
The dock must notice instead of asking for partial uploads the server refuses, for ever."""

from __future__ import annotations

from support.counting_receiver import CountingReceiver
from support.dock import journal_rows, make_bay, wait_for
from support.running_daemon import start_daemon

CHUNK = 64 * 1024


def _states(tmp_path) -> list[str]:
    return [r["state"] for r in journal_rows(tmp_path / "state")]


async def test_a_server_that_stops_offering_concatenation_gets_two_passes(
    tmp_path, receiver: CountingReceiver, keys, recipient
):
    running = await start_daemon(tmp_path, receiver, keys, recipient, chunk_size=CHUNK)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 200_000})
        await wait_for(lambda: _states(tmp_path) == ["WIPED"], what="the first clip, one pass")
        assert journal_rows(tmp_path / "state")[0]["partial_url"]
        receiver.concatenation = False  # the server was replaced by one without it
        make_bay(tmp_path / "bays", "bay-2", "CAM-2", {"DCIM/B.MP4": 200_000})
        await wait_for(
            lambda: _states(tmp_path) == ["WIPED", "WIPED"],
            timeout=20,
            what="the second clip offloaded in two passes",
        )
        second = journal_rows(tmp_path / "state")[1]
        assert second["partial_url"] is None
        assert running.status("CAM-2").safe_to_remove
    finally:
        await running.close()


async def test_a_streamed_clip_whose_server_stopped_concatenating_is_sent_again_in_two_passes(
    tmp_path, fake, keys, recipient
):
    """Streamed to a partial, then the server no longer makes finals: asking for one for ever
    would keep the clip from the server; it is read and sent again in two passes."""
    fake.concatenation = True
    fake.pause()
    running = await start_daemon(tmp_path, fake, keys, recipient, chunk_size=CHUNK)
    try:
        make_bay(tmp_path / "bays", "bay-1", "CAM-1", {"DCIM/A.MP4": 200_000})
        await wait_for(lambda: fake.calls["send"] >= 1, what="the stream under way")
        fake.concatenation = False  # the server was replaced meanwhile
        fake.resume()
        await wait_for(lambda: _states(tmp_path) == ["WIPED"], timeout=20, what="wiped")
        [final] = fake.completed("clip")
        assert not final.partial and final.metadata["sha256"]
    finally:
        await running.close()
