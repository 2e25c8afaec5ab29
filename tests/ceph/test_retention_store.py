"""The retention hooks inside the real S3 store (issue 15): an upload completed through
`S3Store` with `ObjectLockRetention` comes out tagged, evidence under a legal hold that RGW
enforces, and recorded once in the server's audit log; a completion whose audit record cannot
be written is not acknowledged, and the store's recovery finishes it."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from dockd.receiver.audit import EVIDENCE_AT_UPLOAD, FileServerAudit
from dockd.receiver.retention.lock import ObjectLockRetention
from dockd.receiver.retention.policy import RetentionPolicy
from dockd.receiver.storage.api import (
    CompletedUpload,
    CreationInfo,
    StoreError,
    new_upload_id,
    rfc3339,
)
from dockd.receiver.storage.s3 import S3Store
from dockd.receiver.storage.s3_config import make_client
from support.ceph import CephCluster
from support.stores import rgw_settings

pytestmark = pytest.mark.ceph


def upload_through(store: S3Store, data: bytes, metadata: dict[str, str | None]) -> str:
    info = CreationInfo(
        upload=new_upload_id(),
        length=len(data),
        metadata_header="",
        metadata=metadata,
        created=rfc3339(dt.datetime.now(dt.UTC)),
        dock="dock-1",
    )
    store.create(info, time.time() + 60)
    running = store.running_hash(info.upload, 0)
    writer = store.open_writer(info.upload, 0)
    try:
        writer.write(data, 0)
        running.update(data)
        writer.commit(len(data), time.time() + 60, running)
    finally:
        writer.close()
    record = CompletedUpload(
        upload=info.upload,
        length=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        receipt="test-receipt",
        completed=rfc3339(dt.datetime.now(dt.UTC)),
        metadata=metadata,
    )
    store.complete(record)
    return info.upload


def current_version(client: Any, bucket: str, key: str) -> str:
    listing = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    return str(next(v["VersionId"] for v in listing if v["Key"] == key and v["IsLatest"]))


def tag_and_hold(client: Any, bucket: str, key: str) -> tuple[str | None, str]:
    version = current_version(client, bucket, key)
    tags = client.get_object_tagging(Bucket=bucket, Key=key, VersionId=version).get("TagSet", [])
    try:
        hold = client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=version)
        status = str(hold["LegalHold"]["Status"])
    except ClientError:
        status = "OFF"
    return next((t["Value"] for t in tags if t["Key"] == "retention"), None), status


class AuditDown:
    def append(self, event: object) -> int:
        raise OSError(28, "No space left on device")

    append_once = append


def test_uploads_through_the_s3_store_come_out_tagged_and_evidence_held(
    ceph: CephCluster, tmp_path: Path
) -> None:
    ceph.ensure_rgw()
    settings = rgw_settings(ceph.endpoint)
    client = make_client(settings)
    audit = FileServerAudit(tmp_path / "audit")
    retention = ObjectLockRetention(RetentionPolicy(), audit, work_bucket=settings.work_bucket)
    store = S3Store(settings, client=client, retention=retention)
    store.recover()
    bucket = settings.bucket

    routine = upload_through(store, b"routine footage", {"evidence": "false"})
    evidence = upload_through(store, b"evidence footage", {"evidence": "true"})
    for key in (f"clips/{routine}", f"clips/{routine}.json"):
        assert tag_and_hold(client, bucket, key) == ("routine", "OFF")
    for key in (f"clips/{evidence}", f"clips/{evidence}.json"):
        assert tag_and_hold(client, bucket, key) == ("evidence", "ON")
    version = current_version(client, bucket, f"clips/{evidence}")
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=f"clips/{evidence}", VersionId=version)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    held = [r for r in audit.records() if r["event"] == EVIDENCE_AT_UPLOAD]
    assert [r["subject"] for r in held] == [f"upload {evidence}"]

    # The audit disk fails during a completion: no acknowledgement; the bytes are kept and
    # held, and the restarted store's recovery finishes the job with its audit record.
    down = S3Store(
        settings,
        client=client,
        retention=ObjectLockRetention(RetentionPolicy(), AuditDown(), settings.work_bucket),
    )
    down.recover()
    with pytest.raises(StoreError, match="cannot record the evidence hold"):
        upload_through(down, b"evidence, audit down", {"evidence": "true"})
    restarted = S3Store(settings, client=client, retention=retention)
    restarted.recover()
    held = [r for r in audit.records() if r["event"] == EVIDENCE_AT_UPLOAD]
    assert len(held) == 2 and len({r["subject"] for r in held}) == 2
    assert audit.verify().ok
    client.close()
