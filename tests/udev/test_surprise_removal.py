"""Surprise removal mid-upload, through the real daemon (journal, pipeline, tus, receiver).

The camera's "mounted" storage is a prepared directory (umockdev devices cannot be mounted);
udev events, matching, docking, undocking, and the release after the wipe are the real ones.
"""

from __future__ import annotations

import os

from dockd.crypto.keys import keygen
from support.counting_receiver import start_counting_receiver
from support.dock import journal_rows, wait_for

from .conftest import CAMERA, FIXTURES, pytestmark, udev_config, write_config

__all__ = ["pytestmark"]

CAMERA_PORT4 = FIXTURES / "bwv-camera-port4.umockdev"  # the same camera (serial), another bay
CHUNK = 64 * 1024


async def test_unplugged_mid_upload_wipes_nothing_and_resumes_when_back(tmp_path, start_bed):
    keys = keygen(tmp_path / "keys")
    receiver = await start_counting_receiver(tmp_path / "store", keys)
    try:
        receiver.patch_delay = 0.05  # slow enough that the unplug lands mid-upload
        data = udev_config(tmp_path, receiver.url)
        data["server"] = {
            "url": receiver.url,
            "confirm": "receipt",
            "receipt_public_key": str(keys.server_public_key),
        }
        data["encryption"] = {"recipients": [keys.age_recipient.read_text().strip()]}
        data["upload"] = {"chunk_size": CHUNK, "retry_initial": 0.05, "retry_max": 0.5}
        config = write_config(tmp_path / "dockd.toml", data)
        base = tmp_path / "standin"
        clip = base / "BWV0001234" / "DCIM" / "100MEDIA" / "CLIP0001.MP4"
        clip.parent.mkdir(parents=True)
        content = os.urandom(2 << 20)  # 32 chunks
        clip.write_bytes(content)
        state = tmp_path / "state"

        bed = await start_bed("daemon", base, config)
        await bed.send(start=True)
        await bed.send(add=CAMERA)
        await wait_for(lambda: receiver.patches >= 3, what="the upload under way")
        await bed.send(unplug=CAMERA)
        await bed.wait_event("camera.undocked")
        [row] = journal_rows(state)
        assert row["state"] not in ("CONFIRMED", "WIPED"), row["state"]
        # one pass (the receiver offers concatenation): the bytes go to a partial upload
        assert row["partial_url"], "the journal keeps the upload for resume"
        assert clip.read_bytes() == content, "nothing was wiped"
        assert [e["lazy"] for e in await bed.wait_event("mount.unmounted")] == [True]
        assert not bed.events("camera.safe_to_remove")

        receiver.patch_delay = 0.0
        await bed.send(add=CAMERA_PORT4)  # back, in another bay: same serial, same upload
        await wait_for(lambda: [r["state"] for r in journal_rows(state)] == ["WIPED"], what="WIPED")
        [done] = journal_rows(state)
        assert done["partial_url"] == row["partial_url"]
        assert not clip.exists()
        # Resumed from the server's offset: one upload, the bytes sent about once.
        assert len(receiver.patch_bytes) == 1
        assert sum(receiver.patch_bytes.values()) <= done["ciphertext_length"] + 2 * CHUNK
        # Every clip wiped: unmounted (not lazily) and reported safe to remove.
        [safe] = await bed.wait_event("camera.safe_to_remove")
        assert safe["serial"] == "BWV0001234"
        assert [e["lazy"] for e in await bed.wait_event("mount.unmounted", 2)] == [True, False]
    finally:
        await receiver.stop()
