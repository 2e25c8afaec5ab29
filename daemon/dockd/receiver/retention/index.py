"""The retention index: one small JSON object per completed upload, in the work bucket.

`retention/<upload>.json` in `<bucket>-work` says which clip version was confirmed, its class
(routine or evidence) and, once the reconciler has seen the lifecycle rule delete it, when it
expired. It is what the reconciler walks (listing the evidence bucket's versions would also
list every sidecar and every held version) and what lets `dockd store flag` tell "expired" from
"never heard of it". It is bookkeeping, not evidence: the truth about an object is its versions,
tags and holds in the evidence bucket, which every command reads back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from dockd.receiver.retention.objects import status_code

INDEX_PREFIX = "retention/"


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
    def __init__(self, client: Any, bucket: str, work: str | None = None) -> None:
        self.client = client
        self.bucket = work if work is not None else work_bucket(bucket)

    def _key(self, upload: str) -> str:
        return f"{INDEX_PREFIX}{upload}.json"

    def get(self, upload: str) -> IndexEntry | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(upload))
        except ClientError as exc:
            if status_code(exc) == 404:
                return None
            raise
        return IndexEntry(**json.loads(answer["Body"].read()))

    def put(self, entry: IndexEntry) -> None:
        body = json.dumps(asdict(entry), sort_keys=True).encode("utf-8")
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(entry.upload),
            Body=body,
            ContentType="application/json",
        )

    def uploads(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=INDEX_PREFIX):
            for item in page.get("Contents", []):
                name = item["Key"].removeprefix(INDEX_PREFIX)
                if name.endswith(".json"):
                    yield name.removesuffix(".json")
