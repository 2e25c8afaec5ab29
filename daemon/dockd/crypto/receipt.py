"""The server's signed receipt: proof that an ingest server holds exactly the bytes a dock sent.

Wire format (HTTP response header, on the request that completes an upload and on every later HEAD)::

    Dockd-Receipt: v1.<payload>.<signature>

`payload` is base64url (no padding) of a UTF-8 JSON object; `signature` is base64url (no padding) of
the Ed25519 signature over ``b"dockd-receipt-v1\\n" + payload_bytes`` (the decoded JSON bytes, exactly
as sent: no canonicalisation is needed to verify). The context prefix keeps a receipt signature from
being valid for anything else the same key might sign. JSON members:

    v          1
    upload     the upload id (last path segment of the tus upload URL)
    length     number of bytes stored
    sha256     lowercase hex SHA-256 of the bytes stored
    completed  completion time, RFC 3339 UTC (e.g. "2026-11-21T10:00:00Z")
    kid        key id: first 16 hex digits of SHA-256 of the raw 32-byte Ed25519 public key

A dock wipes a clip only if the receipt verifies under the server key it was configured with, and
`upload`, `length` and `sha256` equal what the dock sent (see `Receipt.matches`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dockd.utc import iso_utc

HEADER = "Dockd-Receipt"
VERSION = 1
_CONTEXT = b"dockd-receipt-v1\n"
_MAX_HEADER = 4096
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ReceiptError(ValueError):
    """The receipt is malformed, not signed by the expected key, or does not match the upload."""


class KeyMismatch(ReceiptError):
    """A well-formed receipt signed by another key than the one configured."""


def _claimed_kid(payload: bytes) -> str:
    """The key id an unverified payload claims, for the operator's message only."""
    try:
        kid = json.loads(payload).get("kid")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return "(unreadable)"
    return kid[:32] if isinstance(kid, str) and kid.isprintable() else "(none)"


def key_id(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ReceiptError("receipt is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ReceiptError(f"receipt is not base64url: {exc}") from None


@dataclass(frozen=True)
class Receipt:
    upload: str
    length: int
    sha256: str
    completed: str
    kid: str
    header_value: str  # the exact signed header, kept so the journal can store and re-verify it

    def matches(self, *, upload: str, length: int, sha256: str) -> bool:
        return self.upload == upload and self.length == length and self.sha256 == sha256.lower()


def sign(
    key: Ed25519PrivateKey, *, upload: str, length: int, sha256: str, completed: dt.datetime
) -> str:
    """Return the `Dockd-Receipt` header value for a completed upload."""
    payload = json.dumps(
        {
            "v": VERSION,
            "upload": upload,
            "length": length,
            "sha256": sha256,
            "completed": iso_utc(completed),
            "kid": key_id(key.public_key()),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    signature = key.sign(_CONTEXT + payload)
    return f"v{VERSION}.{_b64e(payload)}.{_b64e(signature)}"


def verify(header_value: str, public_key: Ed25519PublicKey) -> Receipt:
    """Check the signature and shape of a receipt header; raise ReceiptError if anything is off."""
    if len(header_value) > _MAX_HEADER:
        raise ReceiptError("receipt header too long")
    parts = header_value.strip().split(".")
    if len(parts) != 3 or parts[0] != f"v{VERSION}":
        raise ReceiptError(f"not a v{VERSION} receipt")
    payload, signature = _b64d(parts[1]), _b64d(parts[2])
    try:
        public_key.verify(signature, _CONTEXT + payload)
    except InvalidSignature:
        raise KeyMismatch(
            "receipt signature does not verify under the configured server key"
            f" ({key_id(public_key)}); the receipt names key {_claimed_kid(payload)}"
        ) from None
    try:
        fields = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReceiptError(f"receipt payload is not JSON: {exc}") from None
    if not isinstance(fields, dict) or fields.get("v") != VERSION:
        raise ReceiptError("receipt payload has the wrong version")
    upload, length, digest = fields.get("upload"), fields.get("length"), fields.get("sha256")
    completed, kid = fields.get("completed"), fields.get("kid")
    if not isinstance(upload, str) or not upload:
        raise ReceiptError("receipt has no upload id")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ReceiptError("receipt length is not a non-negative integer")
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise ReceiptError("receipt sha256 is not 64 lowercase hex digits")
    if not isinstance(completed, str) or not isinstance(kid, str):
        raise ReceiptError("receipt lacks completion time or key id")
    return Receipt(upload, length, digest, completed, kid, header_value.strip())
