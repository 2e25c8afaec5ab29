"""A journal row left CONFIRMED from an earlier docking, for a real file in a bay folder.

This is the state a dock is in when the wipe was deferred (camera read-only, a writer present) or
the camera was pulled between confirmation and wipe: the next docking takes the row straight to
the wipe. Tests change one thing about it (the server key the dock trusts, the journalled
confirmation, the policy, the file) and check that the wipe still refuses.

The receipt is a real one, signed with the test's server key; the ciphertext hash and length are
made up (nothing at the wipe re-reads the server), the plaintext hash is the file's own unless
given.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dockd.crypto import receipt
from dockd.devices.camera import FileIdentity
from dockd.journal import Journal, NewClip

EARLIER_SESSION = "earlier-docking"
UPLOAD_URL = "http://127.0.0.1:9/files/0123456789abcdef"
CIPHERTEXT_LENGTH = 4242
CIPHERTEXT_SHA256 = hashlib.sha256(b"the ciphertext the server confirmed").hexdigest()


def signed_receipt(
    key: Ed25519PrivateKey,
    *,
    upload: str = UPLOAD_URL.rsplit("/", 1)[-1],
    length: int = CIPHERTEXT_LENGTH,
    sha256: str = CIPHERTEXT_SHA256,
) -> str:
    return receipt.sign(
        key, upload=upload, length=length, sha256=sha256, completed=dt.datetime.now(dt.UTC)
    )


def receipt_confirmation(key: Ed25519PrivateKey, **changes: Any) -> dict[str, Any]:
    """What `confirm()` journals for a receipt-confirmed upload; `changes` replace fields."""
    record: dict[str, Any] = {
        "policy": "receipt",
        "upload_url": UPLOAD_URL,
        "length": CIPHERTEXT_LENGTH,
        "ciphertext_sha256": CIPHERTEXT_SHA256,
        "at": "2026-11-29T00:00:00+00:00",
        "receipt": signed_receipt(key),
    }
    record.update(changes)
    return record


def seed_confirmed(
    state_dir: Path,
    camera_root: Path,
    rel_path: str,
    confirmation: dict[str, Any],
    *,
    serial: str = "CAM-1",
    bay: str = "bay-1",
    plaintext_sha256: str | None = None,
) -> int:
    """Journal the file at `camera_root/rel_path` as CONFIRMED in an earlier docking; its id."""
    path = camera_root / rel_path
    ident = FileIdentity.from_stat(os.stat(path))
    digest = plaintext_sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
    journal = Journal.open(state_dir)
    try:
        clip = journal.add_clip(
            NewClip(
                camera=serial,
                model="cam",
                bay=bay,
                rel_path=os.fsencode(rel_path),
                size=ident.size,
                mtime_ns=ident.mtime_ns,
                ctime_ns=ident.ctime_ns,
                dev=ident.dev,
                ino=ident.ino,
                session=EARLIER_SESSION,
                evidence=False,
                recorded_at="2026-11-29T00:00:00Z",
                recorded_at_source="mtime",
                metadata={},
            )
        )
        journal.mark_hashed(
            clip.id,
            plaintext_sha256=digest,
            ciphertext_sha256=CIPHERTEXT_SHA256,
            ciphertext_length=CIPHERTEXT_LENGTH,
            age_header=b"age-encryption.org/v1 (test)",
            secrets=b"k" * 32,
        )
        journal.mark_uploading(clip.id, UPLOAD_URL)
        journal.mark_uploaded(clip.id)
        journal.mark_confirmed(clip.id, confirmation)
        return clip.id
    finally:
        journal.close()
