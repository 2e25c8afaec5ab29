"""`confirm()` and `Receipt.matches` with real signed receipts, one field varied at a time.

A receipt is the only thing that licenses a wipe under the default policy: it must name this
upload, this ciphertext length and this ciphertext SHA-256, all of them, and all of each.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.confirm import ConfirmationMismatch, NotConfirmed, confirm
from dockd.crypto import receipt
from dockd.journal import ClipRecord, Journal
from dockd.transport.tus import UploadState
from support.clips import new_clip
from support.lying_server import flip_last_hex_digit

UPLOAD_ID = "5f0c2a9e41d3b7a8"
URL = f"http://127.0.0.1:1080/files/{UPLOAD_ID}"
LENGTH = 300_123
SHA256 = hashlib.sha256(b"the ciphertext the dock sent").hexdigest()
ANOTHER_SHA256 = hashlib.sha256(b"the ciphertext the server kept").hexdigest()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal.open(tmp_path / "state")
    yield opened
    opened.close()


@pytest.fixture
def clip(journal: Journal) -> ClipRecord:
    """An uploaded clip whose ciphertext is LENGTH bytes with SHA256, sent to URL."""
    clip_id = journal.add_clip(new_clip()).id
    journal.mark_hashed(
        clip_id,
        plaintext_sha256="a" * 64,
        ciphertext_sha256=SHA256,
        ciphertext_length=LENGTH,
        age_header=b"hdr",
        secrets=b"k" * 32,
    )
    journal.mark_uploading(clip_id, URL)
    return journal.mark_uploaded(clip_id)


def _signed(key: Ed25519PrivateKey, **changes: Any) -> str:
    fields: dict[str, Any] = {"upload": UPLOAD_ID, "length": LENGTH, "sha256": SHA256}
    fields.update(changes)
    return receipt.sign(key, completed=dt.datetime(2026, 11, 29, tzinfo=dt.UTC), **fields)


def _head(header: str | None, offset: int = LENGTH) -> UploadState:
    return UploadState(URL, offset, LENGTH, header)


def test_receipt_naming_exactly_what_was_sent_confirms(
    clip: ClipRecord, server_key: Ed25519PrivateKey
) -> None:
    header = _signed(server_key)
    record = confirm("receipt", _head(header), clip, server_key.public_key())
    assert record["policy"] == "receipt" and record["receipt"] == header
    assert (record["length"], record["ciphertext_sha256"]) == (LENGTH, SHA256)


OTHER_BYTES = {
    "another upload id": {"upload": "5f0c2a9e41d3b7a9"},
    "one byte more": {"length": LENGTH + 1},
    "one byte less": {"length": LENGTH - 1},
    "sha256 off in its last hex digit": {"sha256": flip_last_hex_digit(SHA256)},
    "sha256 off in its first hex digit": {
        "sha256": ("0" if SHA256[0] != "0" else "1") + SHA256[1:]
    },
    "sha256 of other bytes": {"sha256": ANOTHER_SHA256},
}


@pytest.mark.parametrize("change", OTHER_BYTES.values(), ids=list(OTHER_BYTES))
def test_receipt_naming_other_bytes_is_a_mismatch(
    clip: ClipRecord, server_key: Ed25519PrivateKey, change: dict[str, Any]
) -> None:
    with pytest.raises(ConfirmationMismatch, match="names other bytes"):
        confirm("receipt", _head(_signed(server_key, **change)), clip, server_key.public_key())


def test_receipt_with_upper_case_sha256_is_not_accepted(
    clip: ClipRecord, server_key: Ed25519PrivateKey
) -> None:
    """The format says lowercase hex; a receipt that breaks it is rejected, not reinterpreted."""
    header = _signed(server_key, sha256=SHA256.upper())
    with pytest.raises(NotConfirmed, match="lowercase"):
        confirm("receipt", _head(header), clip, server_key.public_key())


def test_upper_case_hex_on_the_dock_side_is_the_same_hash(
    journal: Journal, server_key: Ed25519PrivateKey
) -> None:
    """Case is notation, not content: the comparison is of the hash, whatever its spelling."""
    clip_id = journal.add_clip(new_clip(b"DCIM/B.MP4")).id
    journal.mark_hashed(
        clip_id,
        plaintext_sha256="a" * 64,
        ciphertext_sha256=SHA256.upper(),
        ciphertext_length=LENGTH,
        age_header=b"hdr",
        secrets=b"k" * 32,
    )
    journal.mark_uploading(clip_id, URL)
    upper = journal.mark_uploaded(clip_id)
    assert confirm("receipt", _head(_signed(server_key)), upper, server_key.public_key())


def test_receipt_signed_by_another_key_is_not_a_confirmation(
    clip: ClipRecord, server_key: Ed25519PrivateKey
) -> None:
    impostor = Ed25519PrivateKey.generate()
    with pytest.raises(NotConfirmed, match="key mismatch"):
        confirm("receipt", _head(_signed(impostor)), clip, server_key.public_key())


def test_no_receipt_under_the_receipt_policy_is_not_a_confirmation(
    clip: ClipRecord, server_key: Ed25519PrivateKey
) -> None:
    with pytest.raises(NotConfirmed, match="no signed receipt"):
        confirm("receipt", _head(None), clip, server_key.public_key())


@pytest.mark.parametrize("policy", ["receipt", "offset"])
def test_server_short_of_the_length_is_not_a_confirmation(
    clip: ClipRecord, server_key: Ed25519PrivateKey, policy: str
) -> None:
    with pytest.raises(NotConfirmed, match=f"{LENGTH - 1} of {LENGTH}"):
        confirm(policy, _head(_signed(server_key), LENGTH - 1), clip, server_key.public_key())


# ---- Receipt.matches, on a verified receipt --------------------------------------------------


@pytest.fixture
def verified(server_key: Ed25519PrivateKey) -> receipt.Receipt:
    return receipt.verify(_signed(server_key), server_key.public_key())


def test_matches_exactly_what_it_names(verified: receipt.Receipt) -> None:
    assert verified.matches(upload=UPLOAD_ID, length=LENGTH, sha256=SHA256)
    assert verified.matches(upload=UPLOAD_ID, length=LENGTH, sha256=SHA256.upper())


@pytest.mark.parametrize(
    "field",
    [
        {"upload": UPLOAD_ID[:-1]},
        {"upload": UPLOAD_ID + "0"},
        {"length": LENGTH + 1},
        {"length": 0},
        {"sha256": flip_last_hex_digit(SHA256)},
        {"sha256": SHA256[:-1]},
        {"sha256": SHA256[:32]},
        {"sha256": ANOTHER_SHA256},
        {"sha256": ""},
    ],
    ids=[
        "upload prefix",
        "upload extended",
        "length +1",
        "length 0",
        "sha256 last hex digit",
        "sha256 one digit short",
        "sha256 half",
        "sha256 other",
        "sha256 empty",
    ],
)
def test_matches_nothing_else(verified: receipt.Receipt, field: dict[str, Any]) -> None:
    expected: dict[str, Any] = {"upload": UPLOAD_ID, "length": LENGTH, "sha256": SHA256}
    expected.update(field)
    assert not verified.matches(**expected)
