"""Per-clip secrets sealed under a key file beside the journal.

The age file key and payload nonce are needed to re-create byte-identical ciphertext on resume.
They are sealed (ChaCha20-Poly1305 under a 32-byte key in a 0600 file, the clip id as associated
data) so a copied journal alone does not decrypt uploads, and erased once the clip is CONFIRMED.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from dockd.journal.records import JournalError


class Sealer:
    """Seals per-clip secrets under a 32-byte key kept in a 0600 file beside the journal."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)

    @classmethod
    def from_key_file(cls, path: Path) -> Sealer:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            from dockd.crypto.keys import KeyFileError, check_private_file

            # JournalError, not KeyFileError: `dockd run` maps it to one line and exit 78, so
            # systemd stops instead of restarting into the same refusal every few seconds.
            try:
                check_private_file(path)
                key = path.read_bytes()
            except KeyFileError as exc:
                raise JournalError(f"sealing key: {exc}") from None
            except OSError as exc:
                raise JournalError(f"{path}: cannot read sealing key: {exc.strerror}") from None
            if len(key) != 32:
                raise JournalError(f"{path}: sealing key must be 32 bytes") from None
            return cls(key)
        key = os.urandom(32)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        return cls(key)

    def seal(self, clip_id: int, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, f"dockd-clip:{clip_id}".encode())

    def open(self, clip_id: int, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], f"dockd-clip:{clip_id}".encode())
        except InvalidTag:
            raise JournalError(
                f"clip {clip_id}: sealed key material does not open with this dock's sealing key"
            ) from None
