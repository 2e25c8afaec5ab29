"""The pipeline's transitions: each clip's way from discovered to wiped, one commit per step.

Which states each step may leave is declared once, in `transitions.STEPS`; an UPDATE that
matches no row raises instead of silently doing nothing, so a bug cannot, say, wipe a clip that
is not CONFIRMED.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from dockd.journal import chain
from dockd.journal.core import JournalCore
from dockd.journal.records import ClipRecord, NewClip, State


class ClipTransitions(JournalCore):
    def add_clip(self, clip: NewClip) -> ClipRecord:
        now = time.time()
        with self._tx():
            cur = self._conn.execute(
                "INSERT INTO clips(camera, model, bay, rel_path, size, mtime_ns, dev, ino, session, "
                "state, evidence, recorded_at, recorded_at_source, metadata, discovered_at, "
                "updated_at, ctime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    clip.camera,
                    clip.model,
                    clip.bay,
                    clip.rel_path,
                    clip.size,
                    clip.mtime_ns,
                    clip.dev,
                    clip.ino,
                    clip.session,
                    State.DISCOVERED.value,
                    int(clip.evidence),
                    clip.recorded_at,
                    clip.recorded_at_source,
                    json.dumps(clip.metadata, sort_keys=True),
                    now,
                    now,
                    clip.ctime_ns,
                ),
            )
            clip_id = cur.lastrowid
            assert clip_id is not None
            self._conn.execute(
                "INSERT INTO transitions(clip_id, at, from_state, to_state, actor, detail) "
                "VALUES (?, ?, NULL, ?, 'dockd', ?)",
                (clip_id, now, State.DISCOVERED.value, f"size={clip.size}"),
            )
            chain.append(
                self._conn,
                component="offloader",
                event="clip.discovered",
                subject=f"clip {clip_id}",
                detail={
                    "camera": clip.camera,
                    "bay": clip.bay,
                    "path": clip.rel_path.decode("utf-8", "backslashreplace"),
                    "size": clip.size,
                    "evidence": clip.evidence,
                },
                at=now,
            )
        self._anchor()
        return self.get(clip_id)

    def seen_in_session(
        self, clip_id: int, session: str, dev: int, ino: int, bay: str, ctime_ns: int | None
    ) -> None:
        """Record where the file is in the current docking (device numbers change across docks)."""
        with self._tx():
            self._conn.execute(
                "UPDATE clips SET session = ?, dev = ?, ino = ?, bay = ?, "
                "ctime_ns = coalesce(?, ctime_ns) WHERE id = ?",
                (session, dev, ino, bay, ctime_ns, clip_id),
            )

    def mark_hashed(
        self,
        clip_id: int,
        *,
        plaintext_sha256: str,
        ciphertext_sha256: str,
        ciphertext_length: int,
        age_header: bytes,
        secrets: bytes,
    ) -> ClipRecord:
        return self._transition(
            clip_id,
            "hash",
            detail=f"sha256={plaintext_sha256}",
            plaintext_sha256=plaintext_sha256,
            ciphertext_sha256=ciphertext_sha256,
            ciphertext_length=ciphertext_length,
            age_header=age_header,
            sealed_secrets=self._sealer.seal(clip_id, secrets),
            reason=None,
            retry_at=None,
        )

    def mark_streaming(
        self,
        clip_id: int,
        *,
        partial_url: str,
        ciphertext_length: int,
        age_header: bytes,
        secrets: bytes,
    ) -> ClipRecord:
        """The one pass starts: everything a resume needs (the partial upload, and the header and
        key that make the ciphertext identical again) is durable before a byte is sent."""
        return self._transition(
            clip_id,
            "open_partial",
            detail=partial_url,
            partial_url=partial_url,
            ciphertext_length=ciphertext_length,
            age_header=age_header,
            sealed_secrets=self._sealer.seal(clip_id, secrets),
            reason=None,
            retry_at=None,
        )

    def mark_streamed(
        self, clip_id: int, *, plaintext_sha256: str, ciphertext_sha256: str
    ) -> ClipRecord:
        """The one pass read the last byte: the hashes of exactly the bytes read and sent."""
        return self._transition(
            clip_id,
            "streamed",
            detail=f"sha256={plaintext_sha256}",
            plaintext_sha256=plaintext_sha256,
            ciphertext_sha256=ciphertext_sha256,
            reason=None,
            retry_at=None,
        )

    def forget_partial(self, clip_id: int, why: str) -> ClipRecord:
        """The server lost the partial upload: start the clip again (a new key, a new read)."""
        return self._transition(
            clip_id,
            "forget_partial",
            detail=why,
            partial_url=None,
            upload_url=None,
            plaintext_sha256=None,
            ciphertext_sha256=None,
            ciphertext_length=None,
            age_header=None,
            sealed_secrets=None,
        )

    def mark_uploading(self, clip_id: int, upload_url: str) -> ClipRecord:
        return self._transition(
            clip_id,
            "create_upload",
            detail=upload_url,
            upload_url=upload_url,
            reason=None,
            retry_at=None,
        )

    def forget_upload(self, clip_id: int, why: str) -> ClipRecord:
        """The server lost or expired the upload: the same ciphertext goes to a new one."""
        return self._transition(clip_id, "forget_upload", detail=why, upload_url=None)

    def mark_uploaded(self, clip_id: int) -> ClipRecord:
        return self._transition(clip_id, "uploaded", reason=None, retry_at=None)

    def mark_confirmed(self, clip_id: int, confirmation: dict[str, Any]) -> ClipRecord:
        # The key material is no longer needed once the server holds the verified ciphertext.
        return self._transition(
            clip_id,
            "confirm",
            detail=confirmation.get("policy"),
            confirmation=json.dumps(confirmation, sort_keys=True),
            sealed_secrets=None,
            confirmed_at=time.time(),
            reason=None,
            retry_at=None,
            attempts=0,
        )

    def mark_wiped(self, clip_id: int, *, detail: str | None = None) -> ClipRecord:
        return self._transition(
            clip_id,
            "wipe",
            detail=detail,
            wiped_at=time.time(),
            reason=None,
            retry_at=None,
        )

    def mark_failed(self, clip_id: int, reason: str, retry_at: float) -> ClipRecord:
        record = self.get(clip_id)
        return self._transition(
            clip_id,
            "fail",
            detail=reason,
            reason=reason,
            retry_at=retry_at,
            attempts=record.attempts + 1,
        )

    def quarantine(self, clip_id: int, reason: str) -> ClipRecord:
        return self._transition(
            clip_id,
            "quarantine",
            detail=reason,
            reason=reason,
            retry_at=None,
        )

    def supersede(self, clip_id: int, reason: str) -> ClipRecord:
        """The file at this clip's path was re-hashed and holds other bytes: quarantine the row
        and let it stop speaking for that file version (size, mtime and ctime may all be the
        same: a reformatted card, reused names, a FAT file system), so discovery records the new
        content as a clip of its own and offloads it."""
        return self._transition(
            clip_id,
            "quarantine",
            detail=reason,
            reason=reason,
            retry_at=None,
            superseded_at=time.time(),
        )

    def resume_failed(self, clip_id: int) -> ClipRecord:
        """A worker picks up a FAILED clip whose retry time has come."""
        record = self.get(clip_id)
        return self._transition(
            clip_id,
            "resume_failed",
            to=record.resume_state,
            detail="retrying",
            reason=None,
            retry_at=None,
        )

    def ask_again(self, states: Iterable[State]) -> int:
        """Clear the waiting time of clips in `states` (kept reasons stay until re-evaluated)."""
        marks = ",".join("?" * len(states := tuple(states)))
        with self._tx():
            cur = self._conn.execute(
                f"UPDATE clips SET retry_at = NULL WHERE state IN ({marks}) "  # noqa: S608
                "AND retry_at IS NOT NULL",
                tuple(s.value for s in states),
            )
        return cur.rowcount

    def note(self, clip_id: int, reason: str, retry_at: float | None = None) -> None:
        """Say why a clip is waiting without changing its state (e.g. 'server gave no receipt')."""
        with self._tx():
            self._conn.execute(
                "UPDATE clips SET reason = ?, retry_at = ?, updated_at = ? WHERE id = ?",
                (reason, retry_at, time.time(), clip_id),
            )
