"""Retention and evidence on the real RGW 16.2 (issue 15): Object Lock refusal, legal holds set
at upload and by `dockd store flag`, released only by `unflag --admin`, routine footage really
expiring under the lifecycle rule, and each decision once in the server's audit log.

The store's side is played by `store_upload`, which makes the calls the S3 store makes
(CreateMultipartUpload with `creation_args`, CompleteMultipartUpload, the sidecar PutObject,
`after_complete` for each), so these tests need only the retention code and RGW.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from dockd.cli import main
from dockd.receiver.audit import (
    EVIDENCE_AT_UPLOAD,
    EXPIRED,
    FLAG,
    UNFLAG,
    FileServerAudit,
)
from dockd.receiver.retention.lock import ObjectLockRetention
from dockd.receiver.retention.policy import RetentionPolicy
from dockd.receiver.storage.api import StoreError, new_upload_id
from dockd.receiver.storage.s3_config import S3Settings, make_client
from support.ceph import S3Endpoint

pytestmark = pytest.mark.ceph

LC_DAY = 10  # `rgw lc debug interval` of the test Ceph (tests/support/ceph.py)


@pytest.fixture
def bucket() -> str:
    return f"ev-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(endpoint: S3Endpoint, bucket: str) -> S3Settings:
    return S3Settings(
        endpoint_url=endpoint.url,
        bucket=bucket,
        work_bucket=f"{bucket}-work",
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key,
        region=endpoint.region,
        max_attempts=1,
    )


@pytest.fixture
def client(settings: S3Settings) -> Iterator[Any]:
    s3 = make_client(settings)
    yield s3
    s3.close()


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


def store_cli(
    settings: S3Settings, endpoint: S3Endpoint, audit_dir: Path, *args: str, days: int = 31
) -> list[str]:
    """The `dockd store` argv for this bucket (credentials come from the environment)."""
    command, *rest = args
    return [
        "store",
        command,
        "--store",
        f"s3:{settings.endpoint_url}/{settings.bucket}",
        "--audit-dir",
        str(audit_dir),
        "--retention-days",
        str(days),
        "--lifecycle-day-seconds",
        str(LC_DAY if days < 31 else 86400),
        *rest,
    ]


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch, endpoint: S3Endpoint) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", endpoint.secret_key)


def prepare(client: Any, retention: ObjectLockRetention, bucket: str) -> None:
    """What the S3 store's `recover` does at start: the retention hook, then the work bucket."""
    retention.prepare_bucket(client, bucket)
    client.create_bucket(Bucket=f"{bucket}-work")


def store_upload(
    client: Any,
    retention: Any,
    bucket: str,
    upload: str,
    evidence: bool,
    *,
    again: bool = False,
) -> tuple[str, str]:
    """What the S3 store does for one completed upload; returns (clip, sidecar) version ids.
    `again`: the store's recovery after a crash in after_complete (the object is there)."""
    metadata: dict[str, str | None] = {"evidence": "true" if evidence else "false"}
    key = f"clips/{upload}"
    extra = retention.creation_args(metadata)
    if again:
        listing = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
        clip = next(v["VersionId"] for v in listing if v["Key"] == key)
        retention.after_complete(client, bucket, key, clip, metadata)
        sidecar = client.put_object(Bucket=bucket, Key=f"{key}.json", Body=b"{}", **extra)
        retention.after_complete(client, bucket, f"{key}.json", sidecar["VersionId"], metadata)
        return clip, sidecar["VersionId"]
    created = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
    part = client.upload_part(
        Bucket=bucket,
        Key=key,
        UploadId=created["UploadId"],
        PartNumber=1,
        Body=b"clip " + upload.encode(),
    )
    done = client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=created["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    retention.after_complete(client, bucket, key, done["VersionId"], metadata)
    sidecar = client.put_object(Bucket=bucket, Key=f"{key}.json", Body=b"{}", **extra)
    retention.after_complete(client, bucket, f"{key}.json", sidecar["VersionId"], metadata)
    return done["VersionId"], sidecar["VersionId"]


class AuditDown:
    """A ServerAudit whose disk fails: the upload's hold is set, its audit record is not."""

    def append(self, event: object) -> int:
        raise OSError(28, "No space left on device")

    append_once = append


def refusal(exc_info: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = exc_info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def events(audit_dir: Path, event: str, upload: str) -> list[dict[str, Any]]:
    return [
        r
        for r in FileServerAudit(audit_dir).records()
        if r["event"] == event and r["subject"] == f"upload {upload}"
    ]


def hold(client: Any, bucket: str, key: str, version: str) -> str:
    try:
        answer = client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=version)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ObjectLockConfigurationNotFoundError":
            return "OFF"
        raise
    return str(answer["LegalHold"]["Status"])


def tag(client: Any, bucket: str, key: str, version: str) -> str | None:
    tags = client.get_object_tagging(Bucket=bucket, Key=key, VersionId=version).get("TagSet", [])
    return next((t["Value"] for t in tags if t["Key"] == "retention"), None)


def test_an_existing_bucket_without_object_lock_is_refused(
    client: Any, bucket: str, audit_dir: Path
) -> None:
    client.create_bucket(Bucket=bucket)
    retention = ObjectLockRetention(RetentionPolicy(), FileServerAudit(audit_dir))
    with pytest.raises(StoreError, match=f"bucket '{bucket}' exists without Object Lock"):
        prepare(client, retention, bucket)


def test_prepare_creates_a_locked_bucket_with_the_rules_and_leaves_them_alone_after(
    client: Any, bucket: str, audit_dir: Path
) -> None:
    policy = RetentionPolicy(retention_days=31)
    retention = ObjectLockRetention(policy, FileServerAudit(audit_dir))
    retention.prepare_bucket(client, bucket)
    lock = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert sorted(r["ID"] for r in rules) == sorted(r["ID"] for r in policy.lifecycle_rules())

    # Idempotent: a restart with the same policy does not rewrite; a new policy does.
    calls: list[str] = []
    client.meta.events.register(
        "before-call.s3.PutBucketLifecycleConfiguration", lambda **_: calls.append("put")
    )
    retention.prepare_bucket(client, bucket)
    assert calls == []
    ObjectLockRetention(
        RetentionPolicy(retention_days=7), FileServerAudit(audit_dir)
    ).prepare_bucket(client, bucket)
    assert calls == ["put"]
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert any(r.get("Expiration") == {"Days": 7} for r in rules)


def test_evidence_at_upload_cannot_be_deleted_until_an_admin_unflags_it(
    client: Any,
    bucket: str,
    settings: S3Settings,
    endpoint: S3Endpoint,
    audit_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    retention = ObjectLockRetention(RetentionPolicy(), FileServerAudit(audit_dir))
    prepare(client, retention, bucket)
    upload = new_upload_id()
    # The first attempt dies after the hold, before its audit record (the store's recovery runs
    # after_complete again); a second retry must not record it twice.
    crashing = ObjectLockRetention(RetentionPolicy(), AuditDown())
    with pytest.raises(StoreError, match="cannot record the evidence hold"):
        store_upload(client, crashing, bucket, upload, evidence=True)
    clip, sidecar = store_upload(client, retention, bucket, upload, evidence=True, again=True)
    retention.after_complete(client, bucket, f"clips/{upload}", clip, {"evidence": "true"})

    for key, version in ((f"clips/{upload}", clip), (f"clips/{upload}.json", sidecar)):
        assert hold(client, bucket, key, version) == "ON"
        assert tag(client, bucket, key, version) == "evidence"
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=f"clips/{upload}", VersionId=clip)
    assert refusal(refused) == (403, "AccessDenied")
    assert len(events(audit_dir, EVIDENCE_AT_UPLOAD, upload)) == 1

    cli = store_cli(settings, endpoint, audit_dir, "unflag", upload, "--reason", "case closed")
    assert main(cli) == 2  # without --admin: refused, nothing changed
    assert "needs --admin" in capsys.readouterr().err
    assert hold(client, bucket, f"clips/{upload}", clip) == "ON"

    assert main([*cli, "--admin"]) == 0
    assert tag(client, bucket, f"clips/{upload}", clip) == "routine"
    client.delete_object(Bucket=bucket, Key=f"clips/{upload}", VersionId=clip)
    [record] = events(audit_dir, UNFLAG, upload)
    assert record["detail"]["reason"] == "case closed"


def test_flag_later_holds_and_retags_and_refuses_what_it_cannot_flag(
    client: Any,
    bucket: str,
    settings: S3Settings,
    endpoint: S3Endpoint,
    audit_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    retention = ObjectLockRetention(RetentionPolicy(), FileServerAudit(audit_dir))
    prepare(client, retention, bucket)
    upload = new_upload_id()
    clip, sidecar = store_upload(client, retention, bucket, upload, evidence=False)
    assert tag(client, bucket, f"clips/{upload}", clip) == "routine"
    assert hold(client, bucket, f"clips/{upload}", clip) == "OFF"
    assert events(audit_dir, EVIDENCE_AT_UPLOAD, upload) == []

    assert main(store_cli(settings, endpoint, audit_dir, "flag", upload, "--reason", " ")) == 2
    with pytest.raises(SystemExit) as usage:  # argparse: not the shape of an upload id
        main(store_cli(settings, endpoint, audit_dir, "flag", "../x", "--reason", "x"))
    assert usage.value.code == 2
    unknown = new_upload_id()
    capsys.readouterr()
    assert main(store_cli(settings, endpoint, audit_dir, "flag", unknown, "--reason", "x")) == 1
    assert f"no upload {unknown}" in capsys.readouterr().err

    reason = "assault at the station, case 2026/123"
    assert main(store_cli(settings, endpoint, audit_dir, "flag", upload, "--reason", reason)) == 0
    for key, version in ((f"clips/{upload}", clip), (f"clips/{upload}.json", sidecar)):
        assert hold(client, bucket, key, version) == "ON"
        assert tag(client, bucket, key, version) == "evidence"
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=f"clips/{upload}", VersionId=clip)
    assert refusal(refused) == (403, "AccessDenied")

    [record] = events(audit_dir, FLAG, upload)
    assert record["detail"]["reason"] == reason
    assert "(uid " in record["actor"]  # the kernel's uid, as dockctl hold records it
    assert main(store_cli(settings, endpoint, audit_dir, "status", upload)) == 0
    shown = capsys.readouterr().out
    assert f"upload {upload}: evidence" in shown and "legal hold ON" in shown


def test_routine_footage_expires_evidence_stays_and_each_expiry_is_audited_once(
    client: Any,
    bucket: str,
    settings: S3Settings,
    endpoint: S3Endpoint,
    audit_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One lifecycle day is LC_DAY seconds: routine footage is hidden after ~1-2 days and its
    # data gone one day later (RGW 16.2 measured ~30 s).
    policy = RetentionPolicy(
        retention_days=1, abandoned_upload_days=1, day=dt.timedelta(seconds=LC_DAY)
    )
    retention = ObjectLockRetention(policy, FileServerAudit(audit_dir))
    prepare(client, retention, bucket)
    routine_id, evidence_id, flagged_id = new_upload_id(), new_upload_id(), new_upload_id()
    store_upload(client, retention, bucket, routine_id, evidence=False)
    store_upload(client, retention, bucket, evidence_id, evidence=True)
    store_upload(client, retention, bucket, flagged_id, evidence=False)
    cli = lambda *a: store_cli(settings, endpoint, audit_dir, *a, days=1)  # noqa: E731
    assert main(cli("flag", flagged_id, "--reason", "flagged after upload")) == 0
    abandoned = client.create_multipart_upload(Bucket=bucket, Key="clips/abandoned")

    def versions(upload: str) -> list[str]:
        listing = client.list_object_versions(Bucket=bucket, Prefix=f"clips/{upload}")
        return [v["VersionId"] for v in listing.get("Versions", [])]

    began = time.monotonic()
    while versions(routine_id):  # clip and sidecar: the data, not only the current version
        assert time.monotonic() - began < 120, "the lifecycle rule did not expire in 2 min"
        time.sleep(2)
    expired_after = time.monotonic() - began
    with capsys.disabled():
        print(f"\nlifecycle: routine upload's versions gone after {expired_after:.0f} s")

    for upload in (evidence_id, flagged_id):
        body = client.get_object(Bucket=bucket, Key=f"clips/{upload}")["Body"].read()
        assert body == b"clip " + upload.encode()
    pending = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert abandoned["UploadId"] not in [u["UploadId"] for u in pending]

    capsys.readouterr()
    assert main(cli("reconcile")) == 0
    assert f"expired {routine_id}" in capsys.readouterr().out
    assert main(cli("reconcile")) == 0  # a second pass records nothing new
    assert len(events(audit_dir, EXPIRED, routine_id)) == 1
    assert events(audit_dir, EXPIRED, evidence_id) == events(audit_dir, EXPIRED, flagged_id) == []
    assert len(events(audit_dir, FLAG, flagged_id)) == 1
    assert len(events(audit_dir, EVIDENCE_AT_UPLOAD, evidence_id)) == 1

    assert main(cli("flag", routine_id, "--reason", "too late")) == 1
    assert "expired on" in capsys.readouterr().err

    audit = ["store", "audit", "--audit-dir", str(audit_dir), "--verify"]
    assert main(audit) == 0
    with sqlite3.connect(audit_dir / "server-audit.db") as conn:
        seq, text = conn.execute(
            "SELECT seq, record FROM audit WHERE record LIKE '%store.expired%'"
        ).fetchone()
        record = json.loads(text)
        record["subject"] = f"upload {evidence_id}"  # as if the evidence clip had expired
        conn.execute(
            "UPDATE audit SET record = ? WHERE seq = ?",
            (json.dumps(record, sort_keys=True, separators=(",", ":")), seq),
        )
    assert main(audit) == 1


def test_flag_in_the_grace_day_brings_a_hidden_clip_back(
    client: Any,
    bucket: str,
    settings: S3Settings,
    endpoint: S3Endpoint,
    audit_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What the rule's Expiration does on day N: a delete marker on top, the data kept one more
    # day. (Put here by hand, so the test need not wait for the lifecycle worker.)
    retention = ObjectLockRetention(RetentionPolicy(), FileServerAudit(audit_dir))
    prepare(client, retention, bucket)
    upload = new_upload_id()
    store_upload(client, retention, bucket, upload, evidence=False)
    client.delete_object(Bucket=bucket, Key=f"clips/{upload}")
    with pytest.raises(ClientError):
        client.head_object(Bucket=bucket, Key=f"clips/{upload}")
    assert main(store_cli(settings, endpoint, audit_dir, "status", upload)) == 0
    assert "HIDDEN" in capsys.readouterr().out

    assert main(store_cli(settings, endpoint, audit_dir, "flag", upload, "--reason", "late")) == 0
    body = client.get_object(Bucket=bucket, Key=f"clips/{upload}")["Body"].read()
    assert body == b"clip " + upload.encode()
    [record] = events(audit_dir, FLAG, upload)
    assert record["detail"]["unhidden"] == [f"clips/{upload}"]
