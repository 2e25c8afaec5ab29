"""The per-clip manifest: what the dock attests about one clip, signed with the dock's Ed25519 key.

A signed manifest is one canonical JSON object (see `canonical.py`) plus a newline::

    {"manifest": {...}, "signature": {"alg": "ed25519", "kid": "<16 hex>", "value": "<b64url>"}}

`value` is the Ed25519 signature over ``b"dockd-manifest-v1\\n" + canonical(manifest)``; the context
prefix keeps it from being valid for anything else the key signs. `kid` is the first 16 hex digits
of SHA-256 of the raw public key (as for receipts). Members of `manifest` are listed in
docs/CUSTODY.md. It is signed when the clip is CONFIRMED (it carries the server's receipt); the
wipe happens after the signature and is recorded in the audit log, never in the manifest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dockd import canonical
from dockd.crypto.receipt import key_id

VERSION = 1
TYPE = "dockd-clip-manifest"
CONTEXT = b"dockd-manifest-v1\n"
MAX_BYTES = 64 << 10


class ManifestError(ValueError):
    """Malformed, or not signed by the expected dock key."""


@dataclass(frozen=True)
class ClipFacts:
    """Everything the manifest states, gathered by the pipeline at CONFIRMED."""

    dock: str
    camera: str
    model: str
    bay: str
    rel_path: bytes
    size: int
    plaintext_sha256: str
    recorded_at: str
    recorded_at_source: str
    evidence: bool
    category: str | None
    incident: str | None
    officer: str | None
    officer_source: str | None
    ciphertext_sha256: str
    ciphertext_length: int
    recipients: tuple[str, ...]
    upload_url: str
    upload_id: str
    confirm_policy: str
    receipt: str | None
    discovered_at: float
    confirmed_at: float
    audit_seq: int
    audit_hash: str


def recipient_fingerprint(recipient: str) -> str:
    """SHA-256 hex of the recipient string (age1…): names the key without repeating it."""
    return hashlib.sha256(recipient.strip().encode("ascii")).hexdigest()


def build(facts: ClipFacts, signed_at: float) -> dict[str, Any]:
    display = facts.rel_path.decode("utf-8", "backslashreplace")
    return {
        "v": VERSION,
        "type": TYPE,
        "dock": facts.dock,
        "clip": {
            "path": display,
            "path_b64": base64.b64encode(facts.rel_path).decode("ascii"),
            "size": facts.size,
            "sha256": facts.plaintext_sha256,
            "recorded_at": facts.recorded_at,
            "recorded_at_source": facts.recorded_at_source,
            "evidence": facts.evidence,
            "category": facts.category,
            "incident": facts.incident,
        },
        "camera": {"serial": facts.camera, "model": facts.model, "bay": facts.bay},
        "officer": {"name": facts.officer, "source": facts.officer_source},
        "ciphertext": {
            "format": "age-v1",
            "sha256": facts.ciphertext_sha256,
            "length": facts.ciphertext_length,
            "recipients": [recipient_fingerprint(r) for r in facts.recipients],
        },
        "upload": {
            "url": facts.upload_url,
            "id": facts.upload_id,
            "confirm": facts.confirm_policy,
            "receipt": facts.receipt,
        },
        "times": {
            "discovered": canonical.rfc3339(facts.discovered_at),
            "confirmed": canonical.rfc3339(facts.confirmed_at),
            "signed": canonical.rfc3339(signed_at),
        },
        "audit": {"seq": facts.audit_seq, "hash": facts.audit_hash},
    }


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ManifestError(f"signature is not base64url: {exc}") from None


def sign(manifest: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    """The signed manifest file's bytes (canonical JSON + newline)."""
    signature = key.sign(CONTEXT + canonical.dumps(manifest))
    envelope = {
        "manifest": manifest,
        "signature": {
            "alg": "ed25519",
            "kid": key_id(key.public_key()),
            "value": _b64e(signature),
        },
    }
    return canonical.dumps(envelope) + b"\n"


def verify(data: bytes, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Return the manifest if its signature holds under `public_key`; raise ManifestError if not."""
    if len(data) > MAX_BYTES:
        raise ManifestError(f"manifest larger than {MAX_BYTES} bytes")
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    if not isinstance(envelope, dict) or set(envelope) != {"manifest", "signature"}:
        raise ManifestError("not a signed manifest (expected members manifest, signature)")
    manifest, signature = envelope["manifest"], envelope["signature"]
    if not isinstance(manifest, dict) or not isinstance(signature, dict):
        raise ManifestError("manifest and signature must be objects")
    if signature.get("alg") != "ed25519" or not isinstance(signature.get("value"), str):
        raise ManifestError("signature must be ed25519 with a base64url value")
    if signature.get("kid") != key_id(public_key):
        raise ManifestError(
            f"signed by dock key {signature.get('kid')!r}, not by the given key {key_id(public_key)}"
        )
    try:
        public_key.verify(_b64d(signature["value"]), CONTEXT + canonical.dumps(manifest))
    except (InvalidSignature, ValueError):
        raise ManifestError("signature does not verify: the manifest was changed") from None
    if manifest.get("v") != VERSION or manifest.get("type") != TYPE:
        raise ManifestError(f"not a v{VERSION} {TYPE}")
    return manifest
