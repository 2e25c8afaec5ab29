"""A row from a schema-2 journal (no ctime recorded) never lends its confirmation to today's file.

Found in review: the first scan after the upgrade re-bound such a row (session, dev, ino, ctime)
to whatever file sat at its path, so its wipe skipped the content re-hash and could remove a
different clip (same path, size and mtime) that was never uploaded. Only a row not read yet may
take the current file's identity.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.crypto.keys import KeygenResult, load_signing_key
from dockd.journal import Journal
from support.confirmed_row import receipt_confirmation, seed_confirmed
from support.counting_receiver import start_counting_receiver
from support.dock import decrypt_sha256, journal_rows, make_bay, stored_objects, wait_for
from support.dock_daemon import running_daemon

CLIP = "DCIM/100/A.MP4"
SIZE = 200_003


@pytest.fixture
def server_key(keys: KeygenResult) -> Ed25519PrivateKey:
    return load_signing_key(keys.server_signing_key)


def _swap(path: Path) -> str:
    before = os.stat(path)
    other = (hashlib.sha256(b"another clip").digest() * (before.st_size // 32 + 1))[
        : before.st_size
    ]
    with path.open("r+b") as handle:
        handle.write(other)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    return hashlib.sha256(other).hexdigest()


def _row(state_dir: Path, clip_id: int) -> dict:
    return next(r for r in journal_rows(state_dir) if r["id"] == clip_id)


async def test_legacy_held_row_released_after_upgrade_does_not_wipe_another_clip(
    tmp_path: Path, keys: KeygenResult, server_key: Ed25519PrivateKey
) -> None:
    receiver = await start_counting_receiver(tmp_path / "store", keys)
    try:
        bays = tmp_path / "bays"
        bays.mkdir()
        make_bay(bays, "bay-1", "CAM-1", {CLIP: SIZE})
        path = bays / "bay-1" / CLIP
        state_dir = tmp_path / "state"
        old_id = seed_confirmed(state_dir, bays / "bay-1", CLIP, receipt_confirmation(server_key))
        db = sqlite3.connect(state_dir / "journal.db")
        db.execute("UPDATE clips SET ctime_ns = NULL WHERE id = ?", (old_id,))  # as migrated
        db.commit()
        db.close()
        journal = Journal.open(state_dir)
        journal.hold(old_id, actor="test", reason="kept for review")  # held before the upgrade
        journal.close()
        new_digest = _swap(path)
        before = _row(state_dir, old_id)

        async with running_daemon(tmp_path, receiver.url, keys) as daemon:
            await wait_for(
                lambda: (
                    daemon.offloader.views.get("CAM-1")
                    and daemon.offloader.views["CAM-1"].scans >= 2
                ),
                what="two scans of the camera",
            )
            after = _row(state_dir, old_id)
            assert (after["session"], after["ino"], after["ctime_ns"]) == (
                before["session"],
                before["ino"],
                None,
            ), "a scan re-bound the legacy row to today's file"
            daemon.offloader.ctx.journal.release(old_id, actor="test")  # dockctl release
            daemon.offloader.wake()
            await wait_for(
                lambda: _row(state_dir, old_id)["state"] not in ("CONFIRMED", "HELD"),
                what="the legacy row's wipe decided",
            )
            await asyncio.sleep(0.5)
        row = _row(state_dir, old_id)
        assert row["state"] == "QUARANTINED", row  # re-hashed: other bytes, not wiped by this row
        if not path.exists():  # only the new content's own confirmed row may have wiped it
            [wiper] = [r for r in journal_rows(state_dir) if r["state"] == "WIPED"]
            assert wiper["id"] != old_id and wiper["plaintext_sha256"] == new_digest
            [stored] = stored_objects(receiver.store)
            assert decrypt_sha256(stored["data_path"], keys.age_identity) == new_digest
    finally:
        await receiver.stop()
