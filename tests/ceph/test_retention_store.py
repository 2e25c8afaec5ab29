"""The retention hooks inside the real S3 store (issue 15): an upload completed through
`S3Store` with `ObjectLockRetention` comes out tagged, evidence under a legal hold that RGW
enforces, and recorded once in the server's audit log; a completion whose audit record cannot
be written is not acknowledged, and the store's recovery finishes it. Then the same through
`dockd serve --store s3:` and a tus client, and its refusal (exit 78) of a bucket without
Object Lock."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
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
from support.receiver import ReceiverProcess, Tus, upload_id_of
from support.stores import rgw_settings

pytestmark = pytest.mark.ceph

LC_DAY = 10  # `rgw lc debug interval` of the test Ceph (tests/support/ceph.py)


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


def write_credentials(path: Path, access_key: str, secret_key: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"aws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n")
    return path


async def test_dockd_serve_on_s3_holds_evidence_and_refuses_a_bucket_without_object_lock(
    ceph: CephCluster, tmp_path: Path
) -> None:
    ceph.ensure_rgw()
    settings = rgw_settings(ceph.endpoint)
    client = make_client(settings)
    audit_dir = tmp_path / "audit"
    credentials = write_credentials(
        tmp_path / "s3.credentials", settings.access_key, settings.secret_key
    )
    serve_args = [
        "--store",
        f"s3:{settings.endpoint_url}/{settings.bucket}",
        "--s3-credentials",
        str(credentials),
        "--s3-region",
        settings.region,
        "--audit-dir",
        str(audit_dir),
    ]
    data = b"evidence through dockd serve"
    with ReceiverProcess(tmp_path / "rx", extra_args=serve_args) as server:
        async with aiohttp.ClientSession() as session:
            tus = Tus(session, server.url)
            evidence = {"Upload-Metadata": f"evidence {base64.b64encode(b'true').decode()}"}
            location = (await tus.create(len(data), headers=evidence)).headers["Location"]
            assert (await tus.patch(location, 0, data)).status == 204
    upload = upload_id_of(location)
    for key in (f"clips/{upload}", f"clips/{upload}.json"):
        assert tag_and_hold(client, settings.bucket, key) == ("evidence", "ON")
    records = FileServerAudit(audit_dir).records()
    assert [(r["event"], r["subject"]) for r in records] == [
        (EVIDENCE_AT_UPLOAD, f"upload {upload}")
    ]

    plain = rgw_settings(ceph.endpoint)
    client.create_bucket(Bucket=plain.bucket)
    refused = ReceiverProcess(
        tmp_path / "rx-plain",
        extra_args=[*serve_args[:1], f"s3:{plain.endpoint_url}/{plain.bucket}", *serve_args[2:]],
    )
    result = subprocess.run(
        refused.argv(0), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 78, result.stderr
    assert f"bucket '{plain.bucket}' exists without Object Lock" in result.stderr
    client.close()


async def test_an_unfinished_upload_expires_before_the_lifecycle_rule_can_abort_its_parts(
    ceph: CephCluster, tmp_path: Path
) -> None:
    """RGW's AbortIncompleteMultipartUpload counts days from the upload's creation, while
    `--expire-after` counts from its last write: an upload still being resumed when the rule
    fires would lose its acknowledged parts under an offset the server still answers with. The
    server must expire it first (410: the dock sends the clip again), however active it is.
    Here a lifecycle day is the test cluster's 10 s and the rule aborts after 1 day."""
    ceph.ensure_rgw()
    settings = rgw_settings(ceph.endpoint)
    client = make_client(settings)
    credentials = write_credentials(
        tmp_path / "s3.credentials", settings.access_key, settings.secret_key
    )
    serve_args = [
        "--store",
        f"s3:{settings.endpoint_url}/{settings.bucket}",
        "--s3-credentials",
        str(credentials),
        "--s3-region",
        settings.region,
        "--audit-dir",
        str(tmp_path / "audit"),
        "--abandoned-upload-days",
        "1",
        "--lifecycle-day-seconds",
        str(LC_DAY),
    ]
    half = os.urandom(1 << 20)
    with ReceiverProcess(tmp_path / "rx", extra_args=serve_args) as server:
        async with aiohttp.ClientSession() as session:
            tus = Tus(session, server.url)
            created = time.time()
            location = (await tus.create(2 * len(half))).headers["Location"]
            patched = await tus.patch(location, 0, half)
            assert patched.status == 204
            expires = dt.datetime.strptime(
                patched.headers["Upload-Expires"], "%a, %d %b %Y %H:%M:%S GMT"
            ).replace(tzinfo=dt.UTC)
            assert expires.timestamp() <= created + LC_DAY + 1  # said honestly, too
            upload = upload_id_of(location)
            began = time.monotonic()
            while True:
                head = await tus.head(location)
                if head.status == 410:
                    break
                assert head.status == 200 and head.offset == len(half), head
                open_uploads = client.list_multipart_uploads(
                    Bucket=settings.bucket, Prefix=f"clips/{upload}"
                ).get("Uploads", [])
                assert open_uploads, "RGW aborted the parts of an upload the server still offers"
                assert time.monotonic() - began < 120, "neither expired nor aborted in 2 min"
                await asyncio.sleep(1)
            assert (await tus.patch(location, len(half), half)).status == 410
    client.close()
