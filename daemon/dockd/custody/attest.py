"""At CONFIRMED: sign the clip's manifest, keep it on the dock, send it to the server.

Order and why:
1. Build and sign once, at CONFIRMED (the manifest carries the server's receipt). A stored
   manifest is never re-signed: a restart re-sends the same bytes.
2. Keep it durably before anything else: `state_dir/manifests/<clip id>.json` (fsync'd) and the
   journal (`clips.manifest`, with a `manifest.signed` audit record naming its SHA-256).
3. Send it as a second small tus upload whose metadata `manifest_for` names the clip's upload id,
   *before* the wipe, so normally the server holds clip and manifest while the camera still
   holds the clip. A failed send never blocks the wipe: the wipe's proof is the receipt for the
   clip's bytes (invariant 1), and the manifest is already durable on the dock. The failure is an
   audit record (`manifest.upload_failed`); the send is bounded by MANIFEST_SEND_SECONDS.
   Manifests left unsent are re-sent after the next manifest that does reach the server (the
   server is back), a few at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockd import canonical
from dockd.config import Settings
from dockd.confirm import upload_id
from dockd.custody import manifest as manifests
from dockd.durable import replace_file
from dockd.journal import ClipRecord, Journal, JournalError
from dockd.transport import uploader

log = structlog.get_logger()

MANIFEST_DIR = "manifests"
MANIFEST_SEND_SECONDS = 60.0
RESEND_BATCH = 4
# (journal, clip id) of manifests being sent now: concurrent clips must not send one twice.
_sending: set[tuple[str, int]] = set()


class HasSettings(Protocol):
    settings: Settings


def facts(ctx: HasSettings, clip: ClipRecord, audit_head: tuple[int, str]) -> manifests.ClipFacts:
    assert clip.confirmation is not None and clip.upload_url is not None
    assert clip.plaintext_sha256 and clip.ciphertext_sha256 and clip.ciphertext_length is not None
    station = ctx.settings.officers.get(clip.camera)
    camera_officer = clip.metadata.get("officer")
    if station:
        officer, source = station, "station"
    elif isinstance(camera_officer, str) and camera_officer:
        officer, source = camera_officer, "camera"
    else:
        officer, source = None, None
    try:
        confirmed = canonical.parse_rfc3339(str(clip.confirmation.get("at"))).timestamp()
    except ValueError:
        confirmed = clip.updated_at

    def text(key: str) -> str | None:
        value = clip.metadata.get(key)
        return value if isinstance(value, str) and value else None

    return manifests.ClipFacts(
        dock=ctx.settings.dock.id,
        camera=clip.camera,
        model=clip.model,
        bay=clip.bay,
        rel_path=clip.rel_path,
        size=clip.size,
        plaintext_sha256=clip.plaintext_sha256,
        recorded_at=clip.recorded_at,
        recorded_at_source=clip.recorded_at_source,
        evidence=clip.evidence,
        category=text("category"),
        incident=text("incident"),
        officer=officer,
        officer_source=source,
        ciphertext_sha256=clip.ciphertext_sha256,
        ciphertext_length=clip.ciphertext_length,
        recipients=tuple(str(r) for r in ctx.settings.recipients),
        upload_url=clip.upload_url,
        upload_id=upload_id(clip.upload_url),
        confirm_policy=str(clip.confirmation.get("policy")),
        receipt=clip.confirmation.get("receipt"),
        discovered_at=clip.discovered_at,
        confirmed_at=confirmed,
        audit_seq=audit_head[0],
        audit_hash=audit_head[1],
    )


def write_file(directory: Path, name: str, data: bytes) -> Path:
    """Write a manifest durably into `directory` (it must survive a power cut: sync the dir)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    path = directory / name
    replace_file(path, data)
    return path


@dataclass
class Attestation:
    """Signs, keeps and sends the manifest of each CONFIRMED clip (handed to the pipeline).

    `dock_key` None: manifests are off (no [dock] signing_key configured, docs/CUSTODY.md).
    """

    settings: Settings
    journal: Journal
    uploader: uploader.Uploader
    dock_key: Ed25519PrivateKey | None

    async def attest(self, clip: ClipRecord) -> None:
        """Sign (once), store and send the manifest of a CONFIRMED clip. Never raises (but cancels)."""
        key = self.dock_key
        if key is None:
            return  # no [dock] signing_key configured: manifests are off (docs/CUSTODY.md)
        journal = self.journal
        try:
            text, sent = journal.manifest(clip.id)
            if text is None:
                signed = manifests.sign(
                    manifests.build(facts(self, clip, journal.audit_head()), time.time()), key
                )
                await asyncio.to_thread(
                    write_file,
                    self.settings.dock.state_dir / MANIFEST_DIR,
                    f"{clip.id}.json",
                    signed,
                )
                journal.store_manifest(clip.id, signed.decode("utf-8"))
                text = signed.decode("utf-8")
        except (OSError, sqlite3.Error, JournalError) as exc:
            log.error("manifest.failed", clip=clip.id, reason=str(exc))
            journal.audit(
                "manifest.failed",
                f"clip {clip.id}",
                component="pipeline",
                outcome="failure",
                detail={"reason": str(exc)[:300]},
            )
            return
        if sent is not None or clip.upload_url is None:
            return
        if await self._send(clip.id, clip.upload_url, text.encode("utf-8")):
            for pending_id, pending, pending_url in journal.unsent_manifests(RESEND_BATCH):
                if not await self._send(pending_id, pending_url, pending.encode("utf-8")):
                    break

    async def _send(self, clip_id: int, clip_url: str, data: bytes) -> bool:
        """Upload one manifest; True when the server has it (or another task is sending it)."""
        key = (str(self.journal.path), clip_id)
        if key in _sending:
            return True
        _sending.add(key)
        try:
            return await self._send_once(clip_id, clip_url, data)
        finally:
            _sending.discard(key)

    async def _send_once(self, clip_id: int, clip_url: str, data: bytes) -> bool:
        digest = hashlib.sha256(data).hexdigest()
        metadata = {
            "manifest_for": upload_id(clip_url),
            "filename": f"{upload_id(clip_url)}.manifest.json",
            "type": "dockd-manifest-v1",
            "dock": self.settings.dock.id,
            "sha256": digest,
            "size": str(len(data)),
        }

        def open_stream(start: int) -> AsyncIterator[bytes]:
            async def blocks() -> AsyncIterator[bytes]:
                yield data[start:]

            return blocks()

        try:
            async with asyncio.timeout(MANIFEST_SEND_SECONDS):
                url = await self.uploader.create(len(data), metadata)
                await self.uploader.send(url, len(data), open_stream)
        except (uploader.UploadError, TimeoutError) as exc:
            log.warning("manifest.upload_failed", clip=clip_id, reason=str(exc))
            self.journal.audit(
                "manifest.upload_failed",
                f"clip {clip_id}",
                component="pipeline",
                outcome="failure",
                detail={"reason": str(exc)[:300], "kept": f"{MANIFEST_DIR}/{clip_id}.json"},
            )
            return False
        self.journal.manifest_sent(clip_id, url)
        log.info("manifest.uploaded", clip=clip_id, upload=url)
        return True
