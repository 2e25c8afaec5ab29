"""Deciding that the server holds exactly the bytes sent: the confirmation policies.

`receipt` (default): the server's Ed25519-signed receipt must verify under the configured key and
name this upload, the ciphertext length and the ciphertext SHA-256 computed when the clip was hashed.
`offset` (opt-in, for third-party tus servers that cannot hash): the server's offset equals the
length. Weaker: it proves a byte count, not the bytes. Never the default.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dockd.crypto import receipt
from dockd.journal import ClipRecord
from dockd.transport.uploader import UploadState
from dockd.utc import now_utc


class NotConfirmed(Exception):
    """The server cannot (yet) confirm: keep the clip, say why, ask again later."""


class ConfirmationMismatch(Exception):
    """The server confirms different bytes than were sent: keep the clip and flag it."""


def upload_id(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def confirm(
    policy: str,
    state: UploadState,
    clip: ClipRecord,
    server_key: Ed25519PublicKey | None,
) -> dict[str, Any]:
    """Return the confirmation record to store durably, or raise NotConfirmed / ConfirmationMismatch."""
    assert clip.ciphertext_length is not None and clip.ciphertext_sha256 is not None
    if state.offset != clip.ciphertext_length:
        raise NotConfirmed(f"server holds {state.offset} of {clip.ciphertext_length} bytes")
    record: dict[str, Any] = {
        "policy": policy,
        "upload_url": state.url,
        "length": clip.ciphertext_length,
        "ciphertext_sha256": clip.ciphertext_sha256,
        "at": now_utc(),
    }
    if policy == "offset":
        return record
    if state.receipt is None:
        raise NotConfirmed(
            'uploaded, but the server gave no signed receipt and confirm = "receipt": the clip '
            "stays on the camera (use a receipt-capable server, or knowingly set confirm = "
            '"offset")'
        )
    assert server_key is not None
    try:
        signed = receipt.verify(state.receipt, server_key)
    except receipt.KeyMismatch as exc:
        raise NotConfirmed(
            f"receipt key mismatch: check [server] receipt_public_key (server receipt rejected: "
            f"{exc})"
        ) from None
    except receipt.ReceiptError as exc:
        raise NotConfirmed(f"server receipt rejected: {exc}") from None
    if not signed.matches(
        upload=upload_id(state.url), length=clip.ciphertext_length, sha256=clip.ciphertext_sha256
    ):
        raise ConfirmationMismatch(
            f"server receipt names other bytes (upload {signed.upload}, {signed.length} bytes, "
            f"sha256 {signed.sha256}) than were sent (upload {upload_id(state.url)}, "
            f"{clip.ciphertext_length} bytes, sha256 {clip.ciphertext_sha256})"
        )
    record["receipt"] = signed.header_value
    return record


def recheck(clip: ClipRecord, server_key: Ed25519PublicKey | None) -> None:
    """Before wiping: the journal's durable confirmation still proves these exact bytes."""
    conf = clip.confirmation
    if conf is None:
        raise ConfirmationMismatch("no durable confirmation recorded")
    if (
        conf.get("length") != clip.ciphertext_length
        or conf.get("ciphertext_sha256") != clip.ciphertext_sha256
    ):
        raise ConfirmationMismatch("recorded confirmation does not match the clip's ciphertext")
    if conf.get("policy") == "receipt":
        if server_key is None:
            raise ConfirmationMismatch("receipt confirmation but no server key to check it")
        try:
            signed = receipt.verify(conf["receipt"], server_key)
        except (receipt.ReceiptError, KeyError) as exc:
            raise ConfirmationMismatch(f"recorded receipt no longer verifies: {exc}") from None
        if not signed.matches(
            upload=upload_id(conf["upload_url"]),
            length=clip.ciphertext_length or 0,
            sha256=clip.ciphertext_sha256 or "",
        ):
            raise ConfirmationMismatch("recorded receipt names other bytes")
