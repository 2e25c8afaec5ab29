"""A re-docked camera holding a different clip at the same path, size and mtime keeps it until
its own content is uploaded and confirmed.

The journal still has the row of the clip read at an earlier docking, CONFIRMED (its wipe was
deferred, or the camera was pulled before it). Since then the camera got a new clip under the
same name, of the same size, with the same mtime (a reformatted card, reused names, fixed-size
segments, a camera clock stuck at its epoch). Inode numbers are not comparable across dockings,
so only the content can tell: the old row must not wipe it, and what does wipe it is a row whose
confirmed upload decrypts (with the real `age` CLI) to the new content.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.crypto.keys import KeygenResult
from support.confirmed_row import receipt_confirmation, seed_confirmed
from support.counting_receiver import CountingReceiver, start_counting_receiver
from support.dock import decrypt_sha256, journal_rows, make_bay, stored_objects, wait_for
from support.dock_daemon import running_daemon

CLIP = "DCIM/100/A.MP4"
SIZE = 200_003


@pytest.fixture
async def receiver(tmp_path: Path, keys: KeygenResult) -> AsyncIterator[CountingReceiver]:
    running = await start_counting_receiver(tmp_path / "store", keys)
    yield running
    await running.stop()


def _swap_content_keeping_size_and_mtime(path: Path) -> str:
    """Write other bytes over the clip in place, put its mtime back; the new SHA-256."""
    before = os.stat(path)
    other = hashlib.sha256(b"another clip").digest() * (before.st_size // 32 + 1)
    other = other[: before.st_size]
    with path.open("r+b") as handle:
        handle.write(other)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return hashlib.sha256(other).hexdigest()


def _by_state(state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in journal_rows(state_dir):
        rows.setdefault(row["state"], []).append(row)
    return rows


def _row(state_dir: Path, clip_id: int) -> dict[str, Any]:
    return next(r for r in journal_rows(state_dir) if r["id"] == clip_id)


def _decided(state_dir: Path, old_id: int) -> dict[str, list[dict[str, Any]]] | None:
    """Once the old row left CONFIRMED and some row wiped the file (or nothing more can)."""
    rows = _by_state(state_dir)
    old_open = any(r["id"] == old_id for r in rows.get("CONFIRMED", []))
    return rows if not old_open and "WIPED" in rows else None


async def test_other_clip_same_path_size_mtime_is_uploaded_before_it_is_wiped(
    tmp_path: Path, keys: KeygenResult, server_key: Ed25519PrivateKey, receiver: CountingReceiver
) -> None:
    bays = tmp_path / "bays"
    bays.mkdir()
    old_digest = make_bay(bays, "bay-1", "CAM-1", {CLIP: SIZE})[CLIP]
    path = bays / "bay-1" / CLIP
    state_dir = tmp_path / "state"
    old_id = seed_confirmed(state_dir, bays / "bay-1", CLIP, receipt_confirmation(server_key))
    new_digest = _swap_content_keeping_size_and_mtime(path)
    assert new_digest != old_digest

    async with running_daemon(tmp_path, receiver.url, keys):
        rows = await wait_for(lambda: _decided(state_dir, old_id), what="the re-dock settled")

    [old] = [r for state in rows.values() for r in state if r["id"] == old_id]
    assert old["state"] == "QUARANTINED", f"the old row was {old['state']}: it wiped the new clip"
    assert "not the one uploaded" in old["reason"]
    [wiper] = rows["WIPED"]
    assert wiper["id"] != old_id and wiper["plaintext_sha256"] == new_digest
    assert not path.exists()
    # What the row that wiped it confirmed is the new content, as the evidence service reads it.
    [stored] = stored_objects(receiver.store)
    assert stored["metadata"]["sha256"] == new_digest
    assert wiper["upload_url"].rstrip("/").endswith(stored["data_path"].stem)
    assert decrypt_sha256(stored["data_path"], keys.age_identity) == new_digest


def _dock_with_identical_stat(tmp_path: Path, server_key: Ed25519PrivateKey) -> tuple[int, str]:
    """Where nothing in stat tells the clips apart (a camera file system whose reported ctime
    does not move with the content, inode numbers that repeat across mounts), the old row holds
    the new file's very identity with the old content's hash. Returns the old row's id and the
    new content's SHA-256."""
    bays = tmp_path / "bays"
    bays.mkdir()
    old_digest = make_bay(bays, "bay-1", "CAM-1", {CLIP: SIZE})[CLIP]
    new_digest = _swap_content_keeping_size_and_mtime(bays / "bay-1" / CLIP)
    old_id = seed_confirmed(
        tmp_path / "state",
        bays / "bay-1",
        CLIP,
        receipt_confirmation(server_key),
        plaintext_sha256=old_digest,
    )
    return old_id, new_digest


async def test_other_clip_with_identical_stat_is_not_wiped_by_the_old_row(
    tmp_path: Path, keys: KeygenResult, server_key: Ed25519PrivateKey, receiver: CountingReceiver
) -> None:
    old_id, new_digest = _dock_with_identical_stat(tmp_path, server_key)
    state_dir = tmp_path / "state"
    async with running_daemon(tmp_path, receiver.url, keys) as daemon:
        old = await wait_for(
            lambda: (row := _row(state_dir, old_id))["state"] != "CONFIRMED" and row,
            what="the old row's wipe decided",
        )
        assert not daemon.offloader.status("CAM-1").safe_to_remove
    assert old["state"] == "QUARANTINED", f"the old row was {old['state']}: it wiped the new clip"
    path = tmp_path / "bays" / "bay-1" / CLIP
    if path.exists():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == new_digest
    else:  # only the new content's own confirmed row may have wiped it, after its upload
        [wiper] = [r for r in journal_rows(state_dir) if r["state"] == "WIPED"]
        assert wiper["id"] != old_id and wiper["plaintext_sha256"] == new_digest
        [stored] = stored_objects(receiver.store)
        assert decrypt_sha256(stored["data_path"], keys.age_identity) == new_digest


async def test_other_clip_with_identical_stat_is_offloaded_as_a_new_version(
    tmp_path: Path, keys: KeygenResult, server_key: Ed25519PrivateKey, receiver: CountingReceiver
) -> None:
    old_id, new_digest = _dock_with_identical_stat(tmp_path, server_key)
    state_dir = tmp_path / "state"
    async with running_daemon(tmp_path, receiver.url, keys):
        rows = await wait_for(lambda: _decided(state_dir, old_id), timeout=10, what="new version")
    [wiper] = rows["WIPED"]
    assert wiper["plaintext_sha256"] == new_digest
    [stored] = stored_objects(receiver.store)
    assert decrypt_sha256(stored["data_path"], keys.age_identity) == new_digest
    # The old row, superseded by content, no longer keeps the camera (its bytes are confirmed on
    # the server and no longer on the camera): a note, not a blocker.
    [old] = [r for r in journal_rows(state_dir) if r["id"] == old_id]
    assert old["state"] == "QUARANTINED" and old["superseded_at"] is not None
