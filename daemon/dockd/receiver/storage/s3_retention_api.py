"""The seam between the S3 store and the retention model (issue 15, part 2).

The store calls an `ObjectRetention` at three points; the retention module
(`dockd.receiver.retention`) implements it with tags, a lifecycle rule and legal holds.
`NoRetention`, the default, only makes sure the evidence bucket exists with Object Lock (and so
versioning) enabled: Object Lock can only be switched on when a bucket is created.

Every method blocks (boto3 on the store's worker threads) and raises the store's errors
(`s3_errors.s3_call` translates S3's).
"""

from __future__ import annotations

from typing import Any, Protocol

from dockd.receiver.storage.s3_errors import s3_call, s3_required


class ObjectRetention(Protocol):
    def prepare_bucket(self, client: Any, bucket: str) -> None:
        """At start (`recover`): make sure the evidence bucket exists and is set up."""
        ...

    def abort_unfinished_after(self) -> float | None:
        """Seconds after its creation at which the bucket's lifecycle rule aborts a multipart
        upload still unfinished (AbortIncompleteMultipartUpload), or None if no rule does."""
        ...

    def creation_args(self, metadata: dict[str, str | None]) -> dict[str, Any]:
        """Extra keyword arguments for CreateMultipartUpload and the sidecar's PutObject
        (e.g. Tagging, ObjectLockLegalHoldStatus) for an upload with this metadata."""
        ...

    def after_complete(
        self,
        client: Any,
        bucket: str,
        key: str,
        version_id: str | None,
        metadata: dict[str, str | None],
    ) -> None:
        """After the clip (and again after its sidecar) is stored: tags and legal hold on that
        version. Idempotent: recovery may call it again for the same version."""
        ...


def ensure_locked_bucket(client: Any, bucket: str) -> None:
    """Create `bucket` with Object Lock enabled unless it exists (then leave it as it is)."""
    if s3_call(client.head_bucket, Bucket=bucket, missing_ok=True) is not None:
        return
    try:
        s3_required(client.create_bucket, Bucket=bucket, ObjectLockEnabledForBucket=True)
    except Exception as exc:  # a concurrent creator won the race: fine if it is ours now
        if s3_call(client.head_bucket, Bucket=bucket, missing_ok=True) is None:
            raise
        del exc


class NoRetention:
    """Object Lock bucket, no tags, no holds: every object stays until someone deletes it."""

    def prepare_bucket(self, client: Any, bucket: str) -> None:
        ensure_locked_bucket(client, bucket)

    def abort_unfinished_after(self) -> float | None:
        return None

    def creation_args(self, metadata: dict[str, str | None]) -> dict[str, Any]:
        return {}

    def after_complete(
        self,
        client: Any,
        bucket: str,
        key: str,
        version_id: str | None,
        metadata: dict[str, str | None],
    ) -> None:
        return None
