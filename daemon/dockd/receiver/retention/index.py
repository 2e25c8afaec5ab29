"""The retention index: one small JSON object per completed upload, in the work bucket.

`retention/<upload>.json` in the work bucket (`<bucket>-work` by default) says which clip
version was confirmed, its class (routine or evidence) and, once the reconciler has seen the
lifecycle rule delete it, when it expired (then it lives at `retention-expired/<upload>.json`).
It is what the reconciler walks (listing the evidence bucket's versions would also list every
sidecar and every held version) and what lets `dockd store flag` tell "expired" from "never
heard of it". It is bookkeeping, not evidence: the truth about an object is its versions, tags
and holds in the evidence bucket, which every command reads back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from dockd.receiver.retention.objects import status_code

INDEX_PREFIX = "retention/"
EXPIRED_PREFIX = "retention-expired/"


def work_bucket(bucket: str) -> str:
    return f"{bucket}-work"


def clip_key(upload: str) -> str:
    return f"clips/{upload}"


def sidecar_key(upload: str) -> str:
    return f"clips/{upload}.json"


def upload_of(key: str) -> str | None:
    """The upload id of a clip key (`clips/<upload>`), None for a sidecar or anything else."""
    if not key.startswith("clips/") or key.endswith(".json"):
        return None
    return key.removeprefix("clips/") or None


@dataclass(frozen=True)
class IndexEntry:
    upload: str
    version_id: str | None
    retention: str  # routine | evidence
    completed: str  # RFC 3339, when after_complete first indexed it
    expired: str | None = None  # RFC 3339, when the reconciler recorded the expiry

    def with_changes(self, **changes: Any) -> IndexEntry:
        return replace(self, **changes)


class RetentionIndex:
    """Live entries under `retention/`, which the reconciler walks every pass; an expired one
    moves to `retention-expired/` (kept: it answers "expired on DATE"), so the walk covers
    only what can still expire or is held, not every upload ever made."""

    def __init__(self, client: Any, bucket: str, work: str | None = None) -> None:
        self.client = client
        self.bucket = work if work is not None else work_bucket(bucket)

    def get(self, upload: str) -> IndexEntry | None:
        for prefix in (INDEX_PREFIX, EXPIRED_PREFIX):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=f"{prefix}{upload}.json")
            except ClientError as exc:
                if status_code(exc) == 404:
                    continue
                raise
            return IndexEntry(**json.loads(answer["Body"].read()))
        return None

    def put(self, entry: IndexEntry) -> None:
        prefix = EXPIRED_PREFIX if entry.expired is not None else INDEX_PREFIX
        body = json.dumps(asdict(entry), sort_keys=True).encode("utf-8")
        self.client.put_object(
            Bucket=self.bucket,
            Key=f"{prefix}{entry.upload}.json",
            Body=body,
            ContentType="application/json",
        )
        if entry.expired is not None:
            # After the new copy: a crash in between leaves both, and the next pass repeats
            # the move (its audit append is once per upload).
            self.client.delete_object(Bucket=self.bucket, Key=f"{INDEX_PREFIX}{entry.upload}.json")

    def uploads(self) -> Iterator[str]:
        """The live entries (not yet expired)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=INDEX_PREFIX):
            for item in page.get("Contents", []):
                name = item["Key"].removeprefix(INDEX_PREFIX)
                if name.endswith(".json"):
                    yield name.removesuffix(".json")
