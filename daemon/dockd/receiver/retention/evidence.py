"""Flagging an upload as evidence after the fact, releasing it, and showing where it stands.

Flag = legal hold ON for every version of the clip and its sidecar, THEN the tag
`retention=evidence`. The order matters: the hold is what stops a delete, the tag is what takes
the object out of the expiry rule's scope. A crash between the two leaves a held object still
tagged routine (kept, though hidden behind a delete marker once its day comes, and flag run again
finishes it), never an object that looks flagged but can be deleted. If the lifecycle rule has
already hidden the clip (its grace day, see policy.py), flag removes the delete marker so the
held version is current again. Unflag reverses both (tag first, then the hold) and is an
explicit administrator action. Every change is read back, then audited with who and why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from dockd import canonical
from dockd.receiver.audit import FLAG, UNFLAG, AuditEvent, ServerAudit, upload_subject
from dockd.receiver.retention import objects
from dockd.receiver.retention.index import (
    IndexEntry,
    RetentionIndex,
    clip_key,
    sidecar_key,
)
from dockd.receiver.retention.policy import EVIDENCE, ROUTINE, RetentionPolicy, retention_tag


class UnknownUpload(objects.RetentionError):
    """No such upload in the store, or its footage has expired: nothing to flag."""


@dataclass(frozen=True)
class VersionState:
    key: str
    version_id: str
    size: int
    last_modified: dt.datetime
    current: bool
    hold: bool
    retention: str | None
    hidden_at: dt.datetime | None  # for routine versions: when the rule hides it
    deleted_at: dt.datetime | None


@dataclass(frozen=True)
class UploadStatus:
    upload: str
    versions: list[VersionState]
    hidden: bool  # a delete marker is on top of the clip
    index: IndexEntry | None

    @property
    def retention(self) -> str:
        clips = [v for v in self.versions if v.key == clip_key(self.upload)]
        if clips and all(v.hold and v.retention == EVIDENCE for v in clips):
            return EVIDENCE
        if any(v.hold or v.retention == EVIDENCE for v in clips):
            return "partly flagged (run flag again)"
        return ROUTINE


class Evidence:
    """The `dockd store flag/unflag/status` operations on one evidence bucket."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        policy: RetentionPolicy,
        audit: ServerAudit,
        work_bucket: str | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.policy = policy
        self.audit = audit
        self.index = RetentionIndex(client, bucket, work_bucket)

    def _histories(self, upload: str) -> list[objects.KeyHistory]:
        found = [
            objects.history(self.client, self.bucket, key)
            for key in (clip_key(upload), sidecar_key(upload))
        ]
        if not found[0].versions:
            entry = self.index.get(upload)
            if entry is not None and entry.expired is not None:
                raise UnknownUpload(
                    f"upload {upload} expired on {entry.expired} under the retention rule "
                    "(routine footage, not flagged in time): its clip is deleted"
                )
            if entry is not None:
                raise UnknownUpload(
                    f"upload {upload} is indexed but its clip is gone from {self.bucket} "
                    "(expired and not yet reconciled, or deleted outside dockd)"
                )
            raise UnknownUpload(f"no upload {upload} in {self.bucket}")
        return found

    def flag(self, upload: str, *, reason: str, actor: str) -> list[str]:
        """Hold and re-tag every version of the clip and sidecar; returns the version ids."""
        reason = _required(reason)
        done: list[str] = []
        unhidden: list[str] = []
        for history in self._histories(upload):
            for version in history.versions:
                objects.set_hold(self.client, self.bucket, history.key, version.version_id, True)
                objects.set_retention_tag(
                    self.client, self.bucket, history.key, version.version_id, EVIDENCE
                )
                done.append(f"{history.key}@{version.version_id}")
            if history.marker_on_top is not None and history.versions:
                objects.remove_delete_marker(
                    self.client, self.bucket, history.key, history.marker_on_top
                )
                unhidden.append(history.key)
        self._reindex(upload, EVIDENCE)
        self.audit.append(
            AuditEvent(
                event=FLAG,
                subject=upload_subject(upload),
                actor=actor,
                detail={"reason": reason, "versions": done, "unhidden": unhidden},
            )
        )
        return done

    def unflag(self, upload: str, *, reason: str, actor: str) -> list[str]:
        """Back to routine: tag first (so a crash leaves it held), then release the hold."""
        reason = _required(reason)
        done: list[str] = []
        for history in self._histories(upload):
            for version in history.versions:
                objects.set_retention_tag(
                    self.client, self.bucket, history.key, version.version_id, ROUTINE
                )
                objects.set_hold(self.client, self.bucket, history.key, version.version_id, False)
                done.append(f"{history.key}@{version.version_id}")
        self._reindex(upload, ROUTINE)
        self.audit.append(
            AuditEvent(
                event=UNFLAG,
                subject=upload_subject(upload),
                actor=actor,
                detail={"reason": reason, "versions": done},
            )
        )
        return done

    def status(self, upload: str) -> UploadStatus:
        histories = self._histories(upload)
        states: list[VersionState] = []
        for history in histories:
            for version in history.versions:
                tags = objects.read_tags(self.client, self.bucket, history.key, version.version_id)
                hold = objects.read_hold(self.client, self.bucket, history.key, version.version_id)
                tag = retention_tag(tags)
                routine = tag == ROUTINE
                states.append(
                    VersionState(
                        key=history.key,
                        version_id=version.version_id,
                        size=version.size,
                        last_modified=version.last_modified,
                        current=version.is_latest,
                        hold=hold,
                        retention=tag,
                        hidden_at=self.policy.hidden_at(version.last_modified) if routine else None,
                        deleted_at=self.policy.deleted_at(version.last_modified)
                        if routine
                        else None,
                    )
                )
        return UploadStatus(
            upload=upload,
            versions=states,
            hidden=histories[0].marker_on_top is not None,
            index=self.index.get(upload),
        )

    def _reindex(self, upload: str, retention: str) -> None:
        entry = self.index.get(upload)
        if entry is None:  # completed before retention was on, or its index write was lost
            clip = objects.history(self.client, self.bucket, clip_key(upload)).versions
            latest = next((v for v in clip if v.is_latest), clip[0] if clip else None)
            entry = IndexEntry(
                upload=upload,
                version_id=latest.version_id if latest else None,
                retention=retention,
                completed=canonical.rfc3339(latest.last_modified.timestamp()) if latest else "",
            )
        self.index.put(entry.with_changes(retention=retention))


def _required(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise ValueError("a reason is required (what the footage is evidence of, or why not)")
    return reason
