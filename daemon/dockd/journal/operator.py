"""What an operator may do to a clip through the control socket; every act is audited."""

from __future__ import annotations

import time

from dockd.journal import chain
from dockd.journal.core import JournalCore
from dockd.journal.records import ClipRecord, JournalError, State


class OperatorActions(JournalCore):
    def hold(
        self,
        clip_id: int,
        *,
        actor: str,
        reason: str = "held by operator",
        force: bool = False,
    ) -> ClipRecord:
        """Keep a clip on the camera. An evidence-flagged clip only with `force`: holding it
        stops its offload, so it must be a deliberate act, never a slip of the clip id."""
        record = self.get(clip_id)
        if record.evidence and not force:
            raise JournalError(
                f"clip {clip_id} is flagged as evidence: holding it keeps it on the camera and "
                "stops its offload; repeat with --force if that is intended"
            )
        return self._transition(
            clip_id,
            "hold",
            actor=actor,
            detail=f"forced: {reason}" if force and record.evidence else reason,
            held_from=record.state.value,
            reason=reason,
            retry_at=None,
        )

    def release(self, clip_id: int, *, actor: str) -> ClipRecord:
        """Put a HELD or QUARANTINED clip back to work, where its recorded facts say it stands."""
        record = self.get(clip_id)
        return self._transition(
            clip_id,
            "release",
            to=record.resume_state,
            actor=actor,
            detail="released",
            held_from=None,
            reason=None,
            retry_at=None,
            attempts=0,
        )

    def retry_now(self, clip_id: int, *, actor: str) -> ClipRecord:
        """Try a FAILED clip now, or ask the server again at once for an UPLOADED clip's
        confirmation (e.g. after the receipt key or the confirm policy was corrected)."""
        record = self.get(clip_id)
        to = State.UPLOADED if record.state is State.UPLOADED else record.resume_state
        return self._transition(
            clip_id,
            "retry",
            to=to,
            actor=actor,
            detail="retry requested",
            reason=None,
            retry_at=None,
        )

    def dismiss(self, clip_id: int, *, actor: str, reason: str) -> ClipRecord:
        """Close a QUARANTINED row for good (terminal DISMISSED), e.g. its file version is gone
        from the camera. Whether the version is still on the camera only the caller can see:
        the control API refuses while it is (or may be) before calling this."""
        if not reason.strip():
            raise JournalError(f"clip {clip_id}: dismissing needs a reason")
        return self._transition(
            clip_id,
            "dismiss",
            actor=actor,
            detail=reason,
            reason=reason,
            retry_at=None,
        )

    def flag(self, clip_id: int, *, actor: str) -> ClipRecord:
        """Mark a clip as evidence (it also goes first). Only before its upload exists: the flag
        travels in the tus creation metadata, which cannot change afterwards."""
        with self._tx():
            row = self._conn.execute(
                "SELECT state, camera, upload_url, confirmation FROM clips WHERE id = ?", (clip_id,)
            ).fetchone()
            if row is None:
                raise JournalError(f"no clip {clip_id}")
            state, camera, url, confirmation = row
            if url is not None or confirmation is not None or state == State.WIPED.value:
                chain.append(
                    self._conn,
                    component="operator",
                    event="operator.flag",
                    subject=f"clip {clip_id}",
                    outcome="refused",
                    actor=actor,
                    detail={"camera": camera, "state": state, "why": "upload already created"},
                )
                refused = True
            else:
                self._conn.execute(
                    "UPDATE clips SET evidence = 1, updated_at = ? WHERE id = ?",
                    (time.time(), clip_id),
                )
                chain.append(
                    self._conn,
                    component="operator",
                    event="operator.flag",
                    subject=f"clip {clip_id}",
                    actor=actor,
                    detail={"camera": camera, "state": state},
                )
                refused = False
        self._anchor()
        if refused:
            raise JournalError(
                f"clip {clip_id} ({state}): its upload already exists, so the server was told "
                "evidence=false at creation; a clip can be flagged only before it starts uploading"
            )
        return self.get(clip_id)
