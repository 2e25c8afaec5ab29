"""`ObjectLockRetention`: the S3 store's retention hooks (storage/s3_retention_api.py).

At start, `prepare_bucket` makes sure the evidence bucket has Object Lock and dockd's lifecycle
rules. Each upload is created with `creation_args` (tag, and the legal hold for evidence), and
once complete, `after_complete` puts the tag and hold on THAT version and reads them back:
RGW 16.2 ignores both `Tagging` and `ObjectLockLegalHoldStatus` on CreateMultipartUpload
(measured: the completed object has neither), so `after_complete` is what carries the guarantee
for clips; the sidecar's PutObject honours them. Until `after_complete` has run the clip has no
tag, and an untagged object is outside the expiry rule: a crash in between keeps footage, it
never loses it.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import structlog
from botocore.exceptions import ClientError

from dockd import canonical
from dockd.receiver.audit import EVIDENCE_AT_UPLOAD, AuditEvent, ServerAudit, upload_subject
from dockd.receiver.retention import objects
from dockd.receiver.retention.index import IndexEntry, RetentionIndex, upload_of
from dockd.receiver.retention.policy import (
    EVIDENCE,
    TAG_KEY,
    RetentionPolicy,
    retention_tag,
    same_rules,
)
from dockd.receiver.storage.api import StoreError
from dockd.receiver.storage.s3_errors import s3_call
from dockd.receiver.storage.s3_retention_api import ensure_locked_bucket

log = structlog.get_logger("dockd.receiver.retention")

SERVER_ACTOR = "dockd serve"


class ObjectLockRetention:
    def __init__(
        self, policy: RetentionPolicy, audit: ServerAudit, work_bucket: str | None = None
    ) -> None:
        self.policy = policy
        self.audit = audit
        self.work_bucket = work_bucket  # None: `<bucket>-work`, the S3 store's default

    # ---- at start ------------------------------------------------------------------------------

    def prepare_bucket(self, client: Any, bucket: str) -> None:
        """Create the evidence bucket with Object Lock, or refuse one without it; then make its
        lifecycle rules dockd's (rewritten only when they differ)."""
        s3_call(self._prepare_bucket, client, bucket)

    def _prepare_bucket(self, client: Any, bucket: str) -> None:
        # The work bucket (where the retention index lives) is the store's to create.
        ensure_locked_bucket(client, bucket)  # the store's own: tolerates a racing creator
        require_object_lock(client, bucket)
        self._ensure_lifecycle(client, bucket)

    def _ensure_lifecycle(self, client: Any, bucket: str) -> None:
        wanted = self.policy.lifecycle_rules()
        try:
            current = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        except ClientError as exc:
            if objects.error_code(exc) != "NoSuchLifecycleConfiguration":
                raise
            current = []
        if same_rules(current, wanted):
            return
        client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": wanted}
        )
        # Setting the rules on a new bucket is routine; replacing other rules deserves a look
        # (two nodes with different --retention-days rewrite each other's).
        (log.warning if current else log.info)(
            "retention.lifecycle_rules_changed", bucket=bucket, before=current, after=wanted
        )

    # ---- per upload ----------------------------------------------------------------------------

    def abort_unfinished_after(self) -> float | None:
        return self.policy.abandoned_upload_days * self.policy.day.total_seconds()

    def creation_args(self, metadata: dict[str, str | None]) -> dict[str, Any]:
        retention = self.policy.classify(metadata)
        args: dict[str, Any] = {"Tagging": f"{TAG_KEY}={retention}"}
        if retention == EVIDENCE:
            args["ObjectLockLegalHoldStatus"] = "ON"
        return args

    def after_complete(
        self,
        client: Any,
        bucket: str,
        key: str,
        version_id: str | None,
        metadata: dict[str, str | None],
    ) -> None:
        """Tag (and for evidence hold) exactly `version_id`, verified by reading back; index the
        upload; audit an evidence hold once. Safe to run again after a crash at any step."""
        s3_call(self._after_complete, client, bucket, key, version_id, metadata)

    def _after_complete(
        self,
        client: Any,
        bucket: str,
        key: str,
        version_id: str | None,
        metadata: dict[str, str | None],
    ) -> None:
        if version_id is None:
            raise StoreError(f"{bucket} returned no version id for {key}: is it versioned?")
        declared = wanted = self.policy.classify(metadata)
        upload = upload_of(key)
        index = RetentionIndex(client, bucket, self.work_bucket)
        if upload is not None and index.get(upload) is None:
            # First, so that the reconciler and `dockd store` know the upload whatever happens
            # next; the entry's class is the metadata's until an operator changes it.
            now = canonical.rfc3339(time.time())
            index.put(
                IndexEntry(upload=upload, version_id=version_id, retention=wanted, completed=now)
            )
        held = objects.read_hold(client, bucket, key, version_id)
        tags = objects.read_tags(client, bucket, key, version_id)
        if held or retention_tag(tags) == EVIDENCE:
            # Flagged already (an operator was faster than this retry): never downgrade.
            wanted = EVIDENCE
        if wanted == EVIDENCE:
            objects.set_hold(client, bucket, key, version_id, on=True)  # hold before the tag
        objects.set_retention_tag(client, bucket, key, version_id, wanted, current=tags)
        if declared == EVIDENCE and upload is not None:
            # Once per upload, also when a crash after the hold makes this a retry.
            event = AuditEvent(
                event=EVIDENCE_AT_UPLOAD,
                subject=upload_subject(upload),
                actor=SERVER_ACTOR,
                detail={"bucket": bucket, "key": key, "version_id": version_id},
            )
            try:
                self.audit.append_once(event)
            except (OSError, sqlite3.Error) as exc:
                # Fail the completion (the dock retries) rather than hold evidence unrecorded.
                raise StoreError(f"audit log: cannot record the evidence hold: {exc}") from exc
        log.info("retention.applied", key=key, version_id=version_id, retention=wanted)


def require_object_lock(client: Any, bucket: str) -> None:
    """StoreError unless `bucket` has Object Lock enabled (S3 cannot add it to a bucket later,
    and without it neither a legal hold nor a retention date can be set)."""
    try:
        config = client.get_object_lock_configuration(Bucket=bucket)
        enabled = config["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
    except ClientError as exc:
        if objects.status_code(exc) != 404:
            raise
        enabled = False
    if not enabled:
        raise StoreError(
            f"bucket {bucket!r} exists without Object Lock, so evidence in it could be deleted "
            "and legal holds cannot be set; give dockd a new bucket name (it creates the bucket "
            "with Object Lock) or one created with ObjectLockEnabledForBucket"
        )
