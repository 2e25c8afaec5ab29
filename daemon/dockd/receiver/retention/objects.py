"""The S3 calls retention makes on one key's versions: list, hold, tag, and read them back.

`client` is a botocore/boto3 S3 client (synchronous). Every call names a version id: a flag or a
hold applies to exactly the bytes that were confirmed, never to "whatever is current now".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from dockd.receiver.retention.policy import retention_tag, with_retention_tag
from dockd.receiver.storage.api import StoreError

# RGW 16.2 answers GetObjectLegalHold on a version that never had a hold with 404 and this code.
_NO_HOLD_CODES = frozenset(
    {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"}
)


class RetentionError(StoreError):
    """A retention step did not take effect (the message says which and on what)."""


@dataclass(frozen=True)
class Version:
    key: str
    version_id: str
    last_modified: dt.datetime
    size: int
    is_latest: bool


@dataclass(frozen=True)
class KeyHistory:
    """All versions of one key, and whether a delete marker is the current one (hidden)."""

    key: str
    versions: list[Version]
    marker_on_top: str | None  # version id of the current delete marker, if any


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def status_code(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def history(client: Any, bucket: str, key: str) -> KeyHistory:
    """Versions of exactly `key` (ListObjectVersions lists by prefix: `clips/u` also matches
    `clips/u.json`)."""
    versions: list[Version] = []
    marker_on_top: str | None = None
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Versions", []):
            if item["Key"] == key:
                versions.append(
                    Version(
                        key=key,
                        version_id=item["VersionId"],
                        last_modified=item["LastModified"],
                        size=int(item.get("Size", 0)),
                        is_latest=bool(item.get("IsLatest")),
                    )
                )
        for item in page.get("DeleteMarkers", []):
            if item["Key"] == key and item.get("IsLatest"):
                marker_on_top = item["VersionId"]
    return KeyHistory(key=key, versions=versions, marker_on_top=marker_on_top)


def read_hold(client: Any, bucket: str, key: str, version_id: str) -> bool:
    try:
        answer = client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=version_id)
    except ClientError as exc:
        if status_code(exc) == 404 and error_code(exc) in _NO_HOLD_CODES:
            return False
        raise
    return bool(answer.get("LegalHold", {}).get("Status") == "ON")


def set_hold(client: Any, bucket: str, key: str, version_id: str, on: bool) -> None:
    """Set the legal hold of that version, then read it back: a hold we did not see is not one."""
    client.put_object_legal_hold(
        Bucket=bucket,
        Key=key,
        VersionId=version_id,
        LegalHold={"Status": "ON" if on else "OFF"},
    )
    if read_hold(client, bucket, key, version_id) != on:
        state = "ON" if on else "OFF"
        raise RetentionError(f"legal hold {state} on {key} version {version_id} did not stick")


def read_tags(client: Any, bucket: str, key: str, version_id: str) -> list[dict[str, str]]:
    answer = client.get_object_tagging(Bucket=bucket, Key=key, VersionId=version_id)
    # RGW 16.2 leaves TagSet out of the answer when there is no tag at all.
    return list(answer.get("TagSet", []))


def set_retention_tag(
    client: Any,
    bucket: str,
    key: str,
    version_id: str,
    value: str,
    current: list[dict[str, str]] | None = None,
) -> None:
    """Put `retention=value` on that version (other tags kept), then read it back. `current`:
    the version's tags if the caller has just read them (saves a request)."""
    tags = read_tags(client, bucket, key, version_id) if current is None else current
    if retention_tag(tags) != value:
        client.put_object_tagging(
            Bucket=bucket,
            Key=key,
            VersionId=version_id,
            Tagging={"TagSet": with_retention_tag(tags, value)},
        )
    if retention_tag(read_tags(client, bucket, key, version_id)) != value:
        raise RetentionError(f"tag retention={value} on {key} version {version_id} did not stick")


def remove_delete_marker(client: Any, bucket: str, key: str, marker_id: str) -> None:
    """Delete the delete marker itself, so the version under it is current (readable) again."""
    client.delete_object(Bucket=bucket, Key=key, VersionId=marker_id)
