"""The wipe re-proves the journalled confirmation: a CONFIRMED row is not a licence to wipe.

Each test starts from a clip left CONFIRMED by an earlier docking (its wipe was deferred), changes
one thing the wipe must re-check, docks the camera again, and asserts what a court cares about:
the file is still on the camera, byte for byte, and the bay is not safe to remove.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.app import Daemon
from dockd.crypto.keys import KeygenResult, keygen
from support.confirmed_row import (
    CIPHERTEXT_LENGTH,
    CIPHERTEXT_SHA256,
    receipt_confirmation,
    seed_confirmed,
    signed_receipt,
)
from support.dock import journal_rows, make_bay, wait_for
from support.dock_daemon import running_daemon
from support.lying_server import flip_last_hex_digit

CLIP = "DCIM/100/A.MP4"
NO_SERVER = "http://127.0.0.1:9/files/"  # the wipe never needs the server: nothing listens here


def _row(state_dir: Path) -> dict[str, Any]:
    [row] = journal_rows(state_dir)
    return row


def _settled(state_dir: Path) -> dict[str, Any] | None:
    """The row once the wipe decided: wiped, quarantined, or deferred with a reason."""
    row = _row(state_dir)
    return row if row["state"] != "CONFIRMED" or row["reason"] else None


async def _dock_again(
    tmp_path: Path, keys: KeygenResult, confirmation: dict[str, Any], **config: Any
) -> tuple[dict[str, Any], bytes, Daemon]:
    bay = tmp_path / "bays"
    bay.mkdir()
    digests = make_bay(bay, "bay-1", "CAM-1", {CLIP: 100_003})
    original = (bay / "bay-1" / CLIP).read_bytes()
    assert hashlib.sha256(original).hexdigest() == digests[CLIP]
    seed_confirmed(tmp_path / "state", bay / "bay-1", CLIP, confirmation)
    async with running_daemon(tmp_path, NO_SERVER, keys, **config) as daemon:
        row = await wait_for(lambda: _settled(tmp_path / "state"), what="the wipe's decision")
        status = daemon.offloader.status("CAM-1")
        assert not status.safe_to_remove, "a clip still on the camera, yet safe to remove"
        assert status.why_not
    return row, original, daemon


def _still_there(tmp_path: Path, original: bytes) -> None:
    path = tmp_path / "bays" / "bay-1" / CLIP
    assert path.exists(), "wiped although the confirmation no longer proves the bytes"
    assert path.read_bytes() == original


async def test_control_a_confirmation_that_still_verifies_is_wiped(
    tmp_path: Path, keys: KeygenResult, server_key: Ed25519PrivateKey
) -> None:
    """Without this, every refusal below could be the seeded row being unwipeable anyway."""
    bay = tmp_path / "bays"
    bay.mkdir()
    make_bay(bay, "bay-1", "CAM-1", {CLIP: 100_003})
    seed_confirmed(tmp_path / "state", bay / "bay-1", CLIP, receipt_confirmation(server_key))
    async with running_daemon(tmp_path, NO_SERVER, keys) as daemon:
        await wait_for(lambda: _row(tmp_path / "state")["state"] == "WIPED", what="wiped")
        await wait_for(lambda: daemon.offloader.status("CAM-1").safe_to_remove, what="safe")
    assert not (bay / "bay-1" / CLIP).exists()


async def test_server_key_changed_in_config_not_wiped(
    tmp_path: Path, keys: KeygenResult, server_key: Ed25519PrivateKey
) -> None:
    other = keygen(tmp_path / "other-keys")
    row, original, _ = await _dock_again(
        tmp_path, keys, receipt_confirmation(server_key), public_key=other.server_public_key
    )
    assert row["state"] == "QUARANTINED", row
    assert "no longer verifies" in row["reason"]
    _still_there(tmp_path, original)


# Each way the journalled confirmation can stop proving the clip's ciphertext: altered in the row
# (a bug, a damaged or edited journal), or a receipt, genuinely signed, for something else.
ALTERED = {
    "ciphertext hash in the record": {"ciphertext_sha256": flip_last_hex_digit(CIPHERTEXT_SHA256)},
    "length in the record": {"length": CIPHERTEXT_LENGTH + 1},
    "receipt for a hash one hex digit off": {
        "receipt": {"sha256": flip_last_hex_digit(CIPHERTEXT_SHA256)}
    },
    "receipt for another upload": {"receipt": {"upload": "fedcba9876543210"}},
    "receipt for another length": {"receipt": {"length": CIPHERTEXT_LENGTH - 1}},
    "receipt missing": {"receipt": None},
}


@pytest.mark.parametrize("change", ALTERED.values(), ids=list(ALTERED))
async def test_confirmation_altered_in_the_journal_not_wiped(
    tmp_path: Path, keys: KeygenResult, server_key: Ed25519PrivateKey, change: dict[str, Any]
) -> None:
    fields = dict(change)
    if "receipt" in fields:
        signed = fields.pop("receipt")
        fields["receipt"] = None if signed is None else signed_receipt(server_key, **signed)
    confirmation = receipt_confirmation(server_key, **fields)
    if confirmation["receipt"] is None:
        del confirmation["receipt"]
    row, original, _ = await _dock_again(tmp_path, keys, confirmation)
    assert row["state"] == "QUARANTINED", row
    _still_there(tmp_path, original)


async def test_offset_confirmation_after_policy_change_to_receipt_not_wiped(
    tmp_path: Path, keys: KeygenResult
) -> None:
    """Confirmed under `confirm = "offset"`, docked again under `confirm = "receipt"`."""
    offset_only = {
        "policy": "offset",
        "upload_url": "http://127.0.0.1:9/files/0123456789abcdef",
        "length": CIPHERTEXT_LENGTH,
        "ciphertext_sha256": CIPHERTEXT_SHA256,
        "at": "2026-11-29T00:00:00+00:00",
    }
    row, original, _ = await _dock_again(tmp_path, keys, offset_only, confirm="receipt")
    assert row["state"] == "CONFIRMED" and 'confirm = "receipt"' in row["reason"], row
    _still_there(tmp_path, original)
